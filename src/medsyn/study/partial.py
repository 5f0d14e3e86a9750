"""Results of a study part way through: ``medsyn study CONFIG --out D --partial``.

A standard-budget study runs for hours and may be done in parts (it resumes), so a user wants to read
what is finished without stopping it or waiting for the rest. This gathers the classifier units on
disk, keeps an arm only for the seeds whose every fold has finished (pooled test predictions must
cover the same images as the final ones), and writes ``partial_results.json``, ``partial_table_*.csv``
and ``partial_report.html`` beside the study's own files, never over them. Nothing is trained.

What changes when the rest finishes, and the report says so: McNemar's Holm correction runs over the
comparisons of the arms present, a smaller family than the final one, so p-values can only rise;
arms with fewer seeds than the study lists have wider intervals.
"""
from __future__ import annotations

from collections import defaultdict

from medsyn.study.plan import answer_order, arm_unit_key
from medsyn.study.sweep import choice_on_disk

PREFIX = "partial_"


def gather_partial(runner) -> dict:
    """results.json's content for the finished units of ``runner``'s study, with a ``partial`` section
    (units finished and planned, and the arms still missing), written under PREFIX in its folder.

    Raises:
        RunError: the folder holds another study (as a run would), or no classifier unit has finished.
    """
    from medsyn.errors import RunError
    from medsyn.study.results import assemble_results

    if runner.data is None:
        runner.prepare()  # the same checks as a run, the folder's study included; nothing is written
    cfg, store = runner.cfg, runner.store
    runner.arm_unit_keys.clear(), runner.sweep_unit_keys.clear()
    runner.chosen_copies.clear()
    planned, missing = 0, defaultdict(set)  # arm label -> seeds still to finish
    for clf in cfg.classifiers:
        copies_of = {}  # fold -> classic copies, where the sweep that chooses them has finished
        for fold in runner.folds:
            copies_of[fold.index] = _finished_sweep_choice(runner, clf.name, fold.index)
        for seed, spec in answer_order(cfg):
            planned += len(runner.folds)
            keys = []
            for fold in runner.folds:
                copies = copies_of[fold.index]
                if copies is None and spec.arm.uses_classic:
                    break  # the sweep has not chosen this fold's classic set yet
                key = arm_unit_key(cfg, clf.name, seed, fold.index, spec, copies or 0)
                if not store.has(key):
                    break
                keys.append(key)
            if len(keys) == len(runner.folds):
                runner.arm_unit_keys.extend(keys)
            else:
                missing[f"{clf.name} {spec.label}"].add(seed)
    finished = len(runner.arm_unit_keys)
    if not finished:
        raise RunError(f"{runner.out}: no classifier unit of this study has finished yet; "
                       "--partial reports arms once one seed of one arm is done on every fold")
    note = {"finished_units": finished, "planned_units": planned,
            "missing": {label: sorted(seeds) for label, seeds in missing.items()}}
    return assemble_results(runner, prefix=PREFIX, extra={"partial": note})


def _finished_sweep_choice(runner, clf: str, fold: int) -> int | None:
    """The classic copies of ``clf`` on ``fold``: the fixed number, the sweep's choice once every one
    of its units has finished, or None while some are missing."""
    classic = runner.cfg.classic
    if not classic.sweep:
        return classic.copies
    found = choice_on_disk(runner.store, clf, runner.cfg.seeds, fold, classic.copies)
    if found is None:
        return None
    keys, chosen = found
    runner.sweep_unit_keys.extend(keys)
    runner.chosen_copies[(clf, fold)] = chosen
    return chosen
