"""A small reader study made directly in the database, for the server and report tests (no GAN, no data files)."""
from __future__ import annotations

import hashlib
import io
from pathlib import Path

import numpy as np
from PIL import Image

from medsyn.vtt.store import DATABASE, IMAGES, StudyImage, StudyStore, create_database, new_image_id


def png_bytes(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def make_study(folder: Path, classes: tuple[str, ...] = ("benign", "malignant"), real_per_class: int = 3,
               synthetic_per_class: int = 3, generators: tuple[str, ...] = ("runs/gen-a",), ask_class: bool = True,
               seed: int = 0, size: int = 16) -> StudyStore:
    """A study folder with grey ``size``x``size`` noise images: real ones from ``real.npz``, synthetic ones spread
    over ``generators`` (round robin), in a shuffled order as `medsyn vtt create` writes them."""
    rng = np.random.default_rng(seed)
    rows: list[tuple[bool, int, str | None, str, str]] = []
    for class_index in range(len(classes)):
        for i in range(real_per_class):
            rows.append((False, class_index, None, "data/real.npz:test", f"index {class_index * 100 + i}"))
        for i in range(synthetic_per_class):
            generator = generators[i % len(generators)]
            rows.append((True, class_index, generator, f"{generator}/samples", f"{generator}/samples/{i}.png"))
    images_dir = folder / IMAGES
    images_dir.mkdir(parents=True)
    images = []
    for index in rng.permutation(len(rows)):
        is_synthetic, class_index, generator, source, origin = rows[index]
        data = png_bytes(rng.integers(0, 256, (size, size), dtype=np.uint8))
        image_id = new_image_id()
        (images_dir / f"{image_id}.png").write_bytes(data)
        images.append(StudyImage(image_id, is_synthetic, class_index, generator, source, origin,
                                 hashlib.sha256(data).hexdigest()))
    settings = {"class_names": list(classes), "ask_class": ask_class, "per_class": real_per_class + synthetic_per_class,
                "real_share": real_per_class / (real_per_class + synthetic_per_class), "seed": seed, "size": size,
                "mode": "L", "real": "data/real.npz:test", "synthetic": [f"{g}/samples" for g in generators],
                "generators": list(generators)}
    create_database(folder / DATABASE, settings, images)
    return StudyStore(folder)
