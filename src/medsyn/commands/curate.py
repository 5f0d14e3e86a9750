"""`medsyn curate SYN --out DIR`: cluster synthetic images for review, score them against real ones, keep the good.

Two passes, one command: a review run writes contact sheets and clusters.csv; a second run with
``--review`` applies a person's discards (and/or a score threshold) to exactly the clusters that
person looked at, without recomputing features. Discards given without ``--review`` apply to the
clusters computed in the same run (the same options and seed give the same clusters).
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Optional

import numpy as np
import typer

from medsyn.errors import ConfigError
from medsyn.ui import console, out_console, say

DEFAULT_CLUSTERS = 200  # Han et al. 2019 clustered into 200 groups


def curate_command(
    synthetic: str = typer.Argument(..., help="Synthetic set to curate: a `medsyn sample` folder (or any data source)."),
    out: Path = typer.Option(..., "--out", help="Folder to create: clusters.csv and clusters/index.html (contact sheets); "
                                                "with a discard option also kept/ (a sample folder) and discarded.csv; always curate.json."),
    clusters: Optional[int] = typer.Option(None, "--clusters", help=f"k-means++ clusters per class (default {DEFAULT_CLUSTERS}, "
                                                                    "Han et al. 2019's; capped at a class's distinct images)."),
    features: Optional[str] = typer.Option(None, "--features", help="inception (default; the packaged TF-FID Inception, offline) | "
                                           "densenet121 | densenet169 (ImageNet weights from --weights) | domain (a `medsyn classify` "
                                           "classifier.pt from --weights) | pixels (quick runs only: sees intensity, not content)."),
    weights: Optional[Path] = typer.Option(None, "--weights", help="The feature network's file (see --features; default: none, the packaged Inception needs none)."),
    real: Optional[str] = typer.Option(None, "--real", help="Real images (same classes, size, channels) to score against: the "
                                       "k-NN distance to real images of the class (its train split). Optional; default: no scores."),
    review: Optional[Path] = typer.Option(None, "--review", help="A folder an earlier `medsyn curate` wrote: apply the discards "
                                          "to the clusters and scores reviewed there, without recomputing them (default: compute them)."),
    discard_clusters: Optional[str] = typer.Option(None, "--discard-clusters", help="Cluster ids to discard, comma-separated: "
                                                   "CLASS/N as clusters.csv writes them (malignant/3), or N for a one-class set (default: none)."),
    discard_file: Optional[Path] = typer.Option(None, "--discard-file", help="Cluster ids to discard, one per line (# comments); "
                                                "ticking clusters in clusters/index.html writes the list (default: none)."),
    max_score: Optional[float] = typer.Option(None, "--max-score", help="Discard images scoring above this (1: as near the real "
                                              "images as those are to each other; the review run prints how high real images score). Needs scores (default: no limit)."),
    discard_fraction: Optional[float] = typer.Option(None, "--discard-fraction", help="Discard this fraction of each class, "
                                                     "highest scores first (e.g. 0.1). Needs scores (default: none)."),
    drop_copies: Optional[Path] = typer.Option(None, "--drop-copies", help="A folder `medsyn audit` wrote for this set: "
                                               "discard the images it flagged as copies of training images (default: keep them)."),
    seed: int = typer.Option(0, "--seed", help="Seeds k-means++."),
    batch: int = typer.Option(32, "--batch", help="Images per forward pass of the feature network."),
    device: str = typer.Option("auto", "--device", help="auto | cpu | cuda"),
    cache: Optional[Path] = typer.Option(None, "--cache", help="Feature cache folder (default: $MEDSYN_CACHE_DIR, else ~/.cache/medsyn/features)."),
):
    """Cluster synthetic images per class (k-means++ on network features) into contact sheets for a person to
    discard whole clusters of weird-looking images, score each image by its distance to the real images, and
    write the kept set with a record of what was discarded and why.

    Review: medsyn curate SYN --real REAL --out REVIEW (open REVIEW/clusters/index.html).
    Apply: medsyn curate SYN --review REVIEW --discard-file ids.txt [--max-score 2] --out CURATED (CURATED/kept)."""
    from medsyn import curate
    from medsyn.data import load_source
    from medsyn.imageio import atomic_dir, ensure_new_dir

    started = time.perf_counter()
    deciding = any(v is not None for v in (discard_clusters, discard_file, max_score, discard_fraction, drop_copies))
    scoring = max_score is not None or discard_fraction is not None
    _check_thresholds(max_score, discard_fraction)
    tokens = curate.read_id_tokens(discard_clusters, discard_file)  # a missing discard file fails before any work
    if review is not None:
        given = [name for name, v in (("--clusters", clusters), ("--features", features), ("--weights", weights),
                                      ("--real", real)) if v is not None]
        if given:
            raise ConfigError(f"--review reuses the clusters and scores of {review}; {', '.join(given)} belong to that run")
        if not deciding:
            raise ConfigError("--review needs something to apply: --discard-clusters, --discard-file, --max-score, "
                              "--discard-fraction or --drop-copies")
    else:
        clusters = DEFAULT_CLUSTERS if clusters is None else clusters
        if clusters < 1:
            raise ConfigError(f"--clusters must be at least 1, got {clusters}")
        curate.parse_feature_source(features or curate.FeatureSource.INCEPTION)
        if scoring and real is None:
            raise ConfigError("--max-score and --discard-fraction need scores: pass --real with the real images")
    if batch < 1:
        raise ConfigError(f"--batch must be at least 1, got {batch}")
    ensure_new_dir(out)

    from medsyn.provenance import read_provenance, write_provenance

    synthetic_set = load_source(synthetic)
    say(synthetic_set.notices)
    flagged = _audited_copies(drop_copies, synthetic_set) if drop_copies is not None else None
    record = {"input": synthetic, "seed": seed}
    if review is not None:
        reviewed = curate.read_review(review, synthetic_set)
        if scoring and reviewed.scores is None:
            raise ConfigError(f"{review} has no scores (it was made without --real): --max-score and "
                              f"--discard-fraction cannot apply")
        clustering = curate.from_review(reviewed)
        record |= {"review": str(review), **{k: reviewed.record.get(k) for k in ("features", "clusters", "real", "score")}}
        description = ""
        reference = [r for r in read_provenance(review) or [] if r.role == "curation reference"]
    else:
        clustering, description, facts, reference = _cluster(synthetic_set, clusters, features or "inception",
                                                             weights, real, seed, batch, device, cache)
        record |= facts
    say(clustering.notices)

    reasons = None
    if deciding:
        chosen = curate.parse_cluster_ids(tokens, clustering.labels, clustering.clusters, synthetic_set.class_names)
        reasons = curate.discard_reasons(clustering.labels, clustering.clusters, synthetic_set.class_names,
                                         clustering.scores, discard=chosen, max_score=max_score,
                                         discard_fraction=discard_fraction,
                                         copies=None if flagged is None else np.isin(clustering.names, sorted(flagged)),
                                         copies_source=str(drop_copies))
        if all(reasons):
            raise ConfigError(f"every one of the {len(reasons)} images would be discarded; nothing would be kept")
        record |= {"discard_clusters": sorted(t for _, t in tokens), "max_score": max_score,
                   "discard_fraction": discard_fraction, "drop_copies": str(drop_copies) if drop_copies else None,
                   "copies_dropped": len(flagged) if flagged is not None else 0, "kept": sum(not r for r in reasons),
                   "discarded": sum(bool(r) for r in reasons)}
    # the kept set was shaped by the input's real images and by the real images it was scored against
    provenance = (read_provenance(synthetic) or []) + reference
    with atomic_dir(out) as tmp:
        curate.write_curation(tmp, synthetic_set, clustering, reasons, record, description)
        made_by = {"command": "curate", "input": synthetic, "seed": seed, "review": str(review) if review else None}
        write_provenance(tmp, reference, made_by)  # the scores' real images, for a later --review
        if reasons is not None:
            write_provenance(tmp / curate.KEPT_DIR, provenance, made_by)
    _print_summary(out, synthetic_set, clustering, reasons, time.perf_counter() - started)


def _audited_copies(audit: Path, synthetic_set) -> set[str]:
    """The names an audit flagged, checked to be this set's: an audit of another set names other images."""
    from medsyn.audit import audited_images_digest, read_copies
    from medsyn.curate.store import image_names, images_digest
    from medsyn.errors import DataError

    flagged = read_copies(audit)
    audited = audited_images_digest(audit)
    if audited is not None and audited != images_digest(synthetic_set.images):
        raise DataError(audit, f"audits another set than {synthetic_set.source} (its images differ); audit this "
                               f"set: medsyn audit {synthetic_set.source} --out AUDIT")
    unknown = flagged - set(image_names(synthetic_set))
    if unknown:
        raise DataError(audit, f"flags {len(unknown)} images {synthetic_set.source} does not have "
                               f"(e.g. {sorted(unknown)[0]}); audit this set: medsyn audit {synthetic_set.source} --out AUDIT")
    return flagged


def _check_thresholds(max_score: float | None, discard_fraction: float | None) -> None:
    if max_score is not None and max_score <= 0:
        raise ConfigError(f"--max-score must be positive, got {max_score}")
    if discard_fraction is not None and not 0 < discard_fraction < 1:
        raise ConfigError(f"--discard-fraction must be between 0 and 1, got {discard_fraction}")


def _cluster(synthetic_set, clusters: int, features: str, weights, real: str | None, seed: int, batch: int,
             device: str, cache):
    """Features (cached) -> clusters per class -> scores; returns (clustering, description, record facts)."""
    from medsyn import curate
    from medsyn.commands.progress import features_with_progress
    from medsyn.curate.select import SCORE_NEIGHBOURS
    from medsyn.metrics.cache import FeatureCache
    from medsyn.train.setup import resolve_device

    torch_device = resolve_device(device)
    real_set = _load_real(real, synthetic_set) if real is not None else None
    extractor = curate.build_extractor(features, weights, device, synthetic_set)
    store = FeatureCache(cache)
    console.print(f"{len(synthetic_set)} synthetic images ({synthetic_set.source}); features: {extractor.name} on "
                  f"{torch_device}", highlight=False, soft_wrap=True)
    syn_feats = features_with_progress("synthetic", synthetic_set, extractor, store, batch, torch_device)
    real_feats = None
    if real_set is not None:
        real_feats = features_with_progress("real", real_set, extractor, store, batch, torch_device)
    clustering = curate.cluster_set(synthetic_set, syn_feats, clusters, seed, real_set, real_feats)
    score = None if real_set is None else (f"k-NN distance (k={SCORE_NEIGHBOURS}) to the real images of the class, over "
                                           f"the real images' own median k-NN distance")
    reference = "; ".join(f"{name} {p95:.2f}" for name, p95 in (clustering.real_reference or {}).items())
    description = (f"{len(synthetic_set)} images, {extractor.name} features, k-means++ with up to {clusters} clusters "
                   f"per class (seed {seed}). " + (f"Score: {score} ({real_set.source}, {len(real_set)} images); "
                                                   f"real images' own scores, 95th percentile: {reference}."
                                                   if score else "No scores (no --real)."))
    facts = {"features": extractor.key, "clusters": clusters, "real": None if real_set is None else real_set.source,
             "score": score}
    from medsyn.provenance import record_of_images

    reference = []
    if real_set is not None:
        reference = [record_of_images("curation reference", real_set)]
    return clustering, description, facts, reference


def _load_real(spec: str, synthetic_set):
    """The real reference set; a source with its own splits gives its train split, so test images never steer curation."""
    from medsyn.data import load_source
    from medsyn.data.loader import parse_spec
    from medsyn.evaluate.arms import check_compatible

    from medsyn.data.splits import source_split, take_split

    # the source's one split (its own, else medsyn's seeded patient-level one): test images never steer curation
    real_set = take_split(source_split(load_source(spec)), parse_spec(spec)[1] or "train", "scoring against")
    say(real_set.notices)
    check_compatible(real_set, synthetic_set)
    return real_set


def _print_summary(out: Path, synthetic_set, clustering, reasons, seconds: float) -> None:
    per_class = ", ".join(f"{name} {int(clustering.clusters[clustering.labels == k].max()) + 1}"
                          for k, name in enumerate(synthetic_set.class_names) if (clustering.labels == k).any())
    if clustering.centre_distance is not None:
        out_console.print(f"clustered {len(synthetic_set)} images (clusters per class: {per_class}); contact sheets "
                          f"in {out / 'clusters' / 'index.html'}", highlight=False, soft_wrap=True)
    if reasons is not None:
        discarded = sum(bool(r) for r in reasons)
        out_console.print(f"kept {len(reasons) - discarded} images in {out / 'kept'}, discarded {discarded} "
                          f"(reasons in {out / 'discarded.csv'})", highlight=False, soft_wrap=True)
    console.print(f"done in {seconds:.1f} s", highlight=False)
