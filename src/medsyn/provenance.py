"""Which real images a synthetic set was made from, and the check that none of them is held out.

Every run records the identities of the real images it trained on (``data.json``: a 64-bit hash
of each image's pixels as the run loaded them, with how it loaded them). Every folder of synthetic
images that medsyn writes (``medsyn sample``, ``refine``, ``curate``) carries ``provenance.json``:
one record per set of real images that shaped it (the generator's training images, a refiner's,
the real images curation scored against, the real images gaunet rewrote). ``classify``, studies
and the audit load their own held-out images (val and test of the source's one split) the way
each record loaded its images, hash them, and refuse the synthetic set when any is in a record.

Identity is by content at the record's geometry, read from the evaluation's own source: the same
file read the same way gives the same hashes. Images converted outside medsyn (e.g. exported to
PNG and back) are other files, and are not recognised.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from medsyn.atomic import write_json
from medsyn.data.folder import PROVENANCE  # readers take a folder holding it for synthetic images
from medsyn.data.types import LabeledImages

HELD_OUT = ("val", "test")


def image_hashes(images: np.ndarray) -> list[str]:
    """A 64-bit content hash (16 hex digits) of every image (float32 (N, C, H, W) as loaded)."""
    flat = np.ascontiguousarray(images, dtype=np.float32).reshape(len(images), -1)
    return [hashlib.blake2b(row.tobytes(), digest_size=8).hexdigest() for row in flat]


@dataclass
class Record:
    """One set of real images that shaped a synthetic set.

    Attributes:
        role: what the images did: "generator training", "refiner training", "curation reference",
            "rewritten sources".
        source: the data source as given (path or MedMNIST name), with the read options in ``load``.
        load: the reader's options (manifest, axis, slices, window) and geometry (size, channels,
            interpolation) the images were read with.
        split: the split of the source the images came from ("train" unless asked otherwise).
        image_hashes: the images' identities (``image_hashes``).
        run: the run folder that trained on them, when one did.
    """

    role: str
    source: str
    load: dict[str, Any]
    split: str
    image_hashes: list[str] = field(repr=False)
    run: str | None = None

    @property
    def images(self) -> int:
        return len(self.image_hashes)


def record_of_run(run_dir: str | Path, data_info: dict[str, Any], role: str) -> Record:
    """The record of a run's training images, from its data.json (or checkpoint's "data")."""
    load = dict(data_info["load"])
    geometry = {"size": data_info["size"], "channels": data_info["channels"],
                "interpolation": data_info.get("interpolation", "bilinear")}
    return Record(role, load.pop("source"), {**load, **geometry}, data_info.get("split", "train"),
                  list(data_info.get("image_hashes", [])), str(Path(run_dir).resolve()))


def record_of_images(role: str, data: LabeledImages, interpolation: str = "bilinear") -> Record:
    """The record of real images used directly (curation's reference, gaunet's rewritten sources,
    refined real images): read with the readers' default options at the images' own geometry, from
    the split their ``splits`` name (one split of a source)."""
    load = {"manifest": None, "axis": 2, "slices": None, "window": None, "size": data.size, "channels": data.channels,
            "interpolation": interpolation}
    split = str(data.splits[0]) if data.splits is not None and len(data) else "train"
    return Record(role, data.source, load, split, image_hashes(data.images))


def write_provenance(folder: Path, records: list[Record], made_by: dict[str, Any]) -> Path:
    """``folder/provenance.json``: what made the set (``made_by``) and every record of real images."""
    return write_json(Path(folder) / PROVENANCE, {"made_by": made_by, "records": [asdict(r) for r in records]})


def read_provenance(spec: str | Path) -> list[Record] | None:
    """The records of a synthetic set (a folder, or a samples.npz in one); None when it has none."""
    path = Path(str(spec).split(":")[0])
    folder = path if path.is_dir() else path.parent
    file = folder / PROVENANCE
    if not file.is_file():
        return None
    return [Record(**r) for r in json.loads(file.read_text())["records"]]


def held_out_hashes(source: str, record: Record, manifest: str | None = None) -> dict[str, set[str]]:
    """The identities of ``source``'s held-out images (val, test of its one split), read as ``record`` read its own."""
    from medsyn.data import load_source
    from medsyn.data.loader import parse_spec
    from medsyn.data.splits import source_split

    load = record.load
    data = source_split(load_source(parse_spec(source)[0], size=load.get("size"), channels=load.get("channels"),
                                    interpolation=load.get("interpolation", "bilinear"), manifest=manifest,
                                    axis=load.get("axis", 2), slices=_pair(load.get("slices")),
                                    window=_pair(load.get("window"))))
    return {name: set(image_hashes(data.split(name).images)) for name in HELD_OUT}


@dataclass
class Overlap:
    record: Record
    split: str
    count: int  # held-out images of that split among the record's

    def describe(self) -> str:
        where = f" (run {self.record.run})" if self.record.run else ""
        return (f"{self.count} of its {self.record.role} images{where} are in the {self.split} split of the "
                f"evaluation data")


def overlaps(records: list[Record], source: str, manifest: str | None = None,
             splits: tuple[str, ...] = HELD_OUT) -> list[Overlap]:
    """Every (record, held-out split) pair that shares images; empty when the set is clean."""
    found = []
    read: dict[str, dict[str, set[str]]] = {}  # records that read the source alike (a two-step set's) share one read
    for record in records:
        key = json.dumps(record.load, sort_keys=True, default=str)
        if key not in read:
            read[key] = held_out_hashes(source, record, manifest)
        held = read[key]
        mine = set(record.image_hashes)
        for name in splits:
            count = len(mine & held[name])
            if count:
                found.append(Overlap(record, name, count))
    return found


def _pair(value) -> tuple | None:
    return tuple(value) if value else None


def check_made_without_held_out(synthetic: str, evaluation: str, manifest: str | None = None) -> list[str]:
    """Refuse a synthetic set made from any held-out (val or test) image of ``evaluation``.

    Args:
        synthetic: the synthetic set (a folder with provenance.json, or a samples.npz in one).
        evaluation: the real source whose split the evaluation holds out.
        manifest: the evaluation source's manifest, if it is read through one.

    Returns:
        notices for the user: what was checked, or a warning when it cannot be checked.

    Raises:
        DataError: the set was made from held-out images (names the record, split and count).
    """
    from medsyn.errors import DataError

    records = read_provenance(synthetic)
    if records is None:
        return [f"warning: {synthetic} has no {PROVENANCE} (not written by medsyn sample, refine or curate): medsyn "
                f"cannot check that none of {evaluation}'s held-out images went into it"]
    notices = [f"warning: the {r.role} record of {r.run or r.source} holds no image identities (made before medsyn "
               f"recorded them): its images cannot be checked; retrain to check" for r in records if not r.image_hashes]
    found = overlaps([r for r in records if r.image_hashes], evaluation, manifest)
    if found:
        more = f" (and {len(found) - 1} more)" if len(found) > 1 else ""
        raise DataError(synthetic, f"was made from held-out images of {evaluation}: {found[0].describe()}{more}; "
                                   f"held-out results would not be independent. Train on the train split (the "
                                   f"default of medsyn train) and sample again")
    checked = sum(r.images for r in records)
    return notices + [f"provenance of {synthetic}: none of the {checked} real images it was made from is among "
                      f"{evaluation}'s held-out (val, test) images"]
