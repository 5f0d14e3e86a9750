"""audit.html: the verdict, the tables and the figures in one self-contained page (figures as base64)."""
from __future__ import annotations

import math
from pathlib import Path

from medsyn.audit.fidelity import METRICS
from medsyn.audit.memorisation import COPY_RULE
from medsyn.audit.result import AuditResult
from medsyn.report import CSS, _esc, _image, _table

COPIES_LISTED = 100  # copies listed in the page; copies.csv holds all of them


def _num(value, digits: int = 4) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return f"{value:.{digits}g}" if isinstance(value, float) else _esc(value)


def _fidelity(result: AuditResult) -> str:
    if result.fidelity is None:
        return "<p class='note'>No feature network: no precision, recall, density or coverage.</p>"
    k = result.fidelity["k"]
    rows = [["all classes", *(_num((result.fidelity["overall"] or {}).get(m), 3) for m in METRICS)]]
    for name, scores in result.fidelity["per_class"].items():
        rows.append([_esc(name), *(_num((scores or {}).get(m), 3) for m in METRICS)])
    return (f"<h2>Fidelity and diversity ({_esc(result.feature_name)} features)</h2>"
            f"<p>Precision and recall (k = {k['precision_recall']}), density and coverage "
            f"(k = {k['density_coverage']}) "
            "of the synthetic images against the training images; per class, synthetic class k against real class k "
            "(– where a class is too small).</p>" + _table(["", *METRICS], rows))


def _memorisation(result: AuditResult) -> str:
    spaces = [result.pixels] + ([result.features] if result.features is not None else [])
    headers = ["space", "held-out 1st percentile", "held-out minimum", "held-out median", "synthetic median",
               "synthetic below 1st percentile (close)", "below half of it (copies in pixels)", "below minimum",
               "authenticity"]
    rows = []
    for space in spaces:
        s = space.summary()
        rows.append([_esc(space.space), _num(s["threshold_held_out_p1"]), _num(s["held_out_minimum"]),
                     _num(s["held_out_median"]), _num(s["synthetic_median"]),
                     f"{s['below_threshold']} ({100 * s['share_below_threshold']:.1f}%)",
                     f"{s['below_copy_threshold']} ({100 * s['share_below_copy_threshold']:.1f}%)", str(s["below_minimum"]),
                     f"{s['authenticity']:.3f}"])
    per_class = [[_esc(name), str(row["synthetic"]), str(row["copies"]), _num(100 * row["share"], 3) + "%"]
                 for name, row in result.per_class().items()]
    ssim = result.ssim_threshold()
    ssim_note = ("" if ssim is None else
                 f" The held-out 1st percentile of 1 - SSIM is {ssim:.4g} (reported, not decided on).")
    return ("<h2>Memorisation</h2>"
            f"<p>Distance of every synthetic image to its nearest training image, calibrated by the same distance of "
            f"held-out images. Rule: {_esc(COPY_RULE)}.{ssim_note} Authenticity (Alaa et al. 2022): share of synthetic "
            "images farther from their nearest training image than that image is from its nearest other one.</p>"
            + _table(headers, rows) + _table(["class", "synthetic", "copies", "share"], per_class))


def _membership(result: AuditResult) -> str:
    rows = [[_esc(m.attack), _esc(m.space), f"{m.auc:.3f}", f"[{m.ci_low:.3f}, {m.ci_high:.3f}]", str(m.members),
             str(m.non_members)] for m in result.membership]
    return ("<h2>Membership inference</h2><p>ROC AUC of telling training images (members) from held-out images "
            "(non-members); 0.5: no leak. GAN-Leaks (Chen et al. 2020) scores an image by its distance to the nearest "
            "synthetic image; LOGAN (Hayes et al. 2019) by the run's discriminator. 95% bootstrap intervals.</p>"
            + _table(["attack", "scores", "AUC", "95% CI", "members", "non-members"], rows, left=2))


def _copies(result: AuditResult) -> str:
    rows = result.copy_rows()
    if not rows:
        return "<h2>Copies</h2><p>None.</p>"
    shown = [[_esc(r["image"]), _esc(r["class"]), str(r["nearest_train"]), _num(r["pixel_distance"]),
              "yes" if r["flipped"] else "", _esc(r["shift"]), _num(r["ssim_distance"]),
              _num(r.get("feature_distance"))]
             for r in rows[:COPIES_LISTED]]
    more = f"<p>{len(rows) - COPIES_LISTED} more in copies.csv.</p>" if len(rows) > COPIES_LISTED else ""
    return ("<h2>Copies</h2>" + _table(["image", "class", "nearest train", "pixel distance", "flipped", "shift",
                                        "1 - SSIM", "feature distance"], shown, left=2) + more)


def write_page(path: Path, result: AuditResult, pairs_png: Path, distances_png: Path) -> Path:
    """Write the page; the two PNGs (written before) are embedded."""
    from medsyn import atomic

    sizes, sources = result.sizes, result.sources
    notes = "".join(f"<p class='note'>{_esc(w)}</p>" for w in result.warnings)
    page = ("<!doctype html><html><head><meta charset='utf-8'><title>medsyn audit</title>"
            f"<style>{CSS}</style></head><body><h1>medsyn audit</h1><p><b>{_esc(result.verdict())}</b></p>{notes}"
            f"<p>Synthetic: {sizes['synthetic']} images ({_esc(sources['synthetic'])}); training: {sizes['train']} "
            f"({_esc(sources['train'])}); held-out: {sizes['held_out']} ({_esc(sources['held_out'])}).</p>"
            + _fidelity(result) + _memorisation(result) + _membership(result)
            + "<h2>Closest pairs</h2>" + _image(pairs_png, "closest synthetic/training pairs")
            + "<h2>Nearest distances</h2>" + _image(distances_png, "distance histograms")
            + _copies(result) + "</body></html>")
    return atomic.write_text(path, page)
