"""`medsyn vtt report`: a reader study's answers -> report.html, answers.csv, vtt.json and figures in one new folder.

The statistics are ``medsyn.vtt.stats``'s; this module gathers the study, runs those stages into one
``VttResult`` and writes the folder through ``atomic_dir``, so an interrupted report leaves nothing behind
and an existing non-empty folder is refused before any work.
"""
from __future__ import annotations

import csv
import io
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Sequence

from medsyn import atomic
from medsyn.errors import DataError
from medsyn.vtt import figures, stats
from medsyn.vtt.stats import (REAL_GROUP, VERDICT_RULE, Agreement, ClassQuestion, Detection, Fooling, GroupRow,
                              RaterStats, Timing, Verdict)
from medsyn.vtt.store import Answer, StudyImage, StudyStore

CSV_COLUMNS = ["rater", "image_id", "truth", "answer", "correct", "class", "class_answer", "class_correct",
               "confidence", "seconds", "generator", "source", "origin", "answered_at"]
FIGURES = {"accuracy": "accuracy.png", "confusion": "confusion.png", "time": "time.png", "fooled": "fooled.png"}


@dataclass(frozen=True)
class VttResult:
    """Every number of the report (vtt.json is this, plus the rule)."""

    study: str
    settings: dict[str, Any]
    classes: list[str]  # a name for every class index (the settings' names; the index where a name is missing)
    images: dict[str, Any]  # counts: real, synthetic, synthetic per generator
    raters: list[RaterStats]  # raters with at least one answer, in invitation order
    waiting: list[str]  # invited raters without an answer yet
    pooled: Detection  # all answers together: they share images, so no test here carries the verdict
    pooled_classes: ClassQuestion | None
    pooled_timing: Timing
    agreement: list[Agreement]
    per_class: list[GroupRow]
    per_generator: list[GroupRow]
    fooling: list[Fooling]
    verdict: Verdict

    def to_json(self) -> dict[str, Any]:
        return {"rule": VERDICT_RULE, **asdict(self)}

    @property
    def generators(self) -> list[str]:
        return [row.group for row in self.per_generator if row.group != REAL_GROUP]


def class_name(names: Sequence[str], index: int | None) -> str:
    if index is None:
        return ""
    return names[index] if 0 <= index < len(names) else str(index)


def analyse(study: str, settings: dict[str, Any], images: Sequence[StudyImage], answers: Sequence[Answer],
            progress: Sequence[dict[str, Any]]) -> VttResult:
    """Run every statistic on the study's answers (pure: the caller reads the store).

    Args:
        study: the study folder, as named in the report.
        settings: the study's settings (class_names, ask_class, generators, ...).
        images: the answer key of every image in the study.
        answers: every answer, joined with the key (``StudyStore.answers``).
        progress: per invited rater, answered and total (``StudyStore.progress``).
    """
    given = list(settings.get("class_names") or [])
    n_classes = max([len(given)] + [i.class_index + 1 for i in images])
    names = [class_name(given, c) for c in range(n_classes)]
    generators = list(dict.fromkeys([*(settings.get("generators") or []),
                                     *sorted({i.generator for i in images if i.is_synthetic and i.generator})]))
    synthetic = [i for i in images if i.is_synthetic]
    counts = {"total": len(images), "real": len(images) - len(synthetic), "synthetic": len(synthetic),
              "per_generator": {g: sum(i.generator == g for i in synthetic) for g in generators}}
    raters = stats.rater_stats(answers, {p["rater"]: p["total"] for p in progress}, n_classes)
    questions = ["real or synthetic"] + (["class"] if any(a.class_answer is not None for a in answers) else [])
    return VttResult(
        study=study, settings=dict(settings), classes=names, images=counts, raters=raters,
        waiting=[p["rater"] for p in progress if p["answered"] == 0],
        pooled=stats.detection(answers), pooled_classes=stats.class_question(answers, n_classes),
        pooled_timing=stats.timing(answers), agreement=[stats.agreement(answers, q) for q in questions],
        per_class=stats.group_rows(answers, lambda a: names[a.class_index], names),
        per_generator=stats.group_rows(answers, stats.generator_key, [REAL_GROUP, *generators]),
        fooling=stats.most_taken_for_real(answers), verdict=stats.verdict(raters))


def _when(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, timezone.utc).isoformat(timespec="seconds")


def answers_csv(answers: Sequence[Answer], class_names: Sequence[str]) -> str:
    """Every answer as one CSV row: truth and answer by name, class and class answer by name, time (UTC)."""
    kind = {False: "real", True: "synthetic"}
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for a in answers:
        asked = a.class_answer is not None
        writer.writerow([a.rater, a.image_id, kind[a.is_synthetic], kind[a.says_synthetic],
                         int(a.is_synthetic == a.says_synthetic), class_name(class_names, a.class_index),
                         class_name(class_names, a.class_answer), int(a.class_answer == a.class_index) if asked else "",
                         "" if a.confidence is None else a.confidence,
                         "" if a.seconds is None else f"{a.seconds:.3f}", a.generator or "", a.source, a.origin,
                         _when(a.answered_at)])
    return buffer.getvalue()


def _write_figures(folder: Path, result: VttResult, answers: Sequence[Answer], store: StudyStore) -> dict[str, Path]:
    names = result.classes
    written = {"accuracy": figures.accuracy_png(folder / FIGURES["accuracy"],
                                                [r.rater for r in result.raters] + ["pooled"],
                                                [r.detection for r in result.raters] + [result.pooled])}
    panels = [("real or synthetic, all raters", result.pooled.confusion, ["real", "synthetic"])]
    if result.pooled_classes is not None:
        panels += [("class, real images", result.pooled_classes.confusion_real, names),
                   ("class, synthetic images", result.pooled_classes.confusion_synthetic, names)]
    written["confusion"] = figures.confusion_png(folder / FIGURES["confusion"], panels)
    written["time"] = figures.time_png(folder / FIGURES["time"], answers)
    if result.fooling:
        written["fooled"] = figures.fooled_png(folder / FIGURES["fooled"], result.fooling, store.image_file, names)
    return written


def write_vtt_report(study: str | Path, out: str | Path) -> str:
    """Write ``out`` (report.html, answers.csv, vtt.json, the figures) for the study folder ``study``.

    Returns:
        The verdict line (``stats.VERDICT_RULE``), for the command to print.

    Raises:
        DataError: ``study`` is not a study folder, or nobody has answered yet (nothing is written).
        RunError: ``out`` exists and is not empty.
        WriteError: the folder could not be written.
    """
    from medsyn.imageio import atomic_dir, ensure_new_dir

    store = StudyStore(study)
    answers = store.answers()
    if not answers:
        raise DataError(study, "no answers yet; raters answer at the links `medsyn vtt invite` printed, "
                               f"once the study is served (medsyn vtt serve {study})")
    ensure_new_dir(out)  # before any work; atomic_dir checks again when it puts the folder in place
    from medsyn.vtt import page  # the page's shared HTML helpers import medsyn.report and with it torch
    result = analyse(str(study), store.settings(), store.images(), answers, store.progress())
    with atomic_dir(out) as folder:
        atomic.write_text(folder / "answers.csv", answers_csv(answers, result.classes))
        atomic.write_json(folder / "vtt.json", result.to_json())
        page.write_page(folder / "report.html", result, _write_figures(folder, result, answers, store))
    return result.verdict.text
