"""The README's answer table from finished (or ``--partial``) study folders: for each study and
classifier, the augmented arm chosen on validation AUC, its gains over real and over classic with
95% CIs, Holm-adjusted McNemar p and verdicts (medsyn.study.answer).

    python bench/answer_table.py STUDY_DIR [STUDY_DIR ...]

Reads each folder's results.json, or partial_results.json where the study has not finished (the
table then says how many of its classifier units it covers), and prints one markdown table.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

DATASETS = {"breast-ultrasound": "BreastMNIST 28", "pneumonia": "PneumoniaMNIST 28", "retina-wgan": "RetinaMNIST 28",
            "liver-lesions": "liver phantoms"}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folders", nargs="+", type=Path)
    args = parser.parse_args()
    from medsyn.study.answer import answer_markdown, answer_rows

    rows, notes = [], []
    for folder in args.folders:
        path = folder / "results.json"
        if not path.is_file():
            path = folder / "partial_results.json"
        if not path.is_file():
            print(f"{folder}: no results.json or partial_results.json; run the study (or --partial) first",
                  file=sys.stderr)
            return 2
        results = json.loads(path.read_text())
        rows += answer_rows(results)
        part = results.get("partial")
        if part:
            notes.append(f"{results['study']}: partial, {part['finished_units']} of {part['planned_units']} "
                         f"classifier units")
        notes.append(f"{results['study']}: budget {results.get('budget')}, {path}")
    print(answer_markdown(rows, DATASETS))
    print()
    for note in notes:
        print(f"- {note}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
