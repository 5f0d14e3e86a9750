"""`medsyn vtt create | invite | serve | report`: a Visual Turing Test (reader study) of synthetic images."""
from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from medsyn.ui import console, out_console, say

vtt_app = typer.Typer(help="Visual Turing Test: show real and synthetic images to raters in a browser, "
                           "then measure whether they could tell them apart.", no_args_is_help=True)

LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")


@vtt_app.command("create")
def create(
    real: str = typer.Option(..., "--real", help="Real images: any source `medsyn data` reads (e.g. breastmnist.npz:test). Use images the generator never saw."),
    synthetic: List[str] = typer.Option(..., "--synthetic", help="Synthetic images: a `medsyn sample` folder or any labeled source; repeat for several generators."),
    per_class: int = typer.Option(..., "--per-class", help="Images shown per class, real and synthetic together (the brain-MRI paper: 100, half of them synthetic)."),
    out: Path = typer.Option(..., "--out", help="Study folder to create (images/ and study.sqlite with the answer key)."),
    ask_class: bool = typer.Option(False, "--ask-class", help="Also ask each image's class (lesion type, tumour or not), as both papers did."),
    real_share: float = typer.Option(0.5, "--real-share", help="Share of real images per class (the liver-lesion paper showed 0.6)."),
    seed: int = typer.Option(0, "--seed", help="Seeds which images are drawn and every rater's order."),
    size: Optional[int] = typer.Option(None, "--size", help="Side of the served images in pixels (default: the real images' size); every image is resized identically."),
):
    """Draw a class-stratified set of real and synthetic images, re-encode them identically under opaque ids,
    and keep the answer key in the study's database (never in the served files)."""
    from medsyn.vtt.create import create_study

    summary = create_study(real=real, synthetic=list(synthetic), per_class=per_class, out=out, ask_class=ask_class,
                           real_share=real_share, seed=seed, size=size)
    say(summary.notices)
    out_console.print(summary.describe(), highlight=False)
    console.print(f"next: medsyn vtt invite {out} --raters NAME,NAME,...", highlight=False, soft_wrap=True)


@vtt_app.command("invite")
def invite(
    study: Path = typer.Argument(..., help="Study folder made by `medsyn vtt create`."),
    raters: Optional[List[str]] = typer.Option(None, "--raters", help="Rater names, one secret link each: --raters alice,bob or --raters alice --raters bob. Default: none, which prints only a new admin link (the old one stops working)."),
    base_url: str = typer.Option("http://127.0.0.1:8000", "--base-url", help="Where raters will reach `medsyn vtt serve` (printed links start with it)."),
    seed: Optional[int] = typer.Option(None, "--seed", help="Seeds each rater's image order (default: the study's seed)."),
):
    """Print one secret link per rater (stored hashed: keep the output) and a new admin link for progress."""
    from medsyn.vtt.store import StudyStore

    store = StudyStore(study)
    names = _rater_names(raters) if raters else []
    tokens = store.add_raters(names, store.settings()["seed"] if seed is None else seed) if names else {}
    admin = store.new_admin_token()
    base = base_url.rstrip("/")
    for name in names:  # plain print: tab-separated lines a script can cut (rich would expand the tabs)
        print(f"{name}\t{base}/r/{tokens[name]}", flush=True)
    print(f"admin\t{base}/admin/{admin}", flush=True)
    console.print("the links are shown once (stored hashed); anyone holding a rater's link can answer as that rater. "
                  f"Start the server with: medsyn vtt serve {study}", highlight=False, soft_wrap=True)


def _rater_names(raters: list[str]) -> list[str]:
    from medsyn.errors import ConfigError

    names = [name.strip() for text in raters for name in text.split(",") if name.strip()]
    if not names:
        raise ConfigError("--raters needs at least one name")
    if len(set(names)) != len(names):
        raise ConfigError(f"--raters lists a name twice: {sorted(n for n in names if names.count(n) > 1)[0]!r}")
    bad = [n for n in names if len(n) > 64 or not n.isprintable()]
    if bad:
        raise ConfigError(f"--raters: {bad[0]!r} is not a usable name (printable, at most 64 characters)")
    return names


@vtt_app.command("serve")
def serve(
    study: Path = typer.Argument(..., help="Study folder made by `medsyn vtt create`."),
    host: str = typer.Option("127.0.0.1", "--host", help="Address to listen on. Anything but localhost exposes the study to the network."),
    port: int = typer.Option(8000, "--port", help="Port to listen on."),
):
    """Serve the rater page: one image at a time, zoom and window/level, answers stored as they are given."""
    from medsyn.vtt.server import serve_study

    if host not in LOCAL_HOSTS:
        say([f"warning: listening on {host}: anyone who can reach this machine on port {port} can load the "
             "page (answers still need a rater's secret link); use --host 127.0.0.1 and an SSH tunnel where you can"])
    serve_study(study, host=host, port=port)


@vtt_app.command("report")
def report(
    study: Path = typer.Argument(..., help="Study folder made by `medsyn vtt create`."),
    out: Path = typer.Option(..., "--out", help="Folder to create: report.html, answers.csv, vtt.json, figures."),
):
    """Per rater and pooled: accuracy with Wilson CIs, sensitivity/specificity for spotting synthetic images,
    exact binomial tests against chance and against always answering the majority, class accuracy and confusion,
    Cohen's/Fleiss' kappa, per class and generator, the synthetic images most often taken for real."""
    from medsyn.vtt.report import write_vtt_report

    verdict = write_vtt_report(study, out)
    console.print(f"wrote {out} (report.html, answers.csv, vtt.json)", highlight=False, soft_wrap=True)
    out_console.print(verdict, highlight=False)
