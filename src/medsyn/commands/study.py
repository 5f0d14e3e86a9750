"""`medsyn study CONFIG.yaml --out DIR [--quick]`: run a paper's protocol and write results and report."""
from __future__ import annotations

from pathlib import Path

import typer
from rich.markup import escape

from medsyn.ui import console, out_console, progress, say


def study_command(
    config: Path = typer.Argument(..., help="Study YAML (see studies/ for the shipped ones)."),
    out: Path = typer.Option(..., "--out", help="Study folder; rerunning with the same folder skips finished work."),
    quick: bool = typer.Option(False, "--quick", help="Shrink every budget so the study ends in minutes on a CPU."),
    device: str = typer.Option(None, "--device", help="auto | cpu | cuda (default: the YAML's)."),
):
    """Run a study end to end: generators, synthetic sets, FID, classifiers per arm, statistics, report.html."""
    import dataclasses

    from medsyn.report import write_report
    from medsyn.study import StudyInterrupted, StudyRunner, load_study

    cfg = load_study(config)
    if device:
        cfg = dataclasses.replace(cfg, device=device)
    with progress() as bar:
        units = bar.add_task("study", total=None, info="")
        inner = bar.add_task("unit", total=None, info="", visible=False)

        def on_unit(text: str) -> None:
            bar.update(units, info=escape(text))
            bar.update(inner, completed=0, total=None, visible=False)
            console.print(f"[dim]{escape(text)}[/]")  # arm labels contain [generator], not markup

        def on_progress(kind: str, done: int, total: int, info: str) -> None:
            if kind == "study":
                bar.update(units, completed=done, total=total)
                return
            bar.update(inner, description=kind, completed=done, total=total, info=info, visible=True)

        runner = StudyRunner(cfg, out, quick=quick, on_unit=on_unit, on_progress=on_progress)
        runner.prepare()  # data, folds, names of models/classifiers/presets: errors before any training
        say(runner.notices)
        bar.update(units, total=runner.units_total())
        try:
            results = runner.run()
        except StudyInterrupted:
            console.print(f"interrupted; finished units are kept in {out}. Continue with the same command.")
            raise typer.Exit(130)
    report = write_report(out)
    sweep = results.get("classic_sweep")
    if sweep:  # which classic set every classic arm used, and what chose it
        picks = ", ".join(f"{c['classifier']} fold {c['fold']}: {c['copies']}" for c in sweep["choice"])
        out_console.print(f"classic copies chosen on {sweep['metric']}: {picks}", markup=False, highlight=False,
                          soft_wrap=True)
    for v in results["verdicts"]:  # McNemar tests accuracy, so the verdict follows the accuracy difference
        p = "n/a" if v["p_holm"] is None else f"{v['p_holm']:.4f}"
        out_console.print(f"{v['classifier']:<12} {v['arm']:<34} vs {v['reference']:<7} dAcc {v['delta_accuracy']:+.3f} "
                          f"dAUC {v['delta_auc']:+.3f} p_holm {p}  {v['verdict']}", markup=False, highlight=False,
                          soft_wrap=True)
    out_console.print(f"results: {out / 'results.json'}\nreport:  {report}")
