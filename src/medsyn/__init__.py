"""medsyn: GAN-based synthetic augmentation of medical images."""
__version__ = "0.1.0"
