"""Contact sheets: clusters/index.html with one grid PNG per cluster, for a person to discard whole clusters.

The page is plain HTML beside its PNGs (not base64 like report.html): with hundreds of clusters
the browser then loads grids lazily as one scrolls. Ticking clusters fills a text box with their
ids, ready to save as the --discard-file.
"""
from __future__ import annotations

import html
import math
from pathlib import Path

import numpy as np

from medsyn.curate.select import cluster_id
from medsyn.imageio import class_dir_name, save_grid
from medsyn.report import CSS

SHEET_MAX = 100  # images shown per cluster (10 x 10), the most typical first
SHEET_COLUMNS = 10

SCRIPT = """
function collect(){const ids=[...document.querySelectorAll('input.discard:checked')].map(b=>b.value);
document.getElementById('ids').value=ids.join('\\n')+(ids.length?'\\n':'');}
"""


def _esc(value) -> str:
    return html.escape(str(value))


def write_contact_sheets(folder: Path, images: np.ndarray, labels: np.ndarray, class_names: list[str],
                         clusters: np.ndarray, centre_distance: np.ndarray, scores: np.ndarray | None,
                         title: str, description: str) -> Path:
    """Write ``folder/index.html`` and ``folder/<class>/cluster_NNN.png``; returns the index path.

    Args:
        images: (N, C, H, W) in [0, 1].
        labels, clusters: class index and cluster of each image.
        centre_distance: distance to the cluster centre; grids show the nearest (most typical) first.
        scores: automatic scores (None: not computed); clusters are listed worst mean score first.
        title: page heading (the curated set).
        description: one paragraph on how the features, clusters and scores were made.
    """
    folder.mkdir(parents=True, exist_ok=True)
    summary, sections = [], []
    for k, name in enumerate(class_names):
        in_class = labels == k
        if not in_class.any():
            continue
        class_dir = folder / class_dir_name(name)
        class_dir.mkdir(exist_ok=True)
        rows = []
        for c in range(int(clusters[in_class].max()) + 1):
            members = np.flatnonzero(in_class & (clusters == c))
            shown = members[np.argsort(centre_distance[members], kind="stable")][:SHEET_MAX]
            grid = class_dir / f"cluster_{c:03d}.png"
            save_grid(grid, images[shown], nrow=SHEET_COLUMNS)
            mean_score = float(np.mean(scores[members])) if scores is not None else math.nan
            rows.append((cluster_id(name, c), len(members), len(shown), mean_score, grid.relative_to(folder).as_posix()))
        if scores is not None:
            rows.sort(key=lambda r: -r[3])  # the likeliest failures first
        summary.append(_summary_table(name, rows, scores is not None))
        sections += [_section(*row, scored=scores is not None) for row in rows]
    page = (f"<!doctype html><html><head><meta charset='utf-8'><title>medsyn curate: {_esc(title)}</title>"
            f"<style>{CSS}#ids{{position:sticky;top:0;background:#fff}}</style><script>{SCRIPT}</script></head><body>"
            f"<h1>medsyn curate: {_esc(title)}</h1><p>{_esc(description)}</p>"
            "<p class='note'>Tick discard beside the clusters of weird-looking images, then save the ids below as a file and pass "
            "it with <code>--discard-file</code> (or list them with <code>--discard-clusters</code>).</p>"
            "<textarea id='ids' rows='4' cols='40' readonly placeholder='ticked cluster ids'></textarea>"
            + "".join(summary) + "".join(sections) + "</body></html>")
    index = folder / "index.html"
    index.write_text(page, encoding="utf-8")
    return index


def _score_text(value: float) -> str:
    return "–" if math.isnan(value) else f"{value:.2f}"


def _summary_table(class_name: str, rows, scored: bool) -> str:
    head = "<th class='l'>cluster</th><th>images</th>" + ("<th>mean score</th>" if scored else "")
    body = "".join(
        f"<tr><td class='l'><a href='#{_esc(cid)}'>{_esc(cid)}</a></td><td>{size}</td>"
        + (f"<td>{_score_text(score)}</td>" if scored else "") + "</tr>"
        for cid, size, _, score, _ in rows)
    return f"<h2>Class {_esc(class_name)}</h2><table><tr>{head}</tr>{body}</table>"


def _section(cid: str, size: int, shown: int, mean_score: float, grid: str, scored: bool) -> str:
    parts = [f"{size} images"]
    if scored:
        parts.append(f"mean score {_score_text(mean_score)}")
    if shown < size:
        parts.append(f"the {shown} nearest the cluster centre shown")
    tick = f"<label><input type='checkbox' class='discard' value='{_esc(cid)}' onchange='collect()'> discard</label>"
    return (f"<h3 id='{_esc(cid)}'>Cluster {_esc(cid)} {tick}</h3><p>{_esc(', '.join(parts))}</p>"
            f"<img loading='lazy' alt='cluster {_esc(cid)}' src='{_esc(grid)}'>")
