"""`medsyn demo`: the whole pipeline on the built-in phantoms, offline, in a few minutes on a laptop CPU."""
from __future__ import annotations

from pathlib import Path
from typing import Callable

from rich.console import Console

from medsyn.data.phantoms import write_phantoms
from medsyn.imageio import class_dir_name
from medsyn.sample import write_samples
from medsyn.train.run import DataOptions, execute_run, prepare_run

DEMO_SIZE = 48  # big enough to show margins, rims and nodules, small enough for CPU
DEMO_PER_CLASS = 200
# No model: the recommended recipe (recipes/small-data.yaml), with checkpoints and grids often enough
# to watch a short run; its class-conditional generator draws the three lesion types.
DEMO_CONFIG = {"ckpt_every": 100, "grid_every": 100}


def run_demo(out: Path, steps: int, device: str, console: Console, progress_factory: Callable) -> None:
    out = Path(out)
    data_dir, run_dir, samples_dir = out / "phantoms", out / "run", out / "synthetic"
    if not data_dir.exists():
        console.print(f"1/3 making {3 * DEMO_PER_CLASS} phantom liver-lesion ROIs ({DEMO_SIZE}x{DEMO_SIZE}) in {data_dir}")
        write_phantoms(data_dir, size=DEMO_SIZE, per_class=DEMO_PER_CLASS, seed=0)
    resume = (run_dir / "checkpoint.pt").exists()
    prepared = prepare_run(run_dir, [DEMO_CONFIG, {"steps": steps, "device": device}],
                           None if resume else DataOptions(str(data_dir)), resume=resume)
    console.print(f"2/3 training medsyn's recommended recipe ({prepared.spec.name}) for {steps} steps on "
                  f"{prepared.trainer.device} "
                  f"(resumes if interrupted; TensorBoard logs in {run_dir / 'tensorboard'})")
    with progress_factory() as progress:
        task = progress.add_task("train", total=steps, completed=prepared.trainer.step, info="")
        result = execute_run(prepared, lambda s, t, v, r: progress.update(
            task, completed=s, info=" ".join(f"{k} {x:.2f}" for k, x in v.items()) + (f" | {r:,.0f} img/s" if r else "")))
    if result.interrupted:
        console.print("interrupted; run `medsyn demo` again to continue where it stopped")
        return
    console.print(f"3/3 sampling 100 synthetic lesions per class into {samples_dir}")
    # The previous set stays until the new one is complete: a failed rerun must not cost the old samples.
    write_samples(run_dir, samples_dir, n_per_class=100, seed=0, device=device, overwrite=True)
    names = prepared.data.class_names
    console.print("done. Look at:")
    console.print(f"  real phantoms     {data_dir}/grid_<class>.png")
    console.print(f"  training grids    {run_dir}/grids/ (one row per class: {', '.join(names)})")
    console.print(f"  synthetic set     {samples_dir}/ (class folders, manifest.csv)")
    for name in names:
        console.print(f"  synthetic {name:<12}{samples_dir / f'grid_{class_dir_name(name)}.png'}")
