"""`medsyn vtt create`: draw a class-stratified set of real and synthetic images and make a study folder of it.

The served files must not tell real from synthetic: every image is re-encoded the same way (one size,
one mode, 8 bits, one PNG form without metadata, see ``encode``), named by a random id, written in
the shuffled study order with one file time, and the answer key (with where each image came from)
goes only into ``study.sqlite``, which the server never serves.
"""
from __future__ import annotations

import hashlib
import os
import sqlite3
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

import medsyn
from medsyn.atomic import atomic_dir
from medsyn.data.loader import load_source
from medsyn.data.types import LabeledImages
from medsyn.errors import ConfigError, DataError, MedsynError, WriteError
from medsyn.imageio import ensure_new_dir
from medsyn.provenance import PROVENANCE, Record, image_hashes, read_provenance
from medsyn.vtt.encode import encode_png, mode_of
from medsyn.vtt.store import DATABASE, IMAGES, StudyImage, create_database, new_image_id

GENERATOR_ROLE = "generator training"


@dataclass
class ImageSet:
    """One set images are drawn from: the real set, or one synthetic set (``generator`` set)."""

    spec: str  # as given on the command line: the `source` of its images in the key
    data: LabeledImages
    classes: np.ndarray  # the real set's class index of each image
    generator: str | None = None  # None for the real set
    records: list[Record] | None = None  # provenance of a synthetic set, when it has any

    def origin(self, index: int) -> str:
        return self.data.paths[index] if self.data.paths is not None else f"index {index}"


@dataclass
class StudySummary:
    """What `medsyn vtt create` made, for the command line."""

    out: Path
    class_names: list[str]
    per_class: int
    n_real: int
    n_synthetic: int
    generators: list[str]
    size: int
    mode: str
    ask_class: bool
    notices: list[str]

    def describe(self) -> str:
        """One line: images, real and synthetic, classes, geometry and the question asked."""
        count = len(set(self.generators))
        return (f"study {self.out}: {self.n_real + self.n_synthetic} images ({self.n_real} real, {self.n_synthetic} "
                f"synthetic from {count} generator{'s' if count != 1 else ''}), {len(self.class_names)} "
                f"class{'es' if len(self.class_names) != 1 else ''} x {self.per_class}, {self.size}x{self.size} "
                f"{'grey' if self.mode == 'L' else self.mode}, "
                f"{'class question asked' if self.ask_class else 'class not asked'}")


def create_study(*, real: str, synthetic: list[str], per_class: int, out: str | Path, ask_class: bool = False,
                 real_share: float = 0.5, seed: int = 0, size: int | None = None) -> StudySummary:
    """Make a reader-study folder: ``out/images/<id>.png`` and ``out/study.sqlite`` with the answer key.

    Args:
        real: the real images, any source ``load_source`` reads (e.g. "breastmnist.npz:test").
        synthetic: one or more synthetic sets (`medsyn sample` folders or any labeled source) with the real
            set's class names; each is one generator's share.
        per_class: images shown per class, real and synthetic together.
        out: the study folder to create; an existing non-empty folder is refused.
        ask_class: raters are also asked each image's class.
        real_share: share of real images per class: round(per_class * real_share) real (halves up), the
            rest synthetic, split evenly over the synthetic sets (the first sets take the remainder).
        seed: seeds the draw and the display order: the same seed draws the same images in the same order.
        size: side of the served images; default the real images' size. Every image is resized alike.

    Returns:
        A summary with notices (loader notes; "warning: ..." when real images were a generator's training images).

    Raises:
        ConfigError: a bad option (share outside (0, 1), too small per_class, a set named twice).
        DataError: a set cannot be read, is empty, has other classes, or too few images of a class.
        RunError: ``out`` exists and is not empty.
        WriteError: the folder could not be written (nothing is left behind).
    """
    synthetic = [synthetic] if isinstance(synthetic, str) else list(synthetic)
    n_real, shares = study_counts(per_class, real_share, len(synthetic))
    _check_specs(real, synthetic)
    ensure_new_dir(out)  # before the loading, which can take a while
    real_set = _load_real(real, size)
    sets = [real_set] + [_load_synthetic(spec, real_set.data) for spec in synthetic]
    needs = [n_real] + shares
    for image_set, need in zip(sets, needs):
        _check_enough(image_set, need, real_set.data.class_names, per_class, real_share)
    rng = np.random.default_rng(seed)
    drawn = _draw(sets, needs, len(real_set.data.class_names), rng)
    notices = _reader_notices(sets) + _training_overlap(real, real_set, sets[1:], drawn)
    created = datetime.now(timezone.utc)
    settings = {
        "class_names": list(real_set.data.class_names), "ask_class": bool(ask_class), "per_class": per_class,
        "real_share": real_share, "seed": seed, "size": real_set.data.size, "mode": mode_of(real_set.data.channels),
        "real": real, "synthetic": synthetic, "generators": [s.generator for s in sets[1:]],
        "n_real_per_class": n_real, "n_synthetic_per_class": sum(shares), "n_synthetic_per_class_by_set": shares,
        "created": created.isoformat(timespec="seconds"), "medsyn_version": getattr(medsyn, "__version__", None),
    }
    _write_study(Path(out), sets, drawn, settings, float(int(created.timestamp())))
    n_classes = len(real_set.data.class_names)
    return StudySummary(Path(out), list(real_set.data.class_names), per_class, n_real * n_classes,
                        sum(shares) * n_classes, settings["generators"], real_set.data.size, settings["mode"],
                        bool(ask_class), notices)


def study_counts(per_class: int, real_share: float, n_synthetic_sets: int) -> tuple[int, list[int]]:
    """Real images per class, and synthetic images per class from each synthetic set.

    Raises:
        ConfigError: a share outside (0, 1), per_class below 2, or a count that would be 0.
    """
    if not 0 < real_share < 1:
        raise ConfigError(f"--real-share must be between 0 and 1 (both excluded): a study shows real and synthetic "
                          f"images; got {real_share}")
    if per_class < 2:
        raise ConfigError(f"--per-class must be at least 2 (a real and a synthetic image per class), got {per_class}")
    if n_synthetic_sets < 1:
        raise ConfigError("give at least one --synthetic set")
    n_real = int(np.floor(per_class * real_share + 0.5))  # halves up: Python's round() would go to the even count
    n_synthetic = per_class - n_real
    if n_real < 1 or n_synthetic < 1:
        raise ConfigError(f"--per-class {per_class} with --real-share {real_share} gives {n_real} real and "
                          f"{n_synthetic} synthetic images per class; both must be at least 1")
    if n_synthetic < n_synthetic_sets:
        raise ConfigError(f"--per-class {per_class} with --real-share {real_share} gives {n_synthetic} synthetic "
                          f"images per class, fewer than the {n_synthetic_sets} --synthetic sets; raise --per-class")
    base, extra = divmod(n_synthetic, n_synthetic_sets)
    return n_real, [base + (1 if j < extra else 0) for j in range(n_synthetic_sets)]


def _check_specs(real: str, synthetic: list[str]) -> None:
    # The same set twice would be drawn from twice, and could show one image twice (or as real and synthetic).
    seen = [real]
    for spec in synthetic:
        if spec in seen:
            raise ConfigError(f"{spec} is given twice (as --real or --synthetic); give each set once")
        seen.append(spec)


def _load_real(spec: str, size: int | None) -> ImageSet:
    data = load_source(spec, size=size)
    if len(data) == 0:
        raise DataError(spec, "holds no images")
    if data.channels not in (1, 3):
        raise DataError(spec, f"has {data.channels} channels; a study shows grey or RGB images")
    return ImageSet(spec, data, data.labels.copy())


def _load_synthetic(spec: str, real: LabeledImages) -> ImageSet:
    """A synthetic set at the real set's size and channels, its labels mapped to the real set's classes by name."""
    data = load_source(spec, size=real.size, channels=real.channels)
    if len(data) == 0:
        raise DataError(spec, "holds no images")
    if set(data.class_names) != set(real.class_names):
        missing = sorted(set(real.class_names) - set(data.class_names))
        extra = sorted(set(data.class_names) - set(real.class_names))
        parts = ([f"lacks {', '.join(map(repr, missing))}"] if missing else []) + \
                ([f"has {', '.join(map(repr, extra))} that the real set has not"] if extra else [])
        raise DataError(spec, f"its classes differ from the real set's ({', '.join(map(repr, real.class_names))}): "
                              f"{'; '.join(parts)}")
    to_real = np.array([real.class_names.index(name) for name in data.class_names], dtype=np.int64)
    try:
        records = read_provenance(spec)
    except (OSError, ValueError, TypeError, KeyError) as err:
        raise DataError(Path(str(spec).split(":")[0]) / PROVENANCE, f"unreadable ({err})") from None
    trained = [r for r in records or [] if r.role == GENERATOR_ROLE and r.run]
    return ImageSet(spec, data, to_real[data.labels], generator=trained[0].run if trained else spec, records=records)


def _check_enough(image_set: ImageSet, need: int, class_names: list[str], per_class: int, real_share: float) -> None:
    counts = np.bincount(image_set.classes, minlength=len(class_names))
    short = [k for k in range(len(class_names)) if counts[k] < need]
    if short:
        k = short[0]
        more = f" (and {len(short) - 1} more class{'es' if len(short) > 2 else ''})" if len(short) > 1 else ""
        raise DataError(image_set.spec, f"has {counts[k]} images of class {class_names[k]!r}, {need} are needed"
                                        f"{more} (--per-class {per_class}, --real-share {real_share}); lower "
                                        f"--per-class or give more images")


def _draw(sets: list[ImageSet], needs: list[int], n_classes: int, rng: np.random.Generator) -> list[tuple[int, int]]:
    """(set, image index) of every study image, in the shuffled display order; without replacement per set."""
    chosen = []
    for k in range(n_classes):
        for s, (image_set, need) in enumerate(zip(sets, needs)):
            pool = np.flatnonzero(image_set.classes == k)
            chosen += [(s, int(i)) for i in np.sort(rng.choice(pool, size=need, replace=False))]
    return [chosen[i] for i in rng.permutation(len(chosen))]


def _reader_notices(sets: list[ImageSet]) -> list[str]:
    notices = []
    for image_set in sets:
        for text in image_set.data.notices:
            warning = text.startswith("warning: ")
            body = text[len("warning: "):] if warning else text
            # "in SPEC, ...": not "SPEC: ...", which rich would show as an emoji for a spec ending in ":train"
            notices.append(f"{'warning: ' if warning else ''}in {image_set.spec}, {body}")
    real = sets[0]
    if real.data.format == "medsyn-samples":
        notices.append(f"warning: --real {real.spec} holds synthetic images (written by medsyn sample, refine or "
                       f"curate); the study would show them as real")
    resized = [any(text.startswith("resized ") for text in s.data.notices) for s in sets]
    if any(resized) and not all(resized):  # resampling smooths: a rater could pick the resized set by its blur
        names = ", ".join(s.spec for s, r in zip(sets, resized) if r)
        notices.append(f"warning: only {names} had to be resized to {real.data.size}x{real.data.size}; resampling "
                       "softens images, which may tell raters which set they came from. Sample the generator at the "
                       "real images' size, or choose a --size that every set is resized to")
    if real.data.bit_depth > 8 or any(s.data.bit_depth > 8 for s in sets[1:]):
        notices.append("16-bit images are shown at 8 bits, like every image of the study (browsers show 8 bits)")
    return notices


def _training_overlap(spec: str, real: ImageSet, synthetic: list[ImageSet], drawn: list[tuple[int, int]]) -> list[str]:
    """Warnings when real images of the study were among the images a synthetic set was made from."""
    notices = []
    shown = {i for s, i in drawn if s == 0}
    hashes: dict[tuple, list[str] | None] = {}  # real-set hashes per geometry the records read with
    for image_set in synthetic:
        if image_set.records is None:
            notices.append(f"{image_set.spec} has no {PROVENANCE}: medsyn cannot check that its generator never "
                           f"trained on the real images shown")
            continue
        for record in image_set.records:
            if not record.image_hashes:
                notices.append(f"the {record.role} record of {image_set.spec} holds no image identities: cannot "
                               f"check it against the real images shown")
                continue
            known = _real_hashes(spec, real.data, record, hashes)
            if known is None:
                notices.append(f"cannot read {spec} as the {record.role} record of {image_set.spec} read its images: "
                               f"not checked against them")
                continue
            theirs = set(record.image_hashes)
            inside = [i for i, h in enumerate(known) if h in theirs]
            if inside:
                by = f"run {record.run}" if record.run else record.source
                notices.append(
                    f"warning: {len(inside)} of the {len(known)} real images of {spec} "
                    f"({len(shown.intersection(inside))} of the {len(shown)} drawn for the study) are {record.role} "
                    f"images of {image_set.spec} ({by}): raters may be shown images the generator learnt to reproduce; "
                    f"give real images it never saw")
    return notices


def _real_hashes(spec: str, real: LabeledImages, record: Record, cache: dict) -> list[str] | None:
    """Identities of the real set's images read at the record's geometry (the set as loaded when it is the same)."""
    load = record.load
    geometry = (load.get("size") or real.size, load.get("channels") or real.channels,
                str(load.get("interpolation") or "bilinear"))
    if geometry not in cache:
        if geometry == (real.size, real.channels, "bilinear"):
            cache[geometry] = image_hashes(real.images)
        else:
            try:
                cache[geometry] = image_hashes(load_source(spec, size=geometry[0], channels=geometry[1],
                                                           interpolation=geometry[2]).images)
            except MedsynError:
                cache[geometry] = None
    return cache[geometry]


def _write_study(out: Path, sets: list[ImageSet], drawn: list[tuple[int, int]], settings: dict,
                 file_time: float) -> None:
    """The folder, whole or not at all: the PNGs in display order with one file time, then the key."""
    with atomic_dir(out) as tmp:
        folder = tmp / IMAGES
        folder.mkdir()
        images = []
        for s, index in drawn:
            image_set = sets[s]
            data = encode_png(image_set.data.images[index])
            image_id = new_image_id()
            path = folder / f"{image_id}.png"
            path.write_bytes(data)
            # One time for every file, so neither the times nor their order tell the kinds apart.
            os.utime(path, (file_time, file_time))
            images.append(StudyImage(image_id, s > 0, int(image_set.classes[index]), image_set.generator,
                                     image_set.spec, image_set.origin(index), hashlib.sha256(data).hexdigest()))
        try:
            create_database(tmp / DATABASE, settings, images)  # rows in display order, like the files
        except sqlite3.Error as err:
            raise WriteError(tmp / DATABASE, str(err)) from None
