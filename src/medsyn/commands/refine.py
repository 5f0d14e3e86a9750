"""`medsyn refine RUN --input DIR --out DIR`: pass a labeled image set through a trained refiner."""
from __future__ import annotations

import time
from pathlib import Path

import typer

from medsyn.ui import out_console, progress, say


def refine_command(
    run: Path = typer.Argument(..., help="A refiner run folder (medsyn train --model simgan|unit|munit)."),
    input_source: str = typer.Option(..., "--input", help="Images to refine: a `medsyn sample` folder or any source `medsyn data info` reads."),
    out: Path = typer.Option(..., "--out", help="Folder to create (class folders, manifest.csv, before/after grids)."),
    seed: int = typer.Option(0, "--seed", help="Seeds MUNIT's per-image style codes (SimGAN and UNIT are deterministic)."),
    batch: int = typer.Option(64, "--batch", help="Images per forward pass."),
    device: str = typer.Option("auto", "--device", help="auto | cpu | cuda"),
):
    """Refine every image of --input with a trained refiner; labels and the input manifest are carried over."""
    from medsyn.errors import ConfigError
    from medsyn.imageio import ensure_new_dir
    from medsyn.refine import load_refiner, read_input, write_refined

    if batch < 1:
        raise ConfigError(f"--batch must be at least 1, got {batch}")
    ensure_new_dir(out)
    loaded = load_refiner(run, device)  # a missing or wrong run fails here, before any reading
    checked = read_input(loaded, input_source)  # bad input fails here with one line, before the progress bar
    say(checked.notices)
    total = len(checked)
    with progress() as bar:
        task = bar.add_task("refine", total=total, info="")
        started, done = time.perf_counter(), [0]

        def on_batch(n: int) -> None:
            done[0] += n
            bar.update(task, completed=done[0], info=f"{done[0] / (time.perf_counter() - started):,.0f} img/s")

        write_refined(loaded, input_source, out, seed=seed, batch=batch, on_batch=on_batch)
    out_console.print(f"refined {done[0]} images with {loaded.model['name']} (step {loaded.step}) into {out} "
                      "(manifest.csv, grid_<class>.png: input rows above refined rows)")
