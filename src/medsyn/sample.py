"""Trained generator -> a labeled synthetic set on disk, with provenance, written atomically."""
from __future__ import annotations

import csv
import os
import shutil
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from medsyn import atomic
from medsyn.data.types import LabeledImages
from medsyn.errors import ConfigError, DataError, RunError
from medsyn.models.base import GeneratorInputs, Role
from medsyn.provenance import Record, record_of_images, record_of_run, write_provenance
from medsyn.imageio import atomic_dir, ensure_new_dir, class_dir_name, save_grid, to_uint, write_image_folder
from medsyn.train.batches import SourcePool, step_seed
from medsyn.train.distributed import Distributed, from_environment, initialise
from medsyn.train.checkpoint import CHECKPOINT, file_sha256, load_checkpoint
from medsyn.train.ema import calibration_inputs, recalibrate_batch_norm
from medsyn.train.logging import generate
from medsyn.train.setup import build_networks, resolve_config, resolve_device, sample_latent

GRID_PER_CLASS = 64
LATENT_BLOCK = 1024
NPZ_BLOCK = 4096  # images converted at once when writing samples.npz


@dataclass
class LoadedGenerator:
    generator: torch.nn.Module
    cfg: object
    model: dict
    data: dict
    step: int
    checkpoint_sha256: str
    device: torch.device
    sources: SourcePool | None = None  # real images an image-input generator rewrites
    source_names: list[str] | None = None  # where each of them came from, for the manifest
    run_dir: Path | None = None
    source_record: Record | None = None  # provenance of the rewritten images when they are not the run's own
    notices: list[str] = field(default_factory=list)  # which images were rewritten (and a warning if held out)

    def provenance(self) -> list[Record]:
        """The real images behind the set: the run's training images, and those rewritten when others."""
        records = [record_of_run(self.run_dir, self.data, "generator training")]
        return records + ([self.source_record] if self.source_record is not None else [])


def load_generator(run_dir: str | Path, device: str = "auto", source_data: str | None = None) -> LoadedGenerator:
    """The EMA generator of a run, in eval mode on ``device``.

    Args:
        run_dir: a run folder made by ``medsyn train``.
        device: "auto", "cpu" or "cuda[:N]".
        source_data: for image-input models (gaunet), the data source whose real images the generator
            rewrites; by default the run's own training data, reloaded as it was for training.

    Raises:
        DataError: the source images cannot be read, or their classes differ from the run's.
    """
    run_dir = Path(run_dir)
    state = load_checkpoint(run_dir)
    model = state["model"]
    if model.get("role") == Role.REFINER:
        raise RunError(f"{run_dir}: a {model['name']} refiner run makes no images of its own; apply it with "
                       f"`medsyn refine {run_dir} --input SYNTHETIC_DIR --out DIR`")
    cfg, spec = resolve_config(state["config"], user_layers=0)  # as the run saved it
    nets = build_networks(spec, cfg, model["size"], model["channels"], model["num_classes"])
    nets.generator.load_state_dict(state["generator_ema"])
    torch_device = resolve_device(device)
    generator = nets.generator.to(torch_device)
    pool, names, record, notices = None, None, None, []
    if spec.inputs is GeneratorInputs.SAME_CLASS_PAIRS:
        real = _source_images(state, cfg, source_data)
        pool = SourcePool(torch.from_numpy(real.images).to(torch_device) * 2 - 1, torch.from_numpy(real.labels),
                          model["num_classes"])
        names, notices = _source_names(real), list(real.notices)
        if source_data is not None:
            record = record_of_images("rewritten sources", real, cfg.interpolation)
    elif source_data is not None:
        raise ConfigError(f"--input is for models that rewrite real images (gaunet); {spec.name} samples from noise alone")
    recalibrate_batch_norm(generator, calibration_inputs(cfg, model["num_classes"], torch_device, seed=cfg.seed,
                                                         sources=pool))
    return LoadedGenerator(generator, cfg, model, state["data"], int(state["step"]),
                           file_sha256(run_dir / CHECKPOINT), torch_device, pool, names, run_dir, record, notices)


def _source_images(state: dict, cfg, source_data: str | None) -> LabeledImages:
    """The real images to rewrite: ``source_data``, or the run's training data; classes must match the run's."""
    from medsyn.train.run import DataOptions, load_training_data

    model, trained_on = state["model"], state["data"]
    options = DataOptions.from_stored(trained_on["load"]) if source_data is None else DataOptions(source_data)
    # At the run's image size and channels, whatever the source's own are.
    real = load_training_data(options, replace(cfg, size=model["size"], channels=model["channels"]))
    if list(real.class_names) != list(trained_on["class_names"]):
        raise DataError(options.source, f"has classes {list(real.class_names)}, but the run was trained on "
                                        f"{list(trained_on['class_names'])}; give sources of the same classes")
    empty = [name for name, count in zip(real.class_names, real.class_counts()) if count == 0]
    if empty:
        raise DataError(options.source, f"has no images of class {empty[0]!r} to rewrite")
    return real


def _source_names(real: LabeledImages) -> list[str]:
    """Each source image's origin: its file when the reader knows it, else source[:split]#index."""
    if real.paths is not None:
        return list(real.paths)
    if real.splits is not None:
        return [f"{real.source}:{split}#{i}" for i, split in enumerate(real.splits)]
    return [f"{real.source}#{i}" for i in range(len(real))]


def source_indices(loaded: LoadedGenerator, klass: int, count: int, seed: int) -> torch.Tensor:
    """Indices in ``loaded.sources`` of the real images behind synthetic images 0..count-1 of a class.

    Image i's source depends only on (seed, klass, i): drawn in fixed blocks like the latents.
    """
    return torch.cat([source_block(loaded, klass, start, min(LATENT_BLOCK, count - start), seed)
                      for start in range(0, count, LATENT_BLOCK)])


def source_block(loaded: LoadedGenerator, klass: int, start: int, count: int, seed: int) -> torch.Tensor:
    """The first ``count`` source indices of the latent block that begins at image ``start`` of a class."""
    gen = torch.Generator(device="cpu").manual_seed(step_seed(seed, klass, stream=3000 + start // LATENT_BLOCK))
    wanted = torch.full((LATENT_BLOCK,), klass, dtype=torch.long)
    return loaded.sources.classes.of_class(wanted, gen)[:count]


def default_synthesis_batch(device: torch.device) -> int:
    """Generator forward batch: on CPU small batches stay in cache (64 ran 1.2-1.4x faster than 256
    or 1024 for DCGAN-64, bench/sample_speed.py); a GPU needs large ones to fill."""
    return 64 if device.type == "cpu" else 1024


def synthesize(loaded: LoadedGenerator, n_per_class: int, seed: int, batch: int | None = None,
               on_batch: Callable[[int], None] | None = None, rank: int = 0, world_size: int = 1
               ) -> tuple[np.ndarray, np.ndarray]:
    """(images float32 (N,C,H,W) in [0,1], labels) with N = n_per_class x classes, class-major.

    Image i of class k depends only on (seed, k, i), not on n_per_class or ``batch`` (default:
    ``default_synthesis_batch``; the generator is in eval mode, so batch norm uses running statistics). With
    ``world_size`` > 1 (torchrun), this rank makes only its share: the blocks of LATENT_BLOCK images
    whose number is ``rank`` modulo ``world_size``; ``synthesis_positions`` says where they go.
    """
    batch = batch or default_synthesis_batch(loaded.device)
    images, labels = [], []
    for k, start, count in _blocks(loaded, n_per_class, rank, world_size):
        picks = None if loaded.sources is None else source_block(loaded, k, start, count, seed).to(loaded.device)
        # Latents come in fixed blocks from their own seed: a normal draw of another length would differ.
        gen = torch.Generator(device="cpu").manual_seed(step_seed(seed, k, stream=1000 + start // LATENT_BLOCK))
        z = sample_latent(LATENT_BLOCK, loaded.cfg, torch.device("cpu"), generator=gen)[:count]
        y = torch.full((count,), k, dtype=torch.long)
        for i in range(0, count, batch):
            src = None if picks is None else loaded.sources.images.index_select(0, picks[i:i + batch])
            images.append(generate(loaded.generator, z[i:i + batch].to(loaded.device), y[i:i + batch].to(loaded.device),
                                   batch, sources=src))
            if on_batch is not None:
                on_batch(len(images[-1]))
        labels.append(np.full(count, k, dtype=np.int64))
    if not images:  # more ranks than blocks: this one has nothing to do
        shape = (0, loaded.model["channels"], loaded.model["size"], loaded.model["size"])
        return np.zeros(shape, dtype=np.float32), np.zeros(0, dtype=np.int64)
    return np.concatenate(images), np.concatenate(labels)


def _blocks(loaded: LoadedGenerator, n_per_class: int, rank: int, world_size: int):
    """(class, first index, count) of each latent block this rank synthesises, in class-major order."""
    number = 0
    for k in range(max(1, loaded.model["num_classes"])):
        for start in range(0, n_per_class, LATENT_BLOCK):
            if number % world_size == rank:
                yield k, start, min(LATENT_BLOCK, n_per_class - start)
            number += 1


def synthesis_positions(loaded: LoadedGenerator, n_per_class: int, rank: int, world_size: int) -> np.ndarray:
    """Where a rank's images sit in the class-major set of ``synthesize`` in one process."""
    return np.concatenate([np.arange(k * n_per_class + start, k * n_per_class + start + count)
                           for k, start, count in _blocks(loaded, n_per_class, rank, world_size)] or [np.zeros(0, int)])


def write_samples(run: str | Path | LoadedGenerator, out: str | Path, n_per_class: int, fmt: str = "png", seed: int = 0,
                  device: str = "auto", on_batch: Callable[[int], None] | None = None, overwrite: bool = False) -> Path:
    """Sample a run (its folder, or a generator already loaded from it) into ``out``.

    Writes class folders of PNG (or samples.npz), manifest.csv and a grid per class, atomically.
    A non-empty ``out`` is refused, or with ``overwrite`` replaced only once the new set is complete.
    """
    if fmt not in ("png", "npz"):
        raise ConfigError(f"--format must be png or npz, got {fmt!r}")
    if n_per_class < 1:
        raise ConfigError(f"--n-per-class must be at least 1, got {n_per_class}")
    if not overwrite:
        ensure_new_dir(out)
    ctx, device = join_ranks(device)
    loaded = run if isinstance(run, LoadedGenerator) else load_generator(run, device)
    images, labels = synthesize(loaded, n_per_class, seed, on_batch=on_batch, rank=ctx.rank, world_size=ctx.world_size)
    if ctx.enabled:
        gathered = gather_on_main(ctx, Path(out), loaded, n_per_class, images, labels)
        if gathered is None:  # not rank 0: its share is with rank 0, which writes the folder
            return Path(out)
        images, labels = gathered
    names = loaded.data["class_names"] if loaded.model["num_classes"] else ["all"]
    bit_depth = int(loaded.data.get("bit_depth", 8))
    rows = [{"model": loaded.model["name"], "checkpoint_sha256": loaded.checkpoint_sha256, "step": loaded.step,
             "seed": seed, "index": i % n_per_class} for i in range(len(labels))]
    if loaded.sources is not None:  # which real image each synthetic one rewrites
        for k in range(loaded.model["num_classes"]):
            for i, src in enumerate(source_indices(loaded, k, n_per_class, seed).tolist()):
                rows[k * n_per_class + i]["source"] = loaded.source_names[src]
    with atomic_dir(out, overwrite=overwrite) as tmp:
        if fmt == "png":
            write_image_folder(tmp, images, labels, names, bit_depth=bit_depth, rows=rows, stem="syn")
        else:
            _write_npz(tmp, images, labels, names, bit_depth, rows)
        for k, name in enumerate(names):
            save_grid(tmp / f"grid_{class_dir_name(name)}.png", images[labels == k][:GRID_PER_CLASS], nrow=8)
        write_provenance(tmp, loaded.provenance(), {
            "command": "sample", "run": str(Path(loaded.run_dir).resolve()) if loaded.run_dir else None,
            "model": loaded.model["name"], "checkpoint_sha256": loaded.checkpoint_sha256, "step": loaded.step,
            "seed": seed, "n_per_class": n_per_class})
    ctx.barrier()  # no rank returns before the folder is there
    return Path(out)


def join_ranks(device: str) -> tuple[Distributed, str]:
    """Under torchrun, join the process group and name this rank's device (its own GPU); else as given.

    Call before load_generator, so the generator lands on the rank's device.
    """
    ctx = from_environment()
    if ctx.enabled:
        device = str(initialise(ctx, resolve_device(device)))
    return ctx, device


def gather_on_main(ctx: Distributed, out: Path, loaded: LoadedGenerator, n_per_class: int, images: np.ndarray,
                   labels: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """Under torchrun: every rank's share of a sample set, put together on rank 0 in one-process order.

    Shares travel through files in a scratch folder beside ``out`` (on a shared filesystem across
    machines, like the run folders), not through the process group: a large set would not fit a
    collective. Rank 0 gets (images, labels) of the whole set; the other ranks get None.
    """
    import torch.distributed as dist

    name = [f".{out.name}.shares-{os.getpid()}" if ctx.is_main else None]
    dist.broadcast_object_list(name, src=0)
    scratch = out.parent / name[0]
    scratch.mkdir(parents=True, exist_ok=True)
    # suffix: np.save appends ".npy" to any other name, which would leave the rename nothing to move
    atomic.write_with(scratch / f"rank{ctx.rank:05d}.npy", lambda tmp: np.save(tmp, images), suffix=".npy")
    ctx.barrier()
    if not ctx.is_main:
        ctx.barrier()  # matches rank 0's barrier once the folder is written
        return None
    size = max(1, loaded.model["num_classes"]) * n_per_class
    whole = np.empty((size, *images.shape[1:]), dtype=np.float32)
    for rank in range(ctx.world_size):
        whole[synthesis_positions(loaded, n_per_class, rank, ctx.world_size)] = np.load(scratch / f"rank{rank:05d}.npy")
    shutil.rmtree(scratch, ignore_errors=True)
    return whole, np.repeat(np.arange(max(1, loaded.model["num_classes"])), n_per_class)


def _write_npz(folder: Path, images: np.ndarray, labels: np.ndarray, names: list[str], bit_depth: int, rows) -> None:
    """MedMNIST-style arrays (all samples under the train_ keys), so any MedMNIST reader can load them."""
    # converted in blocks: to_uint works in float64, 8x the bytes of the 8-bit result
    stacked = np.concatenate([to_uint(images[i:i + NPZ_BLOCK], bit_depth) for i in range(0, len(images), NPZ_BLOCK)])
    np.savez_compressed(folder / "samples.npz", train_images=stacked, train_labels=labels.reshape(-1, 1),
                        class_names=np.array(names))
    (folder / "classes.txt").write_text("".join(f"{n}\n" for n in names))
    with open(folder / "manifest.csv", "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["path", "label", "class_name", *rows[0].keys()])
        for i, (lab, row) in enumerate(zip(labels, rows)):
            writer.writerow([f"samples.npz#{i}", int(lab), names[int(lab)], *row.values()])
