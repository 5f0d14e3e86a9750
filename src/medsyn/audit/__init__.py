"""Audit of a synthetic set: fidelity and diversity, memorisation (copies of training images) and membership leaks.

Three sets go in: the synthetic images, the images their generator was trained on (TRAIN), and
real images it never saw (HELD), which calibrate what "close" means.

- Fidelity and diversity (``fidelity``): precision, recall, density, coverage in feature space,
  overall and class-matched.
- Memorisation (``memorisation``): each synthetic image's nearest training image in pixels
  (1 - correlation at the best horizontal flip and shift of up to 2 pixels, ``pixel_neighbours``)
  and in features (Euclidean, ``neighbours``), against the held-out images' own nearest distances.
  The copy rule: pixel distance strictly below the held-out 1st percentile (``COPY_RULE``).
  Authenticity (Alaa et al. 2022) beside it.
- Membership (``membership``): GAN-Leaks AUC in both spaces, and LOGAN with a run's discriminator.

``audit_sets`` computes an ``AuditResult``; ``write_audit`` writes the folder ``medsyn audit``
makes; ``read_copies`` reads its copies back and ``audited_images_digest`` which images it audited
(``medsyn curate --drop-copies``).
"""
from __future__ import annotations

from medsyn.audit.memorisation import COPY_RULE
from medsyn.audit.result import AuditResult
from medsyn.audit.sets import audit_sets, check_sets
from medsyn.audit.store import audited_images_digest, read_copies, write_audit

__all__ = ["COPY_RULE", "AuditResult", "audit_sets", "audited_images_digest", "check_sets", "read_copies",
           "write_audit"]
