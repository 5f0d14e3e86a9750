"""medsyn: GAN-based synthetic augmentation of medical images.

The Python API (``medsyn.train_generator``, ``load_run``, ``load_data``, ``fid``, ``classify``,
``run_study``)
lives in ``medsyn.api``; it is imported on first use, so ``import medsyn`` stays instant for the CLI.
"""
__version__ = "0.1.0"

_API = ("Run", "classify", "fid", "load_data", "load_run", "run_study", "train_generator")  # not train/study/sample: subpackages
__all__ = ["__version__", *_API]


def __getattr__(name: str):
    if name in _API:
        from medsyn import api

        return getattr(api, name)
    raise AttributeError(f"module 'medsyn' has no attribute {name!r}")
