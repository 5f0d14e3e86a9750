"""Sampling speed: synthesis into memory and PNG folders, against plain loops, in one process.

A generator is trained for one step on BreastMNIST-64 (the weights do not matter for speed), then:

- in memory: a plain loop (``G(z, y)`` at batch 64 in fp32 under no_grad, ``.cpu()`` per batch, as
  a user's script would) against ``medsyn.sample.synthesize`` (latent blocks, its batch per device);
- PNG folder: one writer converting and saving image by image (medsyn before parallel writers)
  against ``medsyn.imageio.write_pngs`` (one thread per core), beside the encoder alone (PNG bytes
  into memory, one thread), which is what writing would cost with free file creation.

    python bench/sample_speed.py --n 4096 --device cpu

prints one line per measurement with its img/s and the ratios.
"""
from __future__ import annotations

import argparse
import io
import os
import sys
import tempfile
import time
from pathlib import Path

import torch
from PIL import Image

from medsyn.imageio import to_uint, write_png, write_pngs
from medsyn.sample import default_synthesis_batch, load_generator, synthesize
from medsyn.train.run import DataOptions, execute_run, prepare_run
from bench_data import medmnist_file

SHARED = medmnist_file("breastmnist_64.npz")


def one_step_run(run_dir: Path, model: str, width: float, device: str) -> None:
    prepared = prepare_run(run_dir, [{"model": model, "width": width, "steps": 1, "batch": 16, "device": device,
                                      "log_every": 1, "ckpt_every": 1, "grid_every": 1}], DataOptions(str(SHARED)),
                           resume=False)
    execute_run(prepared)


def timed(fn) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def plain_loop(generator: torch.nn.Module, n: int, z_dim: int, classes: int, device: torch.device) -> None:
    with torch.no_grad():
        for start in range(0, n, 64):
            count = min(64, n - start)
            z = torch.randn(count, z_dim, device=device)
            y = torch.full((count,), start * classes // n, dtype=torch.long, device=device)
            ((generator(z, y) + 1) / 2).clamp(0, 1).cpu()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=4096, help="images in all (split over the two classes)")
    parser.add_argument("--model", default="dcgan")
    parser.add_argument("--width", type=float, default=1.0)
    parser.add_argument("--batch", type=int, default=None, help="medsyn's synthesis batch (default: its own choice per device)")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    cores = len(os.sched_getaffinity(0))
    print(f"# {args.model} width {args.width}, {args.n} images at 64x64, device {device}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} torch threads, {cores} cores", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        one_step_run(Path(tmp) / "run", args.model, args.width, args.device)
        loaded = load_generator(Path(tmp) / "run", args.device)
        per_class = args.n // 2
        plain_loop(loaded.generator, 128, loaded.cfg.z_dim, 2, device)  # warm-up (cuDNN autotuning, allocations)
        base = args.n / timed(lambda: plain_loop(loaded.generator, args.n, loaded.cfg.z_dim, 2, device))
        images, _ = synthesize(loaded, per_class, seed=0, batch=args.batch)
        ours = len(images) / timed(lambda: synthesize(loaded, per_class, seed=0, batch=args.batch))
        print(f"memory  plain loop (batch 64)          {base:,.0f} img/s")
        batch = args.batch or default_synthesis_batch(device)
        print(f"memory  medsyn synthesize (batch {batch})  {ours:,.0f} img/s  ratio {ours / base:.2f}", flush=True)

        def encode_only() -> None:
            for pixels in to_uint(images, 8):
                Image.fromarray(pixels).save(io.BytesIO(), format="PNG")

        def serial(folder: Path) -> None:
            for i, image in enumerate(images):
                write_png(folder / f"{i}.png", image)

        folders = [Path(tmp) / name for name in ("serial", "parallel")]
        for folder in folders:
            folder.mkdir()
        encode = len(images) / timed(encode_only)
        one = len(images) / timed(lambda: serial(folders[0]))
        paths = [folders[1] / f"{i}.png" for i in range(len(images))]
        many = len(images) / timed(lambda: write_pngs(paths, images))
    print(f"png     encoder alone, 1 thread, no files  {encode:,.0f} img/s")
    print(f"png     one writer                         {one:,.0f} img/s")
    print(f"png     medsyn write_pngs, {cores} threads     {many:,.0f} img/s  ratio {many / one:.2f}")


if __name__ == "__main__":
    sys.exit(main())
