"""MedMNIST .npz files (any size), read by path or by MedMNIST name from the medmnist cache."""
from __future__ import annotations

import difflib
import functools
import importlib.util
import re
import socket
import zipfile
from pathlib import Path

import numpy as np

from medsyn.data.preprocess import Conform, conform_array, scale_by_depth
from medsyn.data.types import SPLITS, LabeledImages
from medsyn.errors import DataError

_SIZE_SUFFIX = re.compile(r"^(?P<flag>.+?)(?:_(?P<size>64|128|224))?$")
_DOWNLOAD_TIMEOUT_S = 20  # an unreachable host must not hang the CLI


@functools.lru_cache(maxsize=1)
def medmnist_info() -> dict:
    """medmnist.INFO, loaded from medmnist/info.py alone.

    Importing the medmnist package pulls in torch, torchvision and scikit-image (about 10 s on a
    small machine) only to read a dict, so the info module is executed on its own when possible.
    """
    spec = importlib.util.find_spec("medmnist")
    locations = list(spec.submodule_search_locations or []) if spec else []
    info_path = Path(locations[0]) / "info.py" if locations else None
    if info_path is not None and info_path.is_file():
        info_spec = importlib.util.spec_from_file_location("medsyn_medmnist_info", info_path)
        module = importlib.util.module_from_spec(info_spec)
        try:
            info_spec.loader.exec_module(module)
            return dict(module.INFO)
        except Exception:  # noqa: BLE001 - any surprise: fall back to the ordinary import
            pass
    from medmnist.info import INFO

    return dict(INFO)


def split_medmnist_name(name: str) -> tuple[str, int] | None:
    """'breastmnist_64' -> ('breastmnist', 64); None when the stem is no MedMNIST flag."""
    match = _SIZE_SUFFIX.match(name.lower())
    if match is None or match["flag"] not in medmnist_info():
        return None
    return match["flag"], int(match["size"] or 28)


def medmnist_class_names(flag: str) -> list[str]:
    """Class names of a MedMNIST flag in label order (INFO keys are stringified integers)."""
    labels = medmnist_info()[flag]["label"]
    return [labels[key] for key in sorted(labels, key=int)]


def medmnist_root() -> Path:
    """The medmnist package's default download folder."""
    return Path.home() / ".medmnist"


def cached_file_name(flag: str, size: int) -> str:
    return f"{flag}.npz" if size == 28 else f"{flag}_{size}.npz"


def medmnist_suggestion(name: str) -> str | None:
    """The closest MedMNIST name for a misspelt one (only for specs that do not look like paths)."""
    if any(ch in name for ch in "/\\.") or not name:
        return None
    close = difflib.get_close_matches(name.lower(), list(medmnist_info()), n=1)
    return close[0] if close else None


def find_medmnist_file(name: str) -> Path:
    """The cached .npz for a MedMNIST name such as 'breastmnist' or 'breastmnist_64'.

    Tries the medmnist download when the file is not cached; offline that fails and becomes a
    DataError that tells the user to pass the .npz path instead.
    """
    flag, size = split_medmnist_name(name)
    root = medmnist_root()
    path = root / cached_file_name(flag, size)
    if path.is_file():
        return path
    try:
        _download_medmnist(flag, size, root)
    except Exception:  # noqa: BLE001 - any download failure means the same thing to the user
        pass
    if path.is_file():
        return path
    raise DataError(name, f"MedMNIST file {path.name} is not cached in {root} and could not be downloaded "
                          f"(no network?): on a machine with network, `python -m medmnist download` (or MedMNIST's "
                          f"Zenodo record) gives the file; copy it into {root}, or pass the path of the .npz file")


def _download_medmnist(flag: str, size: int, root: Path) -> None:
    import medmnist

    root.mkdir(parents=True, exist_ok=True)
    dataset_class = getattr(medmnist, medmnist_info()[flag]["python_class"])
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(_DOWNLOAD_TIMEOUT_S)
    try:
        dataset_class(split="train", download=True, root=str(root), size=None if size == 28 else size)
    finally:
        socket.setdefaulttimeout(previous)


def _load_arrays(path: Path) -> dict[str, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as archive:
            return {key: archive[key] for key in archive.files}
    except (zipfile.BadZipFile, EOFError) as exc:
        raise DataError(path, f"cannot read .npz (truncated or not a zip archive: {exc})") from None
    except (ValueError, OSError) as exc:
        raise DataError(path, f"cannot read .npz ({exc})") from None


def _split_keys(path: Path, arrays: dict[str, np.ndarray]) -> list[str]:
    """The splits the file holds; an images array without its labels (or the reverse) is an error."""
    present = []
    for split in SPLITS:
        has_images, has_labels = f"{split}_images" in arrays, f"{split}_labels" in arrays
        if has_images != has_labels:
            have, lack = ("images", "labels") if has_images else ("labels", "images")
            raise DataError(path, f"has {split}_{have} but no {split}_{lack}")
        if has_images:
            present.append(split)
    if not present:
        raise DataError(path, "holds no train_images/val_images/test_images arrays (not a MedMNIST file); "
                              f"keys: {', '.join(sorted(arrays)) or 'none'}")
    return present


def _images_to_float(path: Path, key: str, images: np.ndarray) -> tuple[np.ndarray, int]:
    """(N, H, W) or (N, H, W, C) stored images -> float32 (N, C, H, W) in [0, 1] and the bit depth."""
    if images.ndim == 3:
        images = images[:, None]
    elif images.ndim == 4 and images.shape[-1] in (1, 3, 4):
        images = np.moveaxis(images, -1, 1)[:, :3]  # an alpha channel carries no image content
    else:
        raise DataError(path, f"{key} has shape {images.shape}; expected (N, H, W) or (N, H, W, 3)")
    if images.dtype == np.uint8:
        return scale_by_depth(images, 8), 8
    if images.dtype == np.uint16:
        return scale_by_depth(images, 16), 16
    if not np.issubdtype(images.dtype, np.number) or np.issubdtype(images.dtype, np.complexfloating):
        raise DataError(path, f"{key} has unsupported dtype {images.dtype}")
    values = images.astype(np.float64)
    if not np.isfinite(values).all():
        raise DataError(path, f"{key} holds NaN or infinite values")
    low, high = values.min(initial=0.0), values.max(initial=0.0)
    if low >= 0 and high <= 1:
        return values.astype(np.float32), 8
    if low >= 0 and high <= 255:
        return (values / 255.0).astype(np.float32), 8
    raise DataError(path, f"{key} values span [{low:g}, {high:g}]; expected uint8, uint16 or floats in [0, 1]")


def _labels_to_int(path: Path, key: str, labels: np.ndarray, count: int, images_key: str) -> np.ndarray:
    if labels.ndim == 2 and labels.shape[1] == 1:
        labels = labels[:, 0]
    if labels.ndim != 1:
        raise DataError(path, f"{key} has shape {labels.shape}; expected (N,) or (N, 1) "
                              "(multi-label sets are not supported)")
    if len(labels) != count:
        raise DataError(path, f"{images_key} has {count} images but {key} has {len(labels)} labels")
    if not np.issubdtype(labels.dtype, np.number):
        raise DataError(path, f"{key} has non-numeric dtype {labels.dtype}")
    if np.issubdtype(labels.dtype, np.floating):
        if not np.isfinite(labels).all() or (labels != np.round(labels)).any():
            raise DataError(path, f"{key} holds non-integer values")
    labels = labels.astype(np.int64)
    if len(labels) and labels.min() < 0:
        raise DataError(path, f"{key} holds a negative label ({labels.min()})")
    return labels


def read_npz(path: Path, conform: Conform, split: str | None = None) -> LabeledImages:
    """Read a MedMNIST-style .npz, keeping the file's own split (or only the one asked for).

    Args:
        path: the .npz file.
        conform: size, channels and interpolation for the returned images.
        split: "train", "val" or "test" to read only that split.

    Raises:
        DataError: missing keys, mismatched counts, bad labels, NaNs, or an unreadable file.
    """
    arrays = _load_arrays(path)
    present = _split_keys(path, arrays)
    if split is not None:
        if split not in present:
            raise DataError(path, f"has no {split!r} split (has: {', '.join(present)})")
        present = [split]
    parts, labels, splits, depth = [], [], [], 8
    for name in present:
        images, bits = _images_to_float(path, f"{name}_images", arrays[f"{name}_images"])
        labels.append(_labels_to_int(path, f"{name}_labels", arrays[f"{name}_labels"], len(images),
                                     f"{name}_images"))
        parts.append(images)
        splits += [name] * len(images)
        depth = max(depth, bits)
    if len({p.shape[1:] for p in parts}) > 1:
        shapes = ", ".join(f"{n} {p.shape[2]}x{p.shape[3]}x{p.shape[1]}" for n, p in zip(present, parts))
        raise DataError(path, f"splits disagree on image shape ({shapes})")
    all_labels = np.concatenate(labels)
    names = _stored_class_names(path, arrays, all_labels) or _class_names(path, all_labels)
    images, notices = conform_array(np.concatenate(parts), conform)
    return LabeledImages(
        images=images, labels=all_labels, class_names=names, source=str(path), format="medmnist-npz",
        bit_depth=depth, splits=np.array(splits), notices=notices,
    )


def _stored_class_names(path: Path, arrays: dict[str, np.ndarray], labels: np.ndarray) -> list[str] | None:
    """Names kept in the file itself (medsyn writes a ``class_names`` array so names survive the round trip)."""
    if "class_names" not in arrays:
        return None
    names = [str(n) for n in np.atleast_1d(arrays["class_names"])]
    if len(labels) and int(labels.max()) >= len(names):
        raise DataError(path, f"label {int(labels.max())} is out of range for its {len(names)} class_names")
    return names


def _class_names(path: Path, labels: np.ndarray) -> list[str]:
    """MedMNIST's own names when the file stem is a MedMNIST flag, else class_0, class_1, ..."""
    top = int(labels.max()) if len(labels) else -1
    known = split_medmnist_name(path.name[: -len(".npz")] if path.name.lower().endswith(".npz") else path.stem)
    if known is None:
        return [f"class_{i}" for i in range(top + 1)]
    names = medmnist_class_names(known[0])
    if top >= len(names):
        raise DataError(path, f"label {top} is out of range for {known[0]} ({len(names)} classes)")
    return names
