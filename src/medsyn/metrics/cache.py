"""Content-keyed cache of image features: the same pixels through the same extractor are computed once.

The key hashes the image bytes, their dtype and shape, and the extractor's ``key`` (network name,
weights digest, layer, resize mode, input size), so changing any of them misses the cache. Files
are written atomically; an unreadable or mismatched file is treated as absent and recomputed.
"""
from __future__ import annotations

import hashlib
import os
import warnings
from pathlib import Path

import numpy as np

from medsyn.atomic import write_with
from medsyn.errors import WriteError

CACHE_ENV = "MEDSYN_CACHE_DIR"
KEY_VERSION = b"medsyn-features/1"  # bump when the key's recipe or the stored layout changes


def default_cache_dir() -> Path:
    """$MEDSYN_CACHE_DIR, else ~/.cache/medsyn/features."""
    from_env = os.environ.get(CACHE_ENV)
    return Path(from_env).expanduser() if from_env else Path.home() / ".cache" / "medsyn" / "features"


def feature_key(images: np.ndarray, extractor_key: str) -> str:
    """sha256 hex over the image bytes, dtype, shape and the extractor's key."""
    arr = np.ascontiguousarray(images)
    digest = hashlib.sha256(KEY_VERSION)
    digest.update(f"|{arr.dtype.str}|{arr.shape}|{extractor_key}|".encode())
    digest.update(memoryview(arr).cast("B"))
    return digest.hexdigest()


class FeatureCache:
    """Features as ``<root>/<key[:2]>/<key>.npy``.

    Args:
        root: cache folder; None uses ``default_cache_dir()``.
    """

    def __init__(self, root: str | Path | None = None):
        self.root = Path(root).expanduser() if root is not None else default_cache_dir()

    def path(self, key: str) -> Path:
        return self.root / key[:2] / f"{key}.npy"

    def load(self, key: str, rows: int) -> np.ndarray | None:
        """The stored (rows, D) features, or None when absent, unreadable or of the wrong shape."""
        path = self.path(key)
        if not path.is_file():
            return None
        try:
            feats = np.load(path, allow_pickle=False)
        except (OSError, ValueError, EOFError):  # truncated or foreign file: recompute and overwrite
            return None
        if feats.ndim != 2 or len(feats) != rows or not np.isfinite(feats).all():
            return None
        return feats

    def save(self, key: str, features: np.ndarray) -> Path | None:
        """Write atomically; a failed write only warns (the result stands, it is just not cached)."""
        try:
            # suffix: np.save appends ".npy" to any other name, which would leave the rename nothing to move
            return write_with(self.path(key), lambda tmp: np.save(tmp, np.asarray(features), allow_pickle=False),
                              suffix=".npy")
        except WriteError as err:
            warnings.warn(f"feature cache: {err}; continuing without caching")
            return None
