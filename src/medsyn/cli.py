"""The `medsyn` command line: a thin Typer layer over the package (nothing imports this module)."""
from __future__ import annotations

import signal
import sys
import time
from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from medsyn.commands.audit import audit_command
from medsyn.commands.classify import classify as classify_command
from medsyn.commands.curate import curate_command
from medsyn.commands.fid import fid_command
from medsyn.commands.refine import refine_command
from medsyn.commands.study import study_command
from medsyn.commands.vtt import vtt_app
from medsyn.errors import ConfigError, MedsynError
from medsyn.train.distributed import leave as leave_process_group
from medsyn.ui import PRESET_NAMES, console, out_console, progress as _progress, say

app = typer.Typer(help="GAN-based synthetic augmentation of medical images.", no_args_is_help=True,
                  pretty_exceptions_enable=False, add_completion=False)
data_app = typer.Typer(help="Inspect data sources and make the built-in phantom dataset.", no_args_is_help=True)
app.add_typer(data_app, name="data")
app.add_typer(vtt_app, name="vtt")


def _slices(text: Optional[str]) -> tuple[int, int] | None:
    if not text:
        return None
    try:
        lo, hi = (int(v) for v in text.split(":"))
    except ValueError:
        raise ConfigError(f"--slices takes LO:HI (e.g. 30:130), got {text!r}") from None
    return lo, hi


def _window(text: Optional[str]) -> tuple[float, float] | None:
    if not text:
        return None
    try:
        centre, width = (float(v) for v in text.split(","))
    except ValueError:
        raise ConfigError(f"--window takes CENTRE,WIDTH (e.g. 40,400), got {text!r}") from None
    return centre, width


ManifestOpt = typer.Option(None, "--manifest", help="CSV with path,label[,patient_id][,split] for folder, DICOM or NIfTI data (default: read the folder's class subfolders).")
AxisOpt = typer.Option(2, "--axis", help="NIfTI: axis to slice along.")
SlicesOpt = typer.Option(None, "--slices", help="NIfTI: keep slices LO:HI (default: all; Han et al. 2019 kept slices 30 to 130 of 155).")
WindowOpt = typer.Option(None, "--window", help="Intensity window CENTRE,WIDTH in stored values, for DICOM, NIfTI and 16-bit PNG/TIFF (default: DICOM's own window, NIfTI's min-max, 16-bit images' own maximum when they use under a quarter of 0..65535).")


@data_app.command("info")
def data_info(
    source: str = typer.Argument(..., help="A .npz (path.npz:test for one split), a MedMNIST name, a class-folder tree, DICOM, NIfTI or a .csv manifest."),
    manifest: Optional[str] = ManifestOpt, axis: int = AxisOpt, slices: Optional[str] = SlicesOpt,
    window: Optional[str] = WindowOpt,
):
    """Print format, classes with counts, image size and channels, splits and patients."""
    from medsyn.data import describe, load_source

    ds = load_source(source, manifest=manifest, axis=axis, slices=_slices(slices), window=_window(window))
    table = Table(title=f"medsyn data info: {source}", show_header=False)
    for key, value in describe(ds):
        table.add_row(key, value)
    out_console.print(table)


@data_app.command("split")
def data_split(
    source: str = typer.Argument(..., help="A class-folder tree, DICOM or NIfTI data, or a .csv manifest without a split column."),
    out: Path = typer.Option(..., "--out", help="Manifest CSV to write (path,label,class_name,patient_id,split)."),
    seed: int = typer.Option(0, "--seed", help="Seed of the split (0: the split every medsyn command uses)."),
    ratios: str = typer.Option("0.7,0.1,0.2", "--ratios", help="Train, val and test shares."),
    manifest: Optional[str] = ManifestOpt, axis: int = AxisOpt, slices: Optional[str] = SlicesOpt,
    window: Optional[str] = WindowOpt,
):
    """Write the patient-level split medsyn uses for a source without one into a manifest (read it back with --manifest)."""
    from medsyn.data import load_source
    from medsyn.data.split_manifest import parse_ratios, write_split_manifest

    shares = parse_ratios(ratios)
    ds = load_source(source, manifest=manifest, axis=axis, slices=_slices(slices), window=_window(window))
    root = Path(source) if Path(source).is_dir() else Path(source).parent
    counts = write_split_manifest(ds, root, out, shares, seed)
    level = "patient" if ds.patient_ids is not None else "image (no patient ids: images of one patient may be split)"
    out_console.print(f"wrote {out}: {level}-level split of {len(ds)} images, "
                      + ", ".join(f"{k} {v}" for k, v in counts.items())
                      + f" (seed {seed}). Use it with: --data {source} --manifest {out}", highlight=False)


@data_app.command("phantoms")
def data_phantoms(
    out: Path = typer.Option(..., "--out", help="Folder to create (class folders of PNG + manifest.csv)."),
    size: int = typer.Option(64, "--size", help="Image side, 28 to 256."),
    per_class: int = typer.Option(60, "--per-class", help="Images per class."),
    seed: int = typer.Option(0, "--seed", help="Seeds the phantoms' shapes, positions and noise."),
):
    """Make the built-in CT liver-lesion phantoms (cyst, metastasis, hemangioma), offline and deterministic."""
    from medsyn.data.phantoms import write_phantoms

    write_phantoms(out, size=size, per_class=per_class, seed=seed)
    out_console.print(f"wrote {3 * per_class} phantom lesion ROIs ({size}x{size}) to {out}")


@app.command("models")
def models():
    """List the registered generators, one a line: name, then the paper it follows."""
    from medsyn.models import MODELS

    from medsyn.recipes import DEFAULT_RECIPE, describe_recipe, recipe_names

    for name in MODELS:
        spec = MODELS.get(name)
        defaults = spec.train_defaults
        length = next((f"{defaults[k]:g} {k}" for k in ("epochs", "steps") if k in defaults), "2000 steps (medsyn's)")
        layout = "; one per class" if defaults.get("per_class") else ""
        out_console.print(f"{name}\t{spec.paper}\tdefault length: {length}{layout}", highlight=False, soft_wrap=True)
    for name in recipe_names():
        default = " (the default of `medsyn train` without --model)" if name == DEFAULT_RECIPE else ""
        out_console.print(f"recipe {name}{default}\t{describe_recipe(name)}", highlight=False, soft_wrap=True)


@app.command("augment")
def augment(
    source: str = typer.Argument(..., help="Data source (as for `medsyn data info`)."),
    preset: str = typer.Option(..., "--preset", help=PRESET_NAMES),
    copies: int = typer.Option(..., "--copies", help="Augmented copies per image (originals are kept too)."),
    out: Path = typer.Option(..., "--out", help="Folder to create (class folders of PNG, manifest.csv with the split, grids)."),
    seed: int = typer.Option(0, "--seed", help="Seeds the random augmentations."),
    manifest: Optional[str] = ManifestOpt,
):
    """Write a classically augmented copy of a dataset (the papers' presets), with manifest and grids."""
    from medsyn.augment import build_preset, write_augmented
    from medsyn.data import load_source

    if copies < 1:
        raise ConfigError(f"--copies must be at least 1, got {copies}")
    from medsyn.imageio import ensure_new_dir

    from medsyn.data.splits import source_split

    ensure_new_dir(out)
    # the source's one split: only train images get copies; val and test are kept once, as they are
    ds = source_split(load_source(source, manifest=manifest))
    say(ds.notices)
    build_preset(preset, ds.size)  # reject an unknown preset before any work
    write_augmented(ds, out, preset, copies, seed=seed)
    train = int((ds.splits == "train").sum())
    out_console.print(f"wrote {len(ds) + train * copies} images to {out}: {len(ds)} originals (split kept in "
                      f"manifest.csv) + {copies} copies of each of the {train} train images")


@app.command("train")
def train(
    out: Path = typer.Option(..., "--out", help="Run folder (checkpoint, config, TensorBoard logs, grids)."),
    data: Optional[str] = typer.Option(None, "--data", help="Training data (any source `medsyn data info` reads); its train split is used. Required unless --resume (default: the run's)."),
    source: Optional[str] = typer.Option(None, "--source", help="Refiners only: the synthetic images to refine (a `medsyn sample` folder or any source; default with --resume: the run's)."),
    model: Optional[str] = typer.Option(None, "--model", help="Generator or refiner from `medsyn models` (default: the recommended recipe, `--config small-data`)."),
    steps: Optional[int] = typer.Option(None, "--steps", help="Total generator steps of the run (default: the model's paper length, see `medsyn models`)."),
    epochs: Optional[float] = typer.Option(None, "--epochs", help="Total passes over the training images, instead of --steps (default: as --steps)."),
    per_class: Optional[bool] = typer.Option(None, "--per-class/--conditional", help="One generator per class, or one conditioned on all classes."),
    batch: Optional[int] = typer.Option(None, "--batch", help="Images per training step (default: the model's paper batch, or the recipe's)."),
    resume: bool = typer.Option(False, "--resume", help="Continue the run in --out (same result as never stopping)."),
    seed: Optional[int] = typer.Option(None, "--seed", help="Seeds weights, noise and data order; same seed, same run on CPU (default: 0)."),
    device: Optional[str] = typer.Option(None, "--device", help="auto | cpu | cuda (default: auto)"),
    config: Optional[str] = typer.Option(None, "--config", help="YAML file of config keys, or a shipped recipe name (small-data; the default when --model is not given)."),
    set_: list[str] = typer.Option([], "--set", help="key=value config override (repeatable)."),
    manifest: Optional[str] = ManifestOpt, axis: int = AxisOpt, slices: Optional[str] = SlicesOpt,
    window: Optional[str] = WindowOpt,
):
    """Train a GAN on labeled images."""
    from medsyn.config import parse_overrides
    from medsyn.recipes import load_config_layer
    from medsyn.train.run import DataOptions, execute_run, prepare_run

    flags = {"model": model, "steps": steps, "epochs": epochs, "per_class": per_class, "batch": batch,
             "seed": seed, "device": device}
    layers = [load_config_layer(config) if config else {}, parse_overrides(set_),
              {k: v for k, v in flags.items() if v is not None}]
    if source and not data and not resume:
        raise ConfigError("--source goes with --data: a refiner learns from synthetic (--source) and real (--data) images")
    options = DataOptions(data, manifest, axis, _slices(slices), _window(window), refine_source=source) if data else None
    prepared = prepare_run(out, layers, options, resume)
    trainer = prepared.trainer
    if resume and trainer.step >= trainer.total_steps:
        if trainer.ctx.is_main:
            out_console.print(f"{out} is already complete: step {trainer.step} of {trainer.total_steps}. To train it "
                              f"longer: medsyn train --out {out} --resume --steps N (N > {trainer.step})")
        return
    if not trainer.ctx.is_main:  # under torchrun, rank 0 alone talks
        result = execute_run(prepared)
        raise typer.Exit(130 if result.interrupted else 0)
    say(prepared.notices)
    ranks = f" x {trainer.ctx.world_size} processes" if trainer.ctx.enabled else ""
    console.print(f"training {prepared.spec.name} on {len(prepared.data)} images "
                  f"({prepared.data.size}x{prepared.data.size}x{prepared.data.channels}, {prepared.data.num_classes} classes) "
                  f"on {trainer.device}{ranks} in {trainer.precision}, steps {trainer.step}->{trainer.total_steps}")
    with _progress() as progress:
        task = progress.add_task("train", total=trainer.total_steps, completed=trainer.step, info="")

        def on_progress(step, total, values, rate):
            info = " ".join(f"{k} {v:.3f}" for k, v in values.items()) + (f" | {rate:,.0f} img/s" if rate else "")
            progress.update(task, completed=step, info=info)

        result = execute_run(prepared, on_progress)
    if result.interrupted:
        console.print(f"interrupted at step {result.step}; checkpoint saved. Continue with: "
                      f"medsyn train --out {out} --resume")
        raise typer.Exit(130)
    memory = f"; peak memory {result.last_stats['mem_gb']:.1f} GB" if "mem_gb" in result.last_stats else ""
    out_console.print(f"trained {result.step} steps{memory}; run folder {out} (checkpoint.pt, grid_latest.png, "
                      f"tensorboard/)")


@app.command("sample")
def sample(
    run: Path = typer.Argument(..., help="A run folder made by `medsyn train`."),
    n_per_class: int = typer.Option(..., "--n-per-class", help="Images to synthesise per class."),
    out: Path = typer.Option(..., "--out", help="Folder to create."),
    fmt: str = typer.Option("png", "--format", help="png (class folders) or npz (MedMNIST-style)."),
    seed: int = typer.Option(0, "--seed", help="Seeds the latent codes (same seed, same images)."),
    device: str = typer.Option("auto", "--device", help="auto | cpu | cuda"),
    input_: Optional[str] = typer.Option(None, "--input", help="gaunet: real images to rewrite (any source `medsyn data info` reads, same classes as the run); default: the run's training data."),
):
    """Write a labeled synthetic dataset from a trained run, with manifest.csv and a grid per class."""
    from medsyn.imageio import ensure_new_dir
    from medsyn.sample import join_ranks, load_generator, write_samples

    ensure_new_dir(out)
    ctx, device = join_ranks(device)  # under torchrun each rank makes a share of the set; rank 0 writes it
    loaded = load_generator(run, device, source_data=input_)  # a missing or broken run fails here, before the progress bar
    if not ctx.is_main:
        write_samples(loaded, out, n_per_class, fmt=fmt, seed=seed)
        return
    say(loaded.notices)
    with _progress() as progress:
        task = progress.add_task("sample", total=None, info="")
        started = time.perf_counter()
        done = [0]

        def on_batch(n):
            done[0] += n
            progress.update(task, completed=done[0], info=f"{done[0] / (time.perf_counter() - started):,.0f} img/s")

        write_samples(loaded, out, n_per_class, fmt=fmt, seed=seed, on_batch=on_batch)
    total = max(1, loaded.model["num_classes"]) * n_per_class
    made = f" ({ctx.world_size} processes; this one made {done[0]})" if ctx.enabled else ""
    out_console.print(f"wrote {total} synthetic images to {out}{made} (manifest.csv, grid_<class>.png)")


@app.command("demo")
def demo(
    out: Path = typer.Option(Path("medsyn-demo"), "--out", help="Folder for the demo's data, run and samples."),
    steps: int = typer.Option(400, "--steps", help="Training steps (the default finishes the demo in about 5 minutes on 2 CPU cores)."),
    device: str = typer.Option("auto", "--device", help="auto | cpu | cuda"),
):
    """Offline end-to-end demo on the built-in phantoms: data -> conditional GAN -> labeled synthetic set."""
    from medsyn.demo import run_demo

    run_demo(out, steps=steps, device=device, console=console, progress_factory=_progress)


# Evaluation commands live in medsyn.commands (each module imports only typer at load time).
app.command("fid")(fid_command)
app.command("classify")(classify_command)
app.command("curate")(curate_command)
app.command("study")(study_command)
app.command("refine")(refine_command)
app.command("audit")(audit_command)


def _sigterm_as_ctrl_c() -> None:
    """SIGTERM (sent by SLURM, Kubernetes and `timeout` before they kill) stops any command as Ctrl-C does:
    training saves a checkpoint at the next step boundary (its loop installs its own handler), a study
    keeps every finished unit, and every writer removes its temporary file instead of leaving half a result."""
    def interrupt(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupt)


def main() -> None:
    _sigterm_as_ctrl_c()
    try:
        app()
    except MedsynError as err:
        console.print(f"[red]error:[/] {err}", highlight=False, soft_wrap=True)
        sys.exit(err.exit_code)
    finally:
        leave_process_group()


if __name__ == "__main__":
    main()
