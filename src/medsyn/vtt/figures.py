"""The reader study's figures: accuracy against the baselines, confusion matrices, time per image, and the
contact sheet of synthetic images most often taken for real. Each is written atomically; nothing is computed here
that ``medsyn.vtt.stats`` did not compute (the time plot draws the answers' own seconds)."""
from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
from PIL import Image

from medsyn import atomic
from medsyn.vtt.stats import Detection, Fooling, Proportion
from medsyn.vtt.store import Answer

SHEET_COLUMNS = 4  # tiles per row of the contact sheet
LOG_TIME_SPREAD = 20  # times spanning more than this factor (a rater's coffee break) are drawn on a log axis


def _matplotlib():
    # not audit.figures' twin: importing medsyn.audit loads torch, seconds a report does not need
    import matplotlib

    matplotlib.use("Agg")  # no display: figures are files
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> Path:
    plt = _matplotlib()
    try:
        return atomic.write_with(path, lambda tmp: fig.savefig(tmp, format="png", dpi=110))
    finally:
        plt.close(fig)  # pyplot keeps every open figure alive, a failed write included


def _errorbar(ax, x: float, p: Proportion, **style) -> None:
    # clipped: at 0 of n (or n of n) the Wilson bound can land a rounding error past the estimate
    below, above = max(0.0, p.value - p.low), max(0.0, p.high - p.value)
    ax.errorbar([x], [p.value], yerr=[[below], [above]], capsize=3, linestyle="none", **style)


def _wrapped(name: str, width: int = 14) -> str:
    return "\n".join(textwrap.wrap(name, width, break_long_words=True)[:3]) or name


def accuracy_png(path: Path, names: Sequence[str], detections: Sequence[Detection]) -> Path:
    """Accuracy per rater (and pooled, last) with Wilson 95% CIs, beside sensitivity and specificity, against
    chance (0.5) and each rater's majority baseline.

    Args:
        names: x labels, one per rater then "pooled".
        detections: the real-or-synthetic statistics per label.
    """
    plt = _matplotlib()
    # the legend sits right of the axes and takes about 2.6 inches of the width
    fig, ax = plt.subplots(figsize=(max(7.0, 1.2 * len(names) + 3.6), 3.8))
    for x, d in enumerate(detections):
        first = x == 0
        _errorbar(ax, x - 0.2, d.specificity, marker="v", color="#6a9fd4", markersize=5,
                  label="specificity (real as real)" if first else None)
        _errorbar(ax, x, d.accuracy, marker="o", color="#222", markersize=7, label="accuracy" if first else None)
        _errorbar(ax, x + 0.2, d.sensitivity, marker="^", color="#d48a3a", markersize=5,
                  label="sensitivity (synthetic as synthetic)" if first else None)
        ax.hlines(max(0.5, d.baseline.accuracy), x - 0.38, x + 0.38, color="#a31515", linewidth=2,
                  label="always the majority answer" if first else None)
    ax.axhline(0.5, color="grey", linestyle="--", linewidth=1, label="chance (0.5)")
    ax.set_xticks(range(len(names)), [f"{_wrapped(name)}\n({d.accuracy.n})" for name, d in zip(names, detections)],
                  fontsize=8)
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("share correct (Wilson 95% CI)", fontsize=8)
    ax.set_title("real or synthetic: per rater and pooled (answers in brackets)", fontsize=9)
    ax.tick_params(labelsize=8)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    fig.tight_layout()
    return _save(fig, path)


def _matrix(ax, matrix: list[list[int]], labels: Sequence[str], title: str, answered: Sequence[str]) -> None:
    counts = np.asarray(matrix, dtype=float)
    # coloured by share of the row: rows (true kinds or classes) differ in size, a count scale would hide that
    shares = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
    ax.imshow(shares, cmap="Blues", vmin=0, vmax=1)
    for (i, j), count in np.ndenumerate(counts):
        ax.text(j, i, f"{int(count)}\n{100 * shares[i, j]:.0f}%", ha="center", va="center", fontsize=7,
                color="white" if shares[i, j] > 0.6 else "#222")
    crowded = sum(len(label) for label in answered) > 24  # long class names would run into each other
    ax.set_xticks(range(len(answered)), answered, fontsize=7, rotation=30 if crowded else 0,
                  ha="right" if crowded else "center")
    ax.set_yticks(range(len(labels)), labels, fontsize=7)
    ax.set_xlabel("answered", fontsize=8)
    ax.set_ylabel("true", fontsize=8)
    ax.set_title(title, fontsize=8)


def confusion_png(path: Path, panels: Sequence[tuple[str, list[list[int]], Sequence[str]]]) -> Path:
    """Confusion matrices side by side (rows: truth, columns: answer), each cell count and share of its row.

    Args:
        panels: (title, matrix, labels) per panel; labels name both the rows and the columns.
    """
    plt = _matplotlib()
    side = max(2.6, 0.55 * max(len(labels) for _, _, labels in panels) + 1.2)
    fig, axes = plt.subplots(1, len(panels), figsize=(side * len(panels), side), squeeze=False)
    for ax, (title, matrix, labels) in zip(axes[0], panels):
        _matrix(ax, matrix, labels, title, labels)
    fig.tight_layout()
    return _save(fig, path)


def time_png(path: Path, answers: Sequence[Answer]) -> Path:
    """Seconds per image for each rater: box (quartiles), whiskers (1.5 IQR), median line and mean triangle."""
    plt = _matplotlib()
    raters = list(dict.fromkeys(a.rater for a in answers))
    seconds = [[a.seconds for a in answers if a.rater == r and a.seconds is not None] for r in raters]
    kept = [(r, s) for r, s in zip(raters, seconds) if s]
    fig, ax = plt.subplots(figsize=(max(4.5, 1.0 * len(kept) + 2.0), 3.4))
    if kept:
        ax.boxplot([s for _, s in kept], showmeans=True, widths=0.5)
        ax.set_xticks(range(1, len(kept) + 1), [f"{r}\n({len(s)})" for r, s in kept], fontsize=8)
        flat = np.concatenate([np.asarray(s) for _, s in kept])
        positive = flat[flat > 0]
        if len(positive) and positive.max() / positive.min() > LOG_TIME_SPREAD:
            ax.set_yscale("log")
    ax.set_ylabel("seconds per image", fontsize=8)
    ax.set_title("time to answer (answers timed per rater in brackets)", fontsize=9)
    ax.tick_params(labelsize=8)
    fig.tight_layout()
    return _save(fig, path)


def _load(path: Path) -> np.ndarray | None:
    if not path.is_file():  # a study folder whose images/ was pruned: the tile says so, the report still comes
        return None
    with Image.open(path) as image:
        pixels = np.asarray(image)
    # 16-bit grey PNGs hold up to 65535; everything else served is 8-bit
    return pixels / (65535.0 if pixels.dtype == np.uint16 else 255.0)


def _short(text: str, width: int = 26) -> str:
    return text if len(text) <= width else "…" + text[-(width - 1):]


def fooled_png(path: Path, fooled: Sequence[Fooling], image_file: Callable[[str], Path],
               class_names: Sequence[str]) -> Path:
    """Contact sheet of the synthetic images most often answered "real", most convincing first; each tile says
    how many of the raters who saw it took it for real, its generator and its class (``class_names``: a name
    for every class index)."""
    plt = _matplotlib()
    rows = -(-len(fooled) // SHEET_COLUMNS)
    columns = min(SHEET_COLUMNS, len(fooled))
    fig, axes = plt.subplots(rows, columns, figsize=(columns * 2.1, rows * 2.45 + 0.8), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for rank, (ax, item) in enumerate(zip(axes.flat, fooled), start=1):
        pixels = _load(image_file(item.image_id))
        if pixels is None:
            ax.text(0.5, 0.5, "image file missing", ha="center", va="center", fontsize=7, transform=ax.transAxes)
        else:
            ax.imshow(pixels, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
        ax.set_title(f"#{rank}: {item.taken_real} of {item.raters} said real\n{_short(item.generator or '?')}\n"
                     f"{_short(class_names[item.class_index])} · {item.image_id}", fontsize=6.5)
    fig.suptitle("synthetic images most often taken for real", fontsize=9)
    height = fig.get_size_inches()[1]
    # fixed margins, as the audit's contact sheet: tight_layout measures every tile's text
    # top: the suptitle plus the first row's three-line titles
    fig.subplots_adjust(left=0.02, right=0.98, bottom=0.02, top=1 - 0.8 / height, wspace=0.1, hspace=0.45)
    return _save(fig, path)
