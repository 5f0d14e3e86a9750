"""The papers medsyn follows, credited once, as each paper's own text states title, authors and year.

Where the copy medsyn follows does not state the authors (the lung-CT and retina papers), the
credit gives what the paper does state instead of guessing names. Models, classifiers and
presets cite these strings, with the section or table they follow.
"""
from __future__ import annotations

UNET = "Generative Adversarial U-Net for Domain-free Medical Image Augmentation (2021)"
LUNG_CT = ("Capturing Variabilities from Computed Tomography Images with Generative Adversarial Networks "
           "(2018, arXiv:1805.11504)")
BRAIN_MRI = ("Han et al. 2019, Combining noise-to-image and image-to-image GANs: brain MR image augmentation "
             "for tumor detection")
LIVER_LESION = ("Frid-Adar et al. 2018, GAN-based synthetic medical image augmentation for increased CNN "
                "performance in liver lesion classification")
RETINA = ("the retina paper (classic then WGAN augmentation of 64x64 fundus images for ResNet/DenseNet; "
          "its text states no title or authors)")
