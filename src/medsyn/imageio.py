"""Writing images: PNG (8- or 16-bit), grids, and labeled class-folder sets written atomically."""
from __future__ import annotations

import contextlib
import csv
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
from PIL import Image

from medsyn import atomic
from medsyn.errors import RunError

PNG_CHUNK = 64  # images per writer task: large enough to amortise the conversion call


def to_uint(image: np.ndarray, bit_depth: int) -> np.ndarray:
    """(C, H, W) float in [0, 1] -> (H, W) or (H, W, C) unsigned integers of the given depth;
    a batch (N, C, H, W) -> (N, H, W) or (N, H, W, C)."""
    peak = 65535 if bit_depth == 16 else 255
    arr = np.clip(np.rint(np.asarray(image, dtype=np.float64) * peak), 0, peak)
    arr = arr.astype(np.uint16 if bit_depth == 16 else np.uint8)
    channels = arr.ndim - 3
    return arr.squeeze(channels) if arr.shape[channels] == 1 else np.moveaxis(arr, channels, -1)


def png_depth(bit_depth: int, channels: int) -> int:
    """16-bit PNG for 16-bit grey sources; 8-bit otherwise (Pillow writes RGB at 8 bits only)."""
    return 16 if bit_depth == 16 and channels == 1 else 8


def write_png(path: str | Path, image: np.ndarray, bit_depth: int = 8) -> None:
    """Write one (C, H, W) float image in [0, 1]; grey stays grey, 16-bit stays 16-bit (grey only)."""
    Image.fromarray(to_uint(image, png_depth(bit_depth, image.shape[0]))).save(path, format="PNG")


def write_pngs(paths: Sequence[Path], images: np.ndarray, bit_depth: int = 8, workers: int | None = None) -> None:
    """Write (N, C, H, W) float images in [0, 1] to ``paths``, with ``workers`` threads (default: one per core).

    Creating and writing small files costs more than encoding them (about 1 ms against 0.3 ms for a
    64x64 grey PNG here), and both release the GIL, so threads scale where the Python per image
    does not dominate: each thread converts its own chunk in one numpy call, then saves it.
    """
    if len(paths) != len(images):
        raise ValueError(f"{len(paths)} paths for {len(images)} images")
    workers = workers or len(os.sched_getaffinity(0))
    depth = png_depth(bit_depth, images.shape[1]) if len(images) else 8
    chunks = np.array_split(np.arange(len(images)), max(1, min(len(images) // PNG_CHUNK, workers * 4)))

    def write_chunk(indices: np.ndarray) -> None:
        if len(indices):
            for index, pixels in zip(indices, to_uint(images[indices[0]:indices[-1] + 1], depth)):
                Image.fromarray(pixels).save(paths[index], format="PNG")

    if workers == 1 or len(chunks) == 1:
        for chunk in chunks:
            write_chunk(chunk)
        return
    with ThreadPoolExecutor(workers) as pool:
        try:
            list(pool.map(write_chunk, chunks))  # list(): re-raises the first failed write here
        except BaseException:
            # A full disk fails every chunk alike: drop the queued ones rather than try thousands more files.
            pool.shutdown(cancel_futures=True)
            raise


def make_grid(images: np.ndarray, nrow: int = 8, pad: int = 2) -> np.ndarray:
    """Tile (N, C, H, W) images into one (C, H', W') image with a white gutter."""
    n, c, h, w = images.shape
    ncol = min(nrow, n)
    rows = (n + ncol - 1) // ncol
    grid = np.ones((c, rows * (h + pad) + pad, ncol * (w + pad) + pad), dtype=np.float32)
    for i, img in enumerate(images):
        r, q = divmod(i, ncol)
        grid[:, pad + r * (h + pad): pad + r * (h + pad) + h, pad + q * (w + pad): pad + q * (w + pad) + w] = img
    return grid


def save_grid(path: str | Path, images: np.ndarray, nrow: int = 8, upscale_to: int = 64) -> None:
    """Save a grid PNG; images smaller than ``upscale_to`` are enlarged (nearest) so people can see them."""
    images = np.asarray(images, dtype=np.float32)
    factor = max(1, upscale_to // images.shape[-1])
    if factor > 1:
        images = images.repeat(factor, axis=-2).repeat(factor, axis=-1)
    grid = make_grid(images, nrow=nrow)
    atomic.write_with(path, lambda tmp: write_png(tmp, grid))


def ensure_new_dir(out: str | Path) -> None:
    """Refuse an output folder that exists and is not empty (checked before any long work starts)."""
    out = Path(out)
    if out.exists() and not (out.is_dir() and not any(out.iterdir())):
        raise RunError(f"{out}: already exists; choose another --out or remove it")


@contextlib.contextmanager
def atomic_dir(out: str | Path, overwrite: bool = False) -> Iterator[Path]:
    """``medsyn.atomic.atomic_dir`` that also refuses a non-empty ``out`` up front, unless ``overwrite``.

    A crash or Ctrl-C inside the block leaves no half-written ``out`` behind; a failed write (also
    in the PNG writer threads) is a WriteError naming ``out``.

    Raises:
        RunError: ``out`` exists and is not empty (without ``overwrite``).
        WriteError: the folder could not be written.
    """
    if not overwrite:
        ensure_new_dir(out)
    with atomic.atomic_dir(out, replace_existing=overwrite) as tmp:
        yield tmp


def class_dir_name(name: str) -> str:
    """A file-system-safe folder name for a class name."""
    safe = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in name.strip())
    return safe or "class"


def write_image_folder(
    folder: Path,
    images: np.ndarray,
    labels: np.ndarray,
    class_names: Sequence[str],
    bit_depth: int = 8,
    rows: Sequence[dict[str, Any]] | None = None,
    stem: str = "img",
) -> list[str]:
    """Write a labeled set as ``folder/<class>/<stem>_<i>.png`` plus ``classes.txt`` and ``manifest.csv``.

    ``classes.txt`` lists class names in label order, so reading the folder back keeps label indices.
    ``manifest.csv`` has columns path, label, class_name, then the keys of ``rows`` (one dict per image).
    Write into a folder from ``atomic_dir`` to make the whole set appear at once. Returns relative paths.
    """
    folder.mkdir(parents=True, exist_ok=True)
    dirs = [class_dir_name(n) for n in class_names]
    if len(set(dirs)) != len(dirs):
        dirs = [f"{i:02d}_{d}" for i, d in enumerate(dirs)]
    for d in dirs:
        (folder / d).mkdir(exist_ok=True)
    (folder / "classes.txt").write_text("".join(f"{n}\n" for n in class_names))
    width = max(5, len(str(len(images))))
    paths = []
    for i, lab in enumerate(labels):
        paths.append(f"{dirs[int(lab)]}/{stem}_{i:0{width}d}.png")
    write_pngs([folder / rel for rel in paths], np.asarray(images), bit_depth)
    extra = list(rows[0].keys()) if rows else []
    with open(folder / "manifest.csv", "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["path", "label", "class_name", *extra])
        for i, (rel, lab) in enumerate(zip(paths, labels)):
            writer.writerow([rel, int(lab), class_names[int(lab)], *(rows[i][k] for k in extra)] if rows else [rel, int(lab), class_names[int(lab)]])
    return paths
