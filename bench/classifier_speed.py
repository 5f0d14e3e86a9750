"""Classifier training speed: the channels-last memory layout against the contiguous (NCHW) one, in
one process, for the classifiers the shipped studies train, at the sizes they train them.

    python bench/classifier_speed.py [--cases resnet18:28:1 densenet121:28:3 ...] [--rounds 5]
                                     [--steps 4] [--threads 2] [--device cpu] [--set amp=false]

Each case builds the registered network for (side, channels, classes), then times training steps
(forward in the classifier's autocast, its loss, backward, the entry's optimiser) on random images
with ``medsyn.evaluate.classify.measure_training_rate``, as ``medsyn study --plan`` does. The two layouts alternate round by round, so drift in the machine's speed hits both alike;
the median over rounds is printed per layout with the ratio channels-last / contiguous. The layout
a classifier trains in is its registry entry's ``channels_last`` (models/classifiers.py), which
these ratios decide.
"""
from __future__ import annotations

import argparse
import statistics
import sys

import torch

from medsyn.config import parse_overrides
from medsyn.evaluate.classify import measure_training_rate
from medsyn.models.classifiers import CLASSIFIERS, resolve_classifier_config
from medsyn.train.setup import mixed_precision, resolve_device

# (name, side, channels, classes): breast/pneumonia, retina, retina --budget full, liver phantoms
DEFAULT_CASES = ["resnet18:28:1:2", "resnet18:28:3:5", "densenet121:28:3:5", "lesion-cnn:64:1:3"]


def _case(text: str) -> tuple[str, int, int, int]:
    name, side, channels, classes = (text.split(":") + ["2"])[:4]
    return name, int(side), int(channels), int(classes)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", nargs="+", default=DEFAULT_CASES, help="NAME:SIDE:CHANNELS[:CLASSES]")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--set", nargs="*", default=[], help="classifier config overrides, e.g. amp=false")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    print(f"{args.threads} threads, {args.rounds} rounds of {args.steps} steps per layout, device {device}")
    print("classifier | side | channels | batch | precision | contiguous img/s | channels-last img/s | ratio | entry")
    for text in args.cases:
        name, side, channels, classes = _case(text)
        cfg = resolve_classifier_config(name, parse_overrides(args.set))
        precision, _ = mixed_precision(device, cfg.amp)
        rates = {torch.contiguous_format: [], torch.channels_last: []}
        for _ in range(args.rounds):
            for layout in rates:
                rates[layout].append(measure_training_rate(name, side, channels, classes, cfg, device, args.steps,
                                                           warmup=2, memory_format=layout))
        contiguous, last = (statistics.median(rates[k]) for k in rates)
        entry = "channels_last" if CLASSIFIERS.get(name).channels_last else "contiguous"
        print(f"{name} | {side} | {channels} | {cfg.batch} | {precision} | {contiguous:.1f} | {last:.1f} | "
              f"{last / contiguous:.2f} | {entry}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
