"""Plot FID ratio against training minutes from the quality.json files that bench/quality.py writes.

    python bench/quality_curves.py RUN_A RUN_B ... --out curves.png [--title T] [--target 1.25]
    python bench/quality_curves.py RUN_A RUN_B ... --table

Each run folder (or quality.json path) becomes one line, labelled by its data, model and seed;
a dashed line marks ratio 1 (the real-vs-real floor), and ``--target`` draws the target ratio.
``--table`` prints a Markdown row per run instead: its final evaluation and its best ratio.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from medsyn.atomic import write_with  # noqa: E402


def load(path: Path) -> dict:
    path = path / "quality.json" if path.is_dir() else path
    return json.loads(path.read_text())


def label(report: dict) -> str:
    config = report.get("config", {})
    model = config.get("model", "?")
    args = report["arguments"]
    given = " ".join(filter(None, [f"--model {args['model']}" if args.get("model") else "",
                                   f"--config {args['config']}" if args.get("config") else "",
                                   *(f"--set {s}" for s in args.get("set_") or [])])) or "the recipe"
    return f"{Path(report['data']).stem} {model} ({given}) seed {config.get('seed', '?')}"


def plot(reports: list[dict], out: Path, title: str, targets: list[float]) -> None:
    fig, ax = plt.subplots(figsize=(7, 4.2), dpi=110)
    for report in reports:
        points = report["evaluations"]
        ax.plot([p["minutes"] for p in points], [p["ratio"] for p in points], marker="o", label=label(report))
    ax.axhline(1.0, color="grey", linestyle="--", linewidth=1, label="real-vs-real floor")
    for target in targets:
        ax.axhline(target, color="black", linestyle=":", linewidth=1, label=f"target {target:g}")
    ax.set_xlabel("training minutes (2-core CPU)")
    ax.set_ylabel("FID / floor")
    ax.set_title(title)
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    try:
        write_with(out, lambda tmp: fig.savefig(tmp, format="png"), suffix=".png")
    finally:
        plt.close(fig)


def table(reports: list[dict]) -> str:
    """Markdown rows: data, model, seed, the final evaluation's numbers, and the best ratio on the way."""
    nan = float("nan")
    lines = ["| run | minutes | steps | FID | floor | ratio | best ratio (at min) | precision | recall | diversity "
             "| pattern (real) |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for report in reports:
        last = report["evaluations"][-1]
        best = min(report["evaluations"], key=lambda e: e["ratio"])
        lines.append(f"| {label(report)} | {last['minutes']:.1f} | {last['step']} | {last['fid']:.2f} | "
                     f"{last['floor']:.2f} | {last['ratio']:.3f} | {best['ratio']:.3f} ({best['minutes']:.0f}) | "
                     f"{last['precision']:.3f} | {last['recall']:.3f} | {last.get('diversity', nan):.2f} | "
                     f"{last.get('pattern', nan):.2f} ({last.get('pattern_real', nan):.2f}) |")  # runs before 'pattern': nan
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path, help="run folders (or quality.json files) of bench/quality.py")
    parser.add_argument("--out", type=Path, help="PNG to write (the plot)")
    parser.add_argument("--table", action="store_true", help="print a Markdown table instead of plotting")
    parser.add_argument("--title", default="time to quality")
    parser.add_argument("--target", type=float, action="append", default=[])
    args = parser.parse_args(argv)
    reports = [load(run) for run in args.runs]
    if args.table:
        print(table(reports))
        return 0
    if args.out is None:
        parser.error("--out PNG is needed to plot (or pass --table)")
    plot(reports, args.out, args.title, args.target)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
