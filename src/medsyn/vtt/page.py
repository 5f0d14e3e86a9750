"""report.html of a reader study: the verdict, its rule, the tables and the figures in one self-contained page.

No number is computed here; everything shown is in ``VttResult`` (and so in vtt.json). Every name a person
typed (raters, generators, origins) is escaped.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Sequence

from medsyn import atomic
from medsyn.report import CSS, _esc, _image, _num, _table
from medsyn.vtt.report import VttResult
from medsyn.vtt.stats import ALPHA, FOOLING_SHOWN, VERDICT_RULE, GroupRow, Proportion

DASH = "–"
KAPPA_NAMES = {"Cohen": "Cohen's kappa", "Fleiss": "Fleiss' kappa"}


def _ci(p: Proportion) -> str:
    if p.n == 0:
        return DASH
    return f"{p.value:.3f} <small>[{p.low:.3f}, {p.high:.3f}]</small>"


def _kn(p: Proportion) -> str:
    return f"{p.k}/{p.n}" if p.n else DASH


def _p(value: float) -> str:
    return DASH if value is None or math.isnan(value) else _num(float(value))


def _float(value: float, digits: int = 1) -> str:
    return DASH if math.isnan(value) else f"{value:.{digits}f}"


def _matrix(matrix: list[list[int]], labels: Sequence[str]) -> str:
    return _table(["true \\ answered", *map(_esc, labels)],
                  [[_esc(label), *map(str, row)] for label, row in zip(labels, matrix)])


def _study(result: VttResult) -> str:
    images, settings = result.images, result.settings
    generators = ", ".join(f"{_esc(g)} ({n})" for g, n in images["per_generator"].items()) or DASH
    raters = ", ".join(f"{_esc(r.rater)} ({r.answered} of {r.total})" for r in result.raters)
    unfinished = [r.rater for r in result.raters if r.answered < r.total]
    notes = []
    if unfinished:
        notes.append(f"Unfinished sessions ({_esc(', '.join(unfinished))}) are included with the images answered so "
                     "far; each rater's baseline is computed on their own answered images.")
    if result.waiting:
        notes.append(f"Invited but no answer yet: {_esc(', '.join(result.waiting))} (left out).")
    real_share = images["real"] / images["total"] if images["total"] else math.nan
    return (f"<p>{images['total']} images: {images['real']} real, {images['synthetic']} synthetic (real share "
            f"{_float(real_share, 2)}); classes {_esc(', '.join(result.classes))}; generators {generators}; "
            f"class question {'asked' if settings.get('ask_class') else 'not asked'}. "
            f"Raters (answered of their images): {raters}.</p>"
            + "".join(f"<p class='note'>{n}</p>" for n in notes))


def _detection(result: VttResult) -> str:
    headers = ["rater", "answered", "accuracy [95% CI]", "always the majority", "p vs 0.5", "p vs majority",
               "Holm p", "sensitivity (synthetic as synthetic)", "specificity (real as real)"]
    rows = []
    for name, answered, d, holm in ([(_esc(r.rater), f"{r.answered} of {r.total}", r.detection, r.p_holm)
                                     for r in result.raters]
                                    + [("<i>pooled</i>", str(result.pooled.accuracy.n), result.pooled, math.nan)]):
        # marked: this rater beat the majority (the verdict's test)
        adjusted = f"<span class='hurt'>{_p(holm)}</span>" if holm < ALPHA else _p(holm)
        rows.append([name, answered, _ci(d.accuracy), f"{d.baseline.accuracy:.3f} ({_esc(d.baseline.answer)})",
                     _p(d.p_chance), _p(d.p_baseline), adjusted,
                     f"{_ci(d.sensitivity)} {_kn(d.sensitivity)}", f"{_ci(d.specificity)} {_kn(d.specificity)}"])
    counts = [[_esc(r.rater), *(str(c) for row in r.detection.confusion for c in row)] for r in result.raters]
    counts.append(["<i>pooled</i>", *(str(c) for row in result.pooled.confusion for c in row)])
    return ("<h2>Real or synthetic, per rater</h2><p>Accuracy with its Wilson 95% interval. Positive: synthetic. "
            "p-values: one-sided exact binomial tests that the accuracy is above 0.5, and above always giving the "
            "majority answer on the images that rater answered (the verdict's test; Holm-adjusted across raters). "
            "The pooled row counts every answer once, but raters saw the same images, so its answers are not "
            "independent: its p-values are descriptive and the verdict rests on the per-rater tests.</p>"
            + _table(headers, rows)
            + _table(["rater", "real answered real", "real answered synthetic", "synthetic answered real",
                      "synthetic answered synthetic"], counts))


def _group_table(rows: Sequence[GroupRow], raters: Sequence[str], first: str, split: bool) -> str:
    headers = [first, "images", "answers", "accuracy [95% CI]"]
    headers += ["real as real", "synthetic as synthetic"] if split else []
    headers += [_esc(r) for r in raters]
    body = []
    for row in rows:
        cells = [_esc(row.group), str(row.images), str(row.accuracy.n), _ci(row.accuracy)]
        cells += [f"{_ci(row.real_as_real)} {_kn(row.real_as_real)}",
                  f"{_ci(row.synthetic_as_synthetic)} {_kn(row.synthetic_as_synthetic)}"] if split else []
        cells += [(f"{p.value:.2f} ({_kn(p)})" if (p := row.per_rater.get(r)) else DASH) for r in raters]
        body.append(cells)
    return _table(headers, body)


def _groups(result: VttResult) -> str:
    raters = [r.rater for r in result.raters]
    parts = ["<h2>Per class</h2><p>The real-or-synthetic question on each class's images, all raters together; "
             "per rater: accuracy (correct/answered).</p>" + _group_table(result.per_class, raters, "class", True)]
    if len(result.generators) > 1:
        parts.append("<h2>Per generator</h2><p>Real images are their own row (accuracy: answered real); on a "
                     "generator's images accuracy is the share answered synthetic, so the lower, the more "
                     "convincing.</p>" + _group_table(result.per_generator, raters, "set", False))
    return "".join(parts)


def _classes(result: VttResult) -> str:
    pooled = result.pooled_classes
    if pooled is None:
        return ""
    names = result.classes
    rows = [[_esc(r.rater), _ci(r.classes.accuracy), _ci(r.classes.on_real), _ci(r.classes.on_synthetic)]
            for r in result.raters if r.classes is not None]
    rows.append(["<i>pooled</i>", _ci(pooled.accuracy), _ci(pooled.on_real), _ci(pooled.on_synthetic)])
    per_rater = "".join(f"<h4>{_esc(r.rater)}</h4>" + _matrix(r.classes.confusion, names)
                        for r in result.raters if r.classes is not None)
    return ("<h2>Class question</h2><p>Share of images whose class the rater named correctly (Wilson 95% CI), on "
            "all images and split by kind: a generator whose images carry their class as recognisably as real ones "
            "scores alike on both.</p>"
            + _table(["rater", "class accuracy", "on real images", "on synthetic images"], rows)
            + "<h3>Confusion, all raters (rows: true class, columns: answer)</h3>"
            + "<div class='grids'>" + "".join(f"<figure>{_matrix(m, names)}<figcaption>{t}</figcaption></figure>"
                                              for t, m in (("all images", pooled.confusion),
                                                           ("real images", pooled.confusion_real),
                                                           ("synthetic images", pooled.confusion_synthetic)))
            + f"</div><details><summary>per rater</summary>{per_rater}</details>")


def _agreement(result: VttResult) -> str:
    rows = [[_esc(a.question), KAPPA_NAMES.get(a.method, DASH), _esc(", ".join(a.raters)),
             str(a.images), _p(a.kappa), _esc(a.note)] for a in result.agreement]
    return ("<h2>Agreement between raters</h2><p>Cohen's kappa for two raters, Fleiss' kappa for more, on the "
            "images every one of them answered (0: no more agreement than chance, 1: full agreement).</p>"
            + _table(["question", "measure", "raters", "images", "kappa", "note"], rows, left=3))


def _time(result: VttResult) -> str:
    rows = [[_esc(r.rater), str(r.timing.timed), _float(r.timing.mean, 2), _float(r.timing.median, 2),
             _float(r.mean_confidence, 2)] for r in result.raters]
    t = result.pooled_timing
    rows.append(["<i>pooled</i>", str(t.timed), _float(t.mean, 2), _float(t.median, 2), DASH])
    return ("<h2>Time per image</h2>"
            + _table(["rater", "timed answers", "mean seconds", "median seconds", "mean confidence (1-5)"], rows))


def _fooled(result: VttResult, figures: dict[str, Path]) -> str:
    if not result.fooling:
        return "<h2>Synthetic images taken for real</h2><p>None: every synthetic image was answered synthetic.</p>"
    rows = [[str(rank), _esc(f.image_id), _esc(f.generator or DASH),
             _esc(result.classes[f.class_index]),
             _esc(f.origin), f"{f.taken_real} of {f.raters}"] for rank, f in enumerate(result.fooling, start=1)]
    return (f"<h2>Synthetic images taken for real</h2><p>Up to {FOOLING_SHOWN}, by share of the raters who saw them "
            "answering real, then by count. The files are in the study's images/ folder.</p>"
            + _image(figures["fooled"], "synthetic images most often taken for real")
            + _table(["#", "image", "generator", "class", "origin", "answered real"], rows, left=5))


def write_page(path: Path, result: VttResult, figures: dict[str, Path]) -> Path:
    """Write report.html; the PNGs in ``figures`` (written before) are embedded, so the page opens anywhere."""
    verdict = result.verdict
    page = ("<!doctype html><html><head><meta charset='utf-8'><title>medsyn reader study</title>"
            f"<style>{CSS}</style></head><body><h1>Reader study: {_esc(result.study)}</h1>"
            f"<p class='{'hurt' if verdict.could_tell else 'helped'}'>{_esc(verdict.text)}</p>"
            f"<p class='note'>Verdict rule: {_esc(VERDICT_RULE)}.</p>" + _study(result)
            + _detection(result) + _image(figures["accuracy"], "accuracy per rater")
            + _groups(result) + _classes(result) + _agreement(result)
            + "<h2>Confusion matrices</h2><p>All raters together; each cell: answers and share of its row.</p>"
            + _image(figures["confusion"], "confusion matrices")
            + _time(result) + _image(figures["time"], "time per image") + _fooled(result, figures)
            + "<h2>Files</h2><p>answers.csv: every answer, one row each; vtt.json: every number on this page.</p>"
            + "</body></html>")
    return atomic.write_text(path, page)
