"""Training speed: medsyn's training step against the plain PyTorch DCGAN example loop, in one process.

The baseline is the loop of the PyTorch DCGAN example (examples/dcgan/main.py), written out here:
images decoded from PNG files by torchvision's ImageFolder through a DataLoader (Resize, CenterCrop,
ToTensor, Normalize), 3-channel 64x64, fp32, BCE on a sigmoid output, and `.item()` on every loss
every step. Both loops train the same generator and discriminator (medsyn's registered model at the
chosen width), so the ratio measures the training loop and data path, not a choice of network.

    python bench/train_speed.py --model dcgan --size 64 --batch 64 --device cpu

For models with a WGAN-GP objective (wgan-gp, pggan) the baseline is a plain fp32 eager WGAN-GP
loop instead, with the penalty on every critic update; ``--set gp_every=4`` times medsyn's lazy
penalty against it:

    python bench/train_speed.py --model wgan-gp --size 64 --batch 64 --device cpu --set gp_every=4

Class-conditional models (acgan, gaunet) have no plain baseline here (both plain loops train G(z)
alone): for them only medsyn's rate and utilisation are printed, on two classes of images.

prints `baseline ... N img/s`, `medsyn ... N img/s` and `ratio R`, each loop with its model FLOPs
utilisation: the FLOPs of one medsyn training step (counted, per image) times the rate, against a
dense matmul peak measured in the same process, in the precision medsyn's loop runs in (bf16 where
the device has native bf16 and `amp` is on, as its autocast; else fp32; `--set amp=false` for fp32).
Both loops are charged medsyn's step FLOPs, so their utilisations compare as their rates do.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from medsyn.config import parse_overrides
from medsyn.data.types import LabeledImages
from medsyn.models import MODELS, create_discriminator, create_generator
from medsyn.models.base import Conditioning, ImageSpec, NetOptions
from medsyn.train.gan import GanTrainer
from medsyn.train.setup import COMPUTE_DTYPES, resolve_config
from bench_data import medmnist_file
from utilisation import Utilisation, counted_flops, matmul_peak

SHARED = medmnist_file("breastmnist_64.npz")


def real_images(size: int, count: int) -> np.ndarray:
    """(count, 3, size, size) float32 in [0, 1]: BreastMNIST-64 as RGB when present, else smooth noise."""
    if SHARED.is_file():
        with np.load(SHARED) as arrays:
            grey = arrays["train_images"][:count].astype(np.float32) / 255
        x = torch.from_numpy(grey)[:, None].repeat(1, 3, 1, 1)
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False) if size != grey.shape[-1] else x
        return x.numpy()
    rng = np.random.default_rng(0)
    return rng.random((count, 3, size, size), dtype=np.float32)


def write_png_folder(images: np.ndarray, root: Path) -> Path:
    from PIL import Image

    (root / "all").mkdir(parents=True)
    for i, img in enumerate(images):
        Image.fromarray((np.moveaxis(img, 0, -1) * 255).round().astype(np.uint8)).save(root / "all" / f"{i}.png")
    return root


def example_loader(folder: Path, size: int, batch: int):
    """The DCGAN example's data path: PNG decoding in two DataLoader workers."""
    import torchvision.datasets as dset
    import torchvision.transforms as transforms

    dataset = dset.ImageFolder(root=str(folder), transform=transforms.Compose([
        transforms.Resize(size), transforms.CenterCrop(size), transforms.ToTensor(),
        transforms.Normalize((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))]))
    return torch.utils.data.DataLoader(dataset, batch_size=batch, shuffle=True, num_workers=2, drop_last=True,
                                       persistent_workers=True)


def endless(loader):
    while True:
        yield from loader


def wgan_gp_baseline_loop(model: str, width: float, folder: Path, size: int, batch: int, steps: int, warmup: int,
                          device: torch.device, critic_steps: int) -> float:
    """A plain fp32 eager WGAN-GP loop (Gulrajani et al.'s recipe: penalty 10 on every critic update,
    Adam 1e-4 with betas (0, 0.9), `.item()` every step) on medsyn's networks, with the example's data path."""
    batches = endless(example_loader(folder, size, batch))
    spec, options = ImageSpec(size, 3, 0), NetOptions(width=width)
    netG, netD = create_generator(model, spec, options).to(device), create_discriminator(model, spec, options).to(device)
    optD = torch.optim.Adam(netD.parameters(), lr=1e-4, betas=(0.0, 0.9))
    optG = torch.optim.Adam(netG.parameters(), lr=1e-4, betas=(0.0, 0.9))
    started = None
    for step in range(warmup + steps):
        if step == warmup:
            if device.type == "cuda":
                torch.cuda.synchronize()
            started = time.perf_counter()
        for _ in range(critic_steps):
            real = next(batches)[0].to(device)
            fake = netG(torch.randn(batch, 100, device=device), None).detach()
            alpha = torch.rand(batch, 1, 1, 1, device=device)
            mixed = (alpha * real + (1 - alpha) * fake).requires_grad_(True)
            (grad,) = torch.autograd.grad(netD(mixed, None)[0].sum(), mixed, create_graph=True)
            penalty = (grad.flatten(1).norm(2, dim=1) - 1).square().mean()
            loss_d = netD(fake, None)[0].mean() - netD(real, None)[0].mean() + 10 * penalty
            optD.zero_grad()
            loss_d.backward()
            optD.step()
        loss_g = -netD(netG(torch.randn(batch, 100, device=device), None), None)[0].mean()
        optG.zero_grad()
        loss_g.backward()
        optG.step()
        _ = (loss_d.item(), loss_g.item())
    if device.type == "cuda":
        torch.cuda.synchronize()
    return steps * batch / (time.perf_counter() - started)


def baseline_loop(model: str, width: float, folder: Path, size: int, batch: int, steps: int, warmup: int,
                  device: torch.device) -> float:
    """The DCGAN example's loop (its data path, BCE, .item() every step) on medsyn's networks."""
    loader = example_loader(folder, size, batch)
    spec, options = ImageSpec(size, 3, 0), NetOptions(width=width)
    netG, netD = create_generator(model, spec, options).to(device), create_discriminator(model, spec, options).to(device)
    criterion = torch.nn.BCELoss()
    optD = torch.optim.Adam(netD.parameters(), lr=2e-4, betas=(0.5, 0.999))
    optG = torch.optim.Adam(netG.parameters(), lr=2e-4, betas=(0.5, 0.999))
    done, started = 0, None
    while done < warmup + steps:
        for data, _ in loader:
            if done == warmup:
                if device.type == "cuda":
                    torch.cuda.synchronize()
                started = time.perf_counter()
            if done == warmup + steps:
                break
            real = data.to(device)
            netD.zero_grad()
            label = torch.full((batch,), 1.0, device=device)
            output = torch.sigmoid(netD(real, None)[0])
            errD_real = criterion(output, label)
            errD_real.backward()
            noise = torch.randn(batch, 100, device=device)
            fake = netG(noise, None)
            label.fill_(0.0)
            output = torch.sigmoid(netD(fake.detach(), None)[0])
            errD_fake = criterion(output, label)
            errD_fake.backward()
            optD.step()
            netG.zero_grad()
            label.fill_(1.0)
            output = torch.sigmoid(netD(fake, None)[0])
            errG = criterion(output, label)
            errG.backward()
            optG.step()
            _ = (errD_real.item() + errD_fake.item(), errG.item())  # the example prints these every step
            done += 1
    if device.type == "cuda":
        torch.cuda.synchronize()
    return steps * batch / (time.perf_counter() - started)


def medsyn_loop(model: str, width: float, images: np.ndarray, batch: int, steps: int, warmup: int,
                device: torch.device, run_dir: Path, overrides: dict) -> tuple[float, float, str]:
    """(img/s, FLOPs per image of one training step, the loop's precision)."""
    cfg, spec = resolve_config({"model": model, "width": width, "batch": batch, "device": str(device),
                                "steps": warmup + steps, "per_class": False}, overrides)
    if spec.conditioning == Conditioning.ALWAYS:  # two classes, alternating: the networks take labels
        labels, names = np.arange(len(images), dtype=np.int64) % 2, ["even", "odd"]
    else:
        labels, names = np.zeros(len(images), np.int64), ["all"]
    data = LabeledImages(images=images, labels=labels, class_names=names, source="bench", format="bench")
    trainer = GanTrainer(cfg, spec, data, run_dir, {"class_names": names})
    for _ in range(warmup):
        trainer.train_step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    started = time.perf_counter()
    for _ in range(steps):
        stats = trainer.train_step()
    float(stats["loss_g"])  # one sync at the end, as the loop syncs only at log steps
    rate = steps * batch / (time.perf_counter() - started)
    return rate, counted_flops(trainer.train_step) / batch, trainer.precision


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="dcgan", choices=MODELS.names())
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--width", type=float, default=1.0, help="channel multiplier of both networks (1 = paper)")
    parser.add_argument("--steps", type=int, default=5, help="timed steps per loop")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="medsyn config override for its loop, e.g. gp_every=4 (repeatable)")
    args = parser.parse_args(argv)
    overrides = parse_overrides(args.set)  # as `medsyn train --set`: strings that the config types
    cfg, spec = resolve_config({"model": args.model}, overrides)
    wgan_gp = str(cfg.objective).startswith("wgan-gp")
    device = torch.device(args.device)
    torch.manual_seed(0)
    images = real_images(args.size, max(4 * args.batch, 512))
    with tempfile.TemporaryDirectory() as tmp:
        folder = write_png_folder(images, Path(tmp) / "png")
        print(f"# {args.model} width {args.width} at {args.size}x{args.size}x3, batch {args.batch}, "
              f"{args.steps} timed steps after {args.warmup} warm-up, device {device}, torch {torch.__version__}, "
              f"{torch.get_num_threads()} CPU threads", flush=True)
        if spec.conditioning == Conditioning.ALWAYS:
            name, base = "none for a class-conditional model", None
        elif wgan_gp:
            name = f"plain-wgan-gp-loop ({cfg.critic_steps} critic)"
            base = wgan_gp_baseline_loop(args.model, args.width, folder, args.size, args.batch, args.steps,
                                         args.warmup, device, cfg.critic_steps)
        else:
            name = "pytorch-dcgan-example-loop"
            base = baseline_loop(args.model, args.width, folder, args.size, args.batch, args.steps, args.warmup, device)
        if base is not None:
            print(f"# baseline timed: {base:,.1f} img/s; timing medsyn", flush=True)
        ours, flops, precision = medsyn_loop(args.model, args.width, images, args.batch, args.steps, args.warmup, device,
                                             Path(tmp) / "run", overrides)
        dtype = COMPUTE_DTYPES[precision]
        use = Utilisation(flops, matmul_peak(device, dtype))
        print(use.header("one medsyn training step", dtype))
        if base is not None:
            print(f"baseline  {name:<34}  {base:,.1f} img/s  {use.describe(base)}")
        else:
            print(f"baseline  {name}")
        label = " ".join([args.model, *args.set, f"({precision})"])
        print(f"medsyn    {label:<34}  {ours:,.1f} img/s  {use.describe(ours)}")
    if base is not None:
        print(f"ratio {ours / base:.2f}")


if __name__ == "__main__":
    sys.exit(main())
