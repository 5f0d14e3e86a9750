"""The audit unit of a study: every generator's synthetic set on every fold, checked for copies of the
fold's training images and for what it gives away about who was in training (``medsyn.audit``).

The fold's training images are what the study's generators learnt from; its test images, which no
generator saw, calibrate what a new image's distance looks like. The full audit (audit.html, the
closest pairs, copies.csv) lands in ``audits/<generator>/fold<k>`` (``.../fold<k>/seed<s>`` with
generator seeds); the unit keeps its summary.
"""
from __future__ import annotations

import time

import numpy as np

from medsyn.study.folds import Fold, take_rows


def audit_unit(runner, gen_name: str, fold: Fold, gseed: int | None = None) -> None:
    """Run (or find on disk) the audit of ``gen_name``'s synthetic set on ``fold`` (of generator seed ``gseed``)."""
    slot = runner.slot(fold.index, gseed)
    key = f"audit/{gen_name}/{slot}"
    if runner.store.has(key):
        runner._tick()
        return
    from medsyn.atomic import atomic_dir
    from medsyn.audit import audit_sets, write_audit
    from medsyn.metrics.cache import FeatureCache
    from medsyn.metrics.features import InceptionExtractor
    from medsyn.train.setup import resolve_device

    runner.on_unit(f"audit {gen_name} {runner.slot_label(fold.index, gseed)}")
    started = time.perf_counter()
    synthetic = take_rows(runner.synthetic_set(gen_name, fold.index, gseed), runner.cfg.audit.max_images,
                          seed=fold.index)
    progress = runner._image_progress("audit", len(synthetic) + len(fold.train) + len(fold.test))
    result = audit_sets(synthetic, fold.train, fold.test, InceptionExtractor(),
                        cache=FeatureCache(runner.out / "cache"),  # the FID unit's features, reused
                        device=resolve_device(runner.cfg.device), seed=fold.index,
                        track=lambda label, total: progress)
    folder = runner.out / "audits" / gen_name / slot
    folder.parent.mkdir(parents=True, exist_ok=True)
    with atomic_dir(folder, replace_existing=True) as tmp:  # a crash mid-write leaves the last full audit
        write_audit(tmp, result, synthetic.images, fold.train.images,
                    {"study": str(runner.out), "generator": gen_name, "fold": fold.index, "generator_seed": gseed})
    runner.store.save(key, summary(result, gen_name, fold.index, slot, time.perf_counter() - started))
    runner._tick()


def summary(result, gen_name: str, fold: int, slot: str, seconds: float) -> dict:
    """What the study's tables need from one audit."""
    overall = (result.fidelity or {}).get("overall") or {}
    return {"generator": gen_name, "fold": fold, "verdict": result.verdict(),
            "synthetic": int(len(result.copies)), "copies": int(result.copies.sum()),
            "threshold": float(result.pixels.copy_threshold), "authenticity": float(result.pixels.authentic.mean()),
            "membership": [m.to_json() for m in result.membership],
            **{name: float(overall[name]) if name in overall else float("nan")
               for name in ("precision", "recall", "density", "coverage")},
            "folder": f"audits/{gen_name}/{slot}/audit.html", "seconds": seconds}


def audit_rows(units: list[dict]) -> list[dict]:
    """One row per generator: copies summed over folds (and generator seeds), the other numbers averaged."""
    rows = []
    for gen in sorted({u["generator"] for u in units}):
        items = sorted((u for u in units if u["generator"] == gen), key=lambda u: (u["fold"], u["folder"]))
        attacks = {(m["attack"], m["space"]) for u in items for m in u["membership"]}
        membership = {f"{attack} ({space})": float(np.mean([m["auc"] for u in items for m in u["membership"]
                                                            if (m["attack"], m["space"]) == (attack, space)]))
                      for attack, space in sorted(attacks)}
        rows.append({"generator": gen, "copies": sum(u["copies"] for u in items),
                     "synthetic": sum(u["synthetic"] for u in items),
                     **{name: float(np.nanmean([u[name] for u in items])) if any(np.isfinite(u[name]) for u in items)
                        else float("nan") for name in ("precision", "recall", "density", "coverage", "authenticity")},
                     "membership_auc": membership, "folders": [u["folder"] for u in items],
                     "verdicts": [u["verdict"] for u in items]})
    return rows
