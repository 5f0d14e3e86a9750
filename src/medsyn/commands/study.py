"""`medsyn study CONFIG.yaml --out DIR [--budget quick|standard|full] [--jobs N]`: run a paper's protocol
and write its results and report."""
from __future__ import annotations

from pathlib import Path

import typer
from rich.markup import escape

from medsyn.ui import console, out_console, progress, say


def study_command(
    config: Path = typer.Argument(..., help="Study YAML (see studies/ for the shipped ones)."),
    out: Path = typer.Option(..., "--out", help="Study folder; rerunning with the same folder skips finished work."),
    budget: str = typer.Option("full", "--budget", help="full: the study as written (the papers' lengths, for a "
                               "GPU); standard: its budgets.standard section (classifiers early-stopped on validation "
                               "AUC, generators at the recipe's measured budget, three seeds; --plan shows its size); "
                               "quick: its quick: section, a smoke test in minutes. Another name: that entry of "
                               "budgets:."),
    quick: bool = typer.Option(False, "--quick", help="The same as --budget quick."),
    plan: bool = typer.Option(False, "--plan", help="Print what the study would run (generator runs, classifier "
                              "units, how many are done, image-epochs to train and the hours they take at a training "
                              "rate measured now on the device) and stop; nothing is written."),
    partial: bool = typer.Option(False, "--partial", help="Write partial_results.json and partial_report.html from "
                                 "the units finished so far and stop; nothing is trained. The study may be running "
                                 "in another process or stopped part way; its own results are not touched."),
    device: str = typer.Option(None, "--device", help="auto | cpu | cuda (default: the YAML's)."),
    jobs: int = typer.Option(None, "--jobs", help="Run up to N units at once (generators per fold, classifiers per "
                             "arm and seed) as Ray tasks: pip install 'medsyn\\[parallel]'. Each gets max(1, cores // N) "
                             "torch/OpenMP/BLAS threads, so at most one job per core runs. Default 1: serial, no Ray."),
    address: str = typer.Option(None, "--address", help="HOST:PORT of a Ray cluster to run the units on (`ray start "
                                "--head` on one machine, `ray start --address=HOST:PORT` on the others); every "
                                "machine needs the same medsyn and the same data and --out paths. --jobs defaults "
                                "to one per machine."),
):
    """Run a study end to end: generators, synthetic sets, FID, classifiers per arm, statistics, report.html."""
    import dataclasses

    from medsyn.errors import ConfigError
    from medsyn.report import write_report
    from medsyn.study import StudyInterrupted, StudyRunner, load_study
    from medsyn.study.parallel import check_address, check_jobs, import_ray, run_parallel

    check_jobs(jobs)
    parallel = address is not None or (jobs or 1) > 1
    if parallel:
        import_ray()  # missing: one line, before anything is loaded
        check_address(address)  # nothing listening there: one line, in seconds
        out = out.resolve()  # workers (maybe on other machines) write into the same folder
    if quick and budget not in ("full", "quick"):
        raise ConfigError(f"--quick and --budget {budget} ask for two budgets; give one")
    quick = quick or budget == "quick"
    cfg = load_study(config, budget="full" if quick else budget)
    if device:
        cfg = dataclasses.replace(cfg, device=device)
    if plan:
        from medsyn.study.plan import describe_plan

        runner = StudyRunner(cfg, out, quick=quick)
        runner.prepare()  # every check a run makes first, and nothing written
        for line in describe_plan(runner):
            out_console.print(line, markup=False, highlight=False, soft_wrap=True)
        return
    if partial:
        from medsyn.study.partial import PREFIX, gather_partial

        results = gather_partial(StudyRunner(cfg, out, quick=quick))
        part = results["partial"]
        say([f"{part['finished_units']} of {part['planned_units']} classifier units finished; "
             f"{len(part['missing'])} arm(s) still to run"])
        _print_verdicts(results)
        out_console.print(f"results: {out / (PREFIX + 'results.json')}\nreport:  {write_report(out, PREFIX)}")
        return
    with progress() as bar:
        units = bar.add_task("study", total=None, info="")
        inner = bar.add_task("unit", total=None, info="", visible=False)

        def on_unit(text: str) -> None:
            bar.update(units, info=escape(text))
            bar.update(inner, completed=0, total=None, visible=False)
            console.print(f"[dim]{escape(text)}[/]")  # arm labels contain [generator], not markup

        shown = [0]

        def on_progress(kind: str, done: int, total: int, info: str) -> None:
            if kind == "study":  # after a parallel run, the serial pass that gathers its units counts them again
                shown[0] = max(shown[0], done)
                bar.update(units, completed=shown[0], total=total)
                return
            bar.update(inner, description=kind, completed=done, total=total, info=info, visible=True)

        def on_done(task, result: dict, done: int) -> None:  # a parallel task ended: its units, as the serial run's
            for text in result["ran"]:
                console.print(f"[dim]done: {escape(text)}[/]")
            on_progress("study", done, runner.units_total(), "")
            bar.update(units, info=escape(task.label))

        runner = StudyRunner(cfg, out, quick=quick, on_unit=on_unit, on_progress=on_progress)
        runner.prepare()  # data, folds, names of models/classifiers/presets: errors before any training
        say(runner.notices)
        bar.update(units, total=runner.units_total())
        try:
            if parallel:
                run_parallel(runner, jobs, address, on_done, on_start=lambda text: say([text]))
            results = runner.run()  # parallel: every unit is on disk, and this gathers them as after a resume
        except StudyInterrupted:
            console.print(f"interrupted; finished units are kept in {out}. Continue with the same command.")
            raise typer.Exit(130)
    report = write_report(out)
    sweep = results.get("classic_sweep")
    if sweep:  # which classic set every classic arm used, and what chose it
        picks = ", ".join(f"{c['classifier']} fold {c['fold']}: {c['copies']}" for c in sweep["choice"])
        out_console.print(f"classic copies chosen on {sweep['metric']}: {picks}", markup=False, highlight=False,
                          soft_wrap=True)
    _print_verdicts(results)
    out_console.print(f"results: {out / 'results.json'}\nreport:  {report}")


def _print_verdicts(results: dict) -> None:
    for v in results["verdicts"]:  # McNemar tests accuracy, so the verdict follows the accuracy difference
        p = "n/a" if v["p_holm"] is None else f"{v['p_holm']:.4f}"
        out_console.print(f"{v['classifier']:<12} {v['arm']:<34} vs {v['reference']:<7} dAcc {v['delta_accuracy']:+.3f} "
                          f"dAUC {v['delta_auc']:+.3f} p_holm {p}  {v['verdict']}", markup=False, highlight=False,
                          soft_wrap=True)
