"""The study's answer in one row per classifier: did adding synthetic images help?

The arm reported is the augmentation arm (synthetic or classic+synthetic, any generator and volume)
with the best validation AUC: choosing it by test AUC would pick the luckiest of many arms on the
very images that then score it, and report the winner's curse as a gain. Its gains over real and
over classic are the paired differences and verdicts results.json already holds (paired bootstrap
CI over test images and seeds; McNemar with Holm across every comparison of the study).
"""
from __future__ import annotations

import math
from typing import Any

AUGMENTATION_ARMS = ("synthetic", "classic+synthetic")
CHOSEN_ON = "validation AUC"


def answer_rows(results: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per classifier with an augmentation arm: the arm chosen on validation AUC, its test AUC,
    the real arm's, and for each reference (real, classic) the AUC and accuracy gains with their 95%
    CIs, the Holm-adjusted McNemar p and the verdict. References the study lacks are None."""
    rows = []
    for clf in dict.fromkeys(r["classifier"] for r in results["arms"]):
        arms = {r["label"]: r for r in results["arms"] if r["classifier"] == clf}
        candidates = [r for r in arms.values() if r["arm"] in AUGMENTATION_ARMS and r.get("val_auc") is not None]
        if not candidates:
            continue
        # ties on validation AUC: the smaller training set (fewer synthetic images) is the cheaper claim
        best = max(candidates, key=lambda r: (r["val_auc"], -r["n_train"]))
        row = {"study": results["study"], "budget": results.get("budget"), "classifier": clf, "arm": best["label"],
               "chosen_on": CHOSEN_ON, "val_auc": best["val_auc"], "auc": best["auc"], "seeds": best["seeds"],
               "real_auc": arms["real"]["auc"] if "real" in arms else None, "candidates": len(candidates)}
        for reference in ("real", "classic"):
            row[reference] = _against(results, clf, best["label"], reference)
        rows.append(row)
    return rows


def _against(results: dict, clf: str, arm: str, reference: str) -> dict[str, Any] | None:
    paired = {d["metric"]: d for d in results.get("differences") or []
              if (d["classifier"], d["arm"], d["reference"]) == (clf, arm, reference)}
    verdict = next((v for v in results.get("verdicts") or []
                    if (v["classifier"], v["arm"], v["reference"]) == (clf, arm, reference)), None)
    if not paired or verdict is None:
        return None
    return {"delta_auc": paired["auc"]["delta"], "delta_auc_ci": paired["auc"]["ci"],
            "delta_accuracy": paired["accuracy"]["delta"], "delta_accuracy_ci": paired["accuracy"]["ci"],
            "p_holm": verdict["p_holm"], "verdict": verdict["verdict"]}


def answer_markdown(rows: list[dict[str, Any]], dataset: dict[str, str] | None = None) -> str:
    """The README's answer table: dataset, arm chosen, test AUC against real, and the gains over real
    and over classic with CI, Holm p and verdict."""
    lines = ["| dataset | classifier | best augmented arm (on validation AUC) | test AUC (real) | "
             "ΔAUC vs real [95% CI] | p Holm | verdict vs real | ΔAUC vs classic [95% CI] | p Holm | verdict vs classic |",
             "|" + "---|" * 10]
    for r in rows:
        name = (dataset or {}).get(r["study"], r["study"])
        cells = [name, r["classifier"], f"{r['arm']} (of {r['candidates']})",
                 f"{r['auc']:.3f} ({_num(r['real_auc'])})"]
        for reference in ("real", "classic"):
            d = r[reference]
            cells += (["–", "–", "no such arm"] if d is None else
                      [f"{d['delta_auc']:+.3f} [{d['delta_auc_ci'][0]:+.3f}, {d['delta_auc_ci'][1]:+.3f}]",
                       _num(d["p_holm"]), d["verdict"]])
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _num(value: float | None) -> str:
    return "–" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.3f}"
