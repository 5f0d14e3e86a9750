"""results.json -> report.html: tables, volume curves, sample grids and t-SNE in one self-contained file.

No measurement happens here; everything shown was computed by the study and stored in results.json.
"""
from __future__ import annotations

import base64
import html
import json
from pathlib import Path
from typing import Any

import yaml

from medsyn import atomic
from medsyn.metrics.classification import one_class_warning

CSS = """
body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:1em 0;font-size:14px}th,td{border:1px solid #ccc;padding:4px 8px;text-align:right}
th{background:#f3f3f3}td.l,th.l{text-align:left}.helped{color:#0a6b2b;font-weight:600}.hurt{color:#a31515;font-weight:600}
.none{color:#555}.note{background:#fff8e0;border-left:4px solid #e0b000;padding:.5em 1em}img{max-width:100%}
.grids{display:flex;flex-wrap:wrap;gap:1em}.grids figure{margin:0}pre{background:#f6f6f6;padding:1em;overflow:auto;font-size:12px}
"""


def _esc(value: Any) -> str:
    return html.escape(str(value))


def _num(value: Any, digits: int = 3) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.{digits}f}" if abs(value) >= 10 ** -digits or value == 0 else f"{value:.2e}"
    return _esc(value)


def _with_ci(row: dict, metric: str) -> str:
    lo, hi = row[f"{metric}_ci"]
    return f"{row[metric]:.3f} <small>[{lo:.3f}, {hi:.3f}]</small>"


def _per_class(row: dict, metric: str) -> str:
    """One value per class, each with its interval where the results have them (older ones do not)."""
    cis = row.get(f"{metric}_ci") or [None] * len(row[metric])
    return " / ".join(f"{v:.2f}" + (f" <small>[{ci[0]:.2f}, {ci[1]:.2f}]</small>" if ci else "")
                      for v, ci in zip(row[metric], cis))


def _table(headers: list[str], rows: list[list[str]], left: int = 1) -> str:
    head = "".join(f"<th class='l'>{h}</th>" if i < left else f"<th>{h}</th>" for i, h in enumerate(headers))
    body = "".join("<tr>" + "".join(f"<td class='l'>{c}</td>" if i < left else f"<td>{c}</td>"
                                    for i, c in enumerate(r)) + "</tr>" for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _image(path: Path, alt: str) -> str:
    """An image embedded as base64, so the report is one file that opens anywhere."""
    if not path.is_file():
        return f"<p class='note'>missing figure: {_esc(path.name)}</p>"
    data = base64.b64encode(path.read_bytes()).decode()
    return f"<img alt='{_esc(alt)}' src='data:image/png;base64,{data}'>"


def _arms_section(results: dict) -> str:
    parts = ["<h2>Classification per arm</h2><p>Pooled test predictions (every test image once). "
             "95% CI: percentile bootstrap resampling the test images and, with several seeds, the seeds. "
             "Model selection on validation AUC, never on test.</p>"]
    classifiers = sorted({r["classifier"] for r in results["arms"]})
    for clf in classifiers:
        rows = [r for r in results["arms"] if r["classifier"] == clf]
        table_rows = [[_esc(r["label"]), str(r["n_train"]), *(_with_ci(r, m) for m in ("accuracy", "precision", "recall", "auc")),
                       _per_class(r, "sensitivity"), _per_class(r, "specificity")]
                      for r in rows]
        parts.append(f"<h3>{_esc(clf)}</h3>" + _table(
            ["arm", "train images", "Acc", "Pre", "Rec", "AUC", "sensitivity per class", "specificity per class"], table_rows))
        parts += [f"<p class='note'>Warning: arm {_esc(r['label'])}: {_esc(w)}.</p>" for r in rows
                  if (w := one_class_warning(r["confusion"], results["data"]["classes"]))]
    return "".join(parts) + _differences_section(results)


def _classic_sweep_section(results: dict, out: Path) -> str:
    """The classic arm at every number of copies, the copies chosen per fold, and on what data."""
    sweep = results.get("classic_sweep")
    if not sweep:
        return ""
    choice = [[_esc(c["classifier"]), str(c["fold"]), str(c["copies"]), f"{c['val_accuracy']:.3f}", str(c["n_val"])]
              for c in sweep["choice"]]
    rows = [[_esc(r["classifier"]), str(r["copies"]), f"{r['val_accuracy']:.3f}",
             " / ".join(f"{v:.3f}" for v in r["val_accuracy_per_fold"]),
             ", ".join(map(str, r["chosen_on_folds"])) or "–", f"{r['test_accuracy']:.3f}", f"{r['test_auc']:.3f}",
             " / ".join(map(str, r["n_train"]))] for r in sweep["rows"]]
    figures = "".join(_image(out / "figures" / f"classic_sweep_{clf}.png", f"classic sweep {clf}")
                      for clf in sorted({r["classifier"] for r in sweep["rows"]}))
    return ("<h2>Classic augmentation sweep</h2><p>As the liver-lesion paper (Frid-Adar et al. 2018) chose its "
            f"classic set: the classic arm was trained with {', '.join(map(str, sweep['values']))} augmented copies "
            f"per real image, and for each classifier and fold the number with the best {_esc(sweep['metric'])} "
            f"on {_esc(sweep['chosen_on'])} (ties: {_esc(sweep['tie_break'])}) was chosen. Every arm with classic "
            "augmentation (classic, classic+synthetic) uses that choice. Test images played no part in it; "
            "the pooled test scores are shown for information only.</p>"
            + _table(["classifier", "fold", "copies chosen", "validation accuracy", "validation images"], choice, left=1)
            + _table(["classifier", "copies", "val accuracy (mean of folds)", "val accuracy per fold", "chosen on folds",
                      "test accuracy", "test AUC", "train images per fold"], rows) + figures)


def _save_legended(fig, ax, path: Path) -> Path:
    """Add the legend, write the figure atomically and close it (pyplot keeps every open figure
    alive, a failed write included)."""
    import matplotlib.pyplot as plt

    ax.legend(fontsize=8)
    fig.tight_layout()
    try:
        return atomic.write_with(path, lambda tmp: fig.savefig(tmp, format="png", dpi=110))
    finally:
        plt.close(fig)


def plot_classic_sweep(results: dict, out: Path) -> list[Path]:
    """Accuracy against classic copies, one figure per classifier: validation per fold with the
    chosen number marked, and the pooled test accuracy for information."""
    sweep = results.get("classic_sweep")
    if not sweep:
        return []
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    for clf in sorted({r["classifier"] for r in sweep["rows"]}):
        rows = sorted((r for r in sweep["rows"] if r["classifier"] == clf), key=lambda r: r["copies"])
        copies = [r["copies"] for r in rows]
        fig, ax = plt.subplots(figsize=(6, 4))
        for i, fold in enumerate(sorted({c["fold"] for c in sweep["choice"] if c["classifier"] == clf})):
            val = [r["val_accuracy_per_fold"][i] for r in rows]
            line = ax.plot(copies, val, marker="o", label=f"validation, fold {fold}")[0]
            chosen = next(c for c in sweep["choice"] if (c["classifier"], c["fold"]) == (clf, fold))
            ax.plot([chosen["copies"]], [chosen["val_accuracy"]], marker="*", markersize=16, color=line.get_color(),
                    linestyle="none", label=f"chosen, fold {fold}: {chosen['copies']}")
        ax.plot(copies, [r["test_accuracy"] for r in rows], linestyle="--", color="grey", marker="s",
                label="test, pooled (not used to choose)")
        ax.set(xlabel="classic copies per real image", ylabel="accuracy", title=f"{clf}: classic augmentation sweep",
               xticks=copies)
        written.append(_save_legended(fig, ax, out / "figures" / f"classic_sweep_{clf}.png"))
    return written


def _delta_ci(delta: float, ci: list[float] | None) -> str:
    if ci is None:
        return f"{delta:+.3f}"
    return f"{delta:+.3f} <small>[{ci[0]:+.3f}, {ci[1]:+.3f}]</small>"


def _verdict_class(verdict: str) -> str:
    return verdict if verdict in ("helped", "hurt") else "none"


def _answer_table(results: dict) -> str:
    """Per classifier, the augmented arm chosen on validation AUC against real and classic (medsyn.study.answer)."""
    from medsyn.study.answer import answer_rows

    rows = []
    for r in answer_rows(results):
        cells = [_esc(r["classifier"]), f"{_esc(r['arm'])} (of {r['candidates']})", _num(r["auc"]), _num(r["real_auc"])]
        for reference in ("real", "classic"):
            d = r[reference]
            cells += ["–", "–", "no such arm"] if d is None else [
                _delta_ci(d["delta_auc"], d["delta_auc_ci"]), _num(d["p_holm"]),
                f"<span class='{_verdict_class(d['verdict'])}'>{_esc(d['verdict'])}</span>"]
        rows.append(cells)
    if not rows:
        return ""
    return ("<p>The augmented arm (synthetic or classic+synthetic, any generator and volume) with the best "
            "validation AUC, so that test images play no part in choosing it:</p>"
            + _table(["classifier", "arm", "test AUC", "real AUC", "ΔAUC vs real [95% CI]", "p (Holm)", "vs real",
                      "ΔAUC vs classic [95% CI]", "p (Holm)", "vs classic"], rows, left=2))


def _verdict_section(results: dict) -> str:
    if not results["verdicts"]:
        return ""
    rows = [[_esc(v["classifier"]), _esc(v["arm"]), _esc(v["reference"]),
             _delta_ci(v["delta_auc"], v.get("delta_auc_ci")), _delta_ci(v["delta_accuracy"], v.get("delta_accuracy_ci")),
             _num(v["p_holm"]), f"<span class='{_verdict_class(v['verdict'])}'>{_esc(v['verdict'])}</span>"]
            for v in results["verdicts"]]
    augmentation = [v for v in results["verdicts"] if v.get("comparison", "augmentation") == "augmentation"]
    helped = sum(v["verdict"] == "helped" for v in augmentation)
    summary = (f"Synthetic images significantly helped in {helped} of {len(augmentation)} comparisons "
               f"(McNemar, Holm-adjusted p < 0.05, and the paired 95% CI of the accuracy difference above 0).")
    return ("<h2>Did synthetic images help?</h2>" + f"<p class='note'>{_esc(summary)}</p>" + _answer_table(results)
            + "<p>Every comparison:</p>" + _table(["classifier", "arm", "against", "ΔAUC [95% CI]", "ΔAcc [95% CI]", "p (Holm)", "verdict"], rows,
                     left=3))


def _differences_section(results: dict) -> str:
    """Every non-real arm minus real and minus classic (where the study has it), AUC and accuracy side by side."""
    differences = results.get("differences") or []
    if not differences:
        return ""
    pairs: dict[tuple, dict] = {}
    for d in differences:
        pairs.setdefault((d["classifier"], d["arm"], d["reference"]), {})[d["metric"]] = d
    rows = [[_esc(clf), _esc(arm), _esc(ref), *(_delta_ci(m[k]["delta"], m[k]["ci"]) if k in m else "–"
                                               for k in ("auc", "accuracy")),
             _num(next(iter(m.values()))["p_holm"]), str(next(iter(m.values()))["seeds"])]
            for (clf, arm, ref), m in pairs.items()]
    return ("<h3>Paired differences against real and classic</h3><p>Arm minus reference on the same test images: "
            "the 95% CI is a paired bootstrap over test images and seeds (each resample scores both arms on the same "
            "images, averaged over the seeds both share), so it reflects the arms' difference, not the images'.</p>"
            + _table(["classifier", "arm", "against", "ΔAUC [95% CI]", "ΔAcc [95% CI]", "p (Holm)", "seeds"], rows,
                     left=3))


def _mcnemar_section(results: dict) -> str:
    if not results["mcnemar"]:
        return ""
    rows = [[_esc(m["classifier"]), str(m["seed"]), _esc(m["arm_a"]), _esc(m["arm_b"]), str(m["b"]), str(m["c"]),
             _num(m["statistic"]), _num(m["p"]), _num(m["p_holm"])] for m in results["mcnemar"]]
    return ("<h2>McNemar tests, Holm-Bonferroni adjusted</h2><p>b: test images only arm A classifies correctly; "
            "c: only arm B (as in Table 6 of Han et al. 2019).</p>"
            + _table(["classifier", "seed", "arm A", "arm B", "b", "c", "statistic", "p", "p (Holm)"], rows, left=4))


def _kid_text(row: dict) -> str:
    """KID with its spread over subsets, or without one when every subset was the whole sets."""
    from medsyn.metrics.fid import kid_subsets_differ  # here: medsyn.metrics.fid loads torch, which pages need not

    if kid_subsets_differ(row["n_real"], row["n_synthetic"]):
        return f"{row['kid_mean']:.4f} ± {row['kid_std']:.4f}"
    return f"{row['kid_mean']:.4f} (whole sets)"


def _fid_section(results: dict, out: Path) -> str:
    if not results["fid"]:
        return ""
    rows = [[_esc(f["generator"]), _num(f["fid"], 2), _kid_text(f),
             _num(f["floor_fid"], 2), _num(f.get("fid_ratio", f["fid"] / f["floor_fid"]), 2),
             str(f["n_real"]), str(f["n_synthetic"]), str(f.get("generator_seeds", 1))] for f in results["fid"]]
    notes = sorted({n for f in results["fid"] for n in f["notices"]})
    html_notes = "".join(f"<p class='note'>{_esc(n)}</p>" for n in notes)
    fidelity = ""
    if results.get("fidelity"):
        fid_rows = [[_esc(r["classifier"]), _esc(r["generator"]),
                     ", ".join(f"{_esc(c)} {a:.2f}" for c, a in r["label_fidelity"].items()),
                     _num(r["domain_fd"], 2), _num(r["domain_fd_floor"], 2)] for r in results["fidelity"]]
        fidelity = ("<h3>Label fidelity and domain Fréchet distance</h3><p>Label fidelity: per-class accuracy of the "
                    "real-only classifier on synthetic images (the measurable counterpart of the per-pixel accuracy of "
                    "Generative Adversarial U-Net, 2021). Domain FD: Fréchet distance in that classifier's penultimate features, with half the real "
                    "training images against as many synthetic ones; floor: that half against the other half.</p>"
                    + _table(["classifier", "generator", "label fidelity per class", "domain FD", "floor"], fid_rows, left=3))
    return ("<h2>Image quality</h2><p>FID and KID with the standard TF-Inception pool3 features; the floor is the FID "
            "between two disjoint real sets of the same size (what a perfect generator would score at this sample size)."
            " The ratio is FID over the floor (1: as close as two real sets), averaged over folds and generator seeds."
            "</p>" + _table(["generator", "FID", "KID", "FID floor (real vs real)", "ratio", "real", "synthetic",
                             "generator seeds"], rows)
            + html_notes + fidelity)


def _figures_section(results: dict, out: Path) -> str:
    parts = []
    curves = sorted((out / "figures").glob("volume_*.png"))
    if curves:
        parts.append("<h2>Volume sweep</h2>" + "".join(_image(p, p.stem) for p in curves))
    grids = results["figures"].get("grids") or {}
    if grids:
        parts.append("<h2>Synthetic samples (fold 0)</h2>")
        for gen, paths in grids.items():
            figs = "".join(f"<figure>{_image(out / p, p)}<figcaption>{_esc(Path(p).stem[5:])}</figcaption></figure>"
                           for p in paths)
            parts.append(f"<h3>{_esc(gen)}</h3><div class='grids'>{figs}</div>")
    if results["figures"].get("tsne"):
        parts.append("<h2>t-SNE of classifier features</h2><p>Features of the real-only classifier (fold 0); colour: "
                     "class, marker: origin.</p>" + _image(out / results["figures"]["tsne"], "t-SNE"))
        pixels = out / Path(results["figures"]["tsne"]).with_name("tsne_pixels.png")
        if pixels.is_file():
            parts.append("<h2>t-SNE of pixels</h2><p>The same images' pixels, as Han et al. 2019 ran t-SNE (perplexity "
                         "100, 1,000 iterations).</p>" + _image(pixels, "t-SNE of pixels"))
    return "".join(parts)


def plot_volume_curves(results: dict, out: Path) -> list[Path]:
    """AUC against synthetic volume, one figure per classifier, with the real and classic arms as lines."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    for clf in sorted({r["classifier"] for r in results["arms"]}):
        rows = [r for r in results["arms"] if r["classifier"] == clf]
        swept = [r for r in rows if r["volume"] is not None]
        if len({r["volume"] for r in swept}) < 2:
            continue
        fig, ax = plt.subplots(figsize=(6, 4))
        for (arm, gen) in sorted({(r["arm"], r["generator"]) for r in swept}):
            pts = sorted((r["volume"], r["auc"], *r["auc_ci"]) for r in swept if (r["arm"], r["generator"]) == (arm, gen))
            v, auc, lo, hi = (list(x) for x in zip(*pts))
            ax.errorbar(v, auc, yerr=[[a - l for a, l in zip(auc, lo)], [h - a for a, h in zip(auc, hi)]], marker="o",
                        capsize=3, label=f"{arm} [{gen}]")
        for r in rows:
            if r["volume"] is None:
                ax.axhline(r["auc"], linestyle="--", color="grey" if r["arm"] == "real" else "black", label=r["label"])
        ax.set(xlabel="synthetic images per class (x real per-class count)", ylabel="test AUC", title=clf)
        written.append(_save_legended(fig, ax, out / "figures" / f"volume_{clf}.png"))
    return written


def _audit_section(results: dict) -> str:
    """Copies and membership leaks of every generator, beside FID (FID cannot see a set of copies)."""
    rows = results.get("audit") or []
    if not rows:
        return ""
    body = [[_esc(r["generator"]), f"{r['copies']} of {r['synthetic']} ({100 * r['copies'] / max(r['synthetic'], 1):.1f}%)",
             "; ".join(f"{_esc(k)} {v:.2f}" for k, v in r["membership_auc"].items()),
             *(_num(r[k], 2) for k in ("authenticity", "precision", "recall", "density", "coverage")),
             " ".join(f"<a href='{_esc(f)}'>fold {i}</a>" for i, f in enumerate(r["folders"]))] for r in rows]
    return ("<h2>Audit: copies and membership</h2><p>Each synthetic set against the training images of its fold, "
            "calibrated on the fold's test images (which no generator saw): a copy is a synthetic image nearer, in "
            "pixels (at the best flip and a shift of up to 2 pixels), to a training image than 99% of test images are; "
            "membership AUC 0.5 means the set does not tell who was in training (GAN-Leaks; 1.0: it gives them away). "
            "Precision, recall, density and coverage are in Inception features against the training images.</p>"
            + _table(["generator", "copies", "membership AUC", "authenticity", "precision", "recall", "density",
                      "coverage", "full audit"], body))


def write_report(out: str | Path, prefix: str = "") -> Path:
    """Render ``out/{prefix}results.json`` into ``out/{prefix}report.html`` (atomic)."""
    out = Path(out)
    results = json.loads((out / f"{prefix}results.json").read_text())
    plot_volume_curves(results, out)
    plot_classic_sweep(results, out)
    data = results["data"]
    budget = results.get("budget") or ("quick" if results.get("quick") else "full")
    quick = ("<p class='note'>--quick run: budgets were shrunk; numbers show the pipeline works, not what a full run "
             "finds.</p>") if budget == "quick" else f"<p>Budget: {_esc(budget)}.</p>"
    folds = ", ".join(f"{f['train']}/{f['val']}/{f['test']}" for f in data["folds"])
    body = (f"<h1>medsyn study: {_esc(results['study'])}</h1>{quick}{_partial_note(results)}"
            f"<p>Data: {_esc(data['source'])}: {data['images']} images, {data['size']}x{data['size']}x{data['channels']}, "
            f"classes {_esc(', '.join(data['classes']))}. Train/val/test per fold: {folds}.</p>"
            + _verdict_section(results) + _arms_section(results) + _classic_sweep_section(results, out)
            + _mcnemar_section(results) + _fid_section(results, out) + _audit_section(results)
            + _figures_section(results, out)
            + "<h2>Configuration</h2><pre>" + _esc(yaml.safe_dump(results["config"], sort_keys=False)) + "</pre>"
            + "<h2>Versions</h2>" + _table(["package", "version"], [[_esc(k), _esc(v)] for k, v in results["versions"].items()]))
    page = f"<!doctype html><html><head><meta charset='utf-8'><title>medsyn: {_esc(results['study'])}</title>" \
           f"<style>{CSS}</style></head><body>{body}</body></html>"
    return atomic.write_text(out / f"{prefix}report.html", page)


def _partial_note(results: dict) -> str:
    """What a report of a study part way through (``--partial``) leaves out, and what may still change."""
    part = results.get("partial")
    if not part:
        return ""
    missing = "; ".join(f"{_esc(label)} (seed {', '.join(map(str, seeds))})" for label, seeds in part["missing"].items())
    return (f"<p class='note'>Partial: {part['finished_units']} of {part['planned_units']} classifier units have "
            "finished, and only arms whose seeds finished on every fold are shown. Holm's correction covers the "
            "comparisons of these arms only, a smaller family than the finished study's, so its p-values can only "
            "rise and the verdicts are provisional." + (f" Still to run: {missing}." if missing else "") + "</p>")
