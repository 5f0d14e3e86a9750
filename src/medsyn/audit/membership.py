"""Membership inference: can an attacker tell the training images (members) from held-out ones?

GAN-Leaks (Chen et al. 2020), full black-box: an image's score is minus its distance to the
nearest synthetic image; a generator that memorised its training images puts synthetic images
nearer to them than to images it never saw. LOGAN (Hayes et al. 2019), white-box: the run's own
discriminator scores each image; an overfitted discriminator calls its training images more real.

Either way the number is the ROC AUC of members against non-members: 0.5 is no leak, 1 is every
training image recognised. Its interval is the percentile bootstrap of medsyn's classification
metrics (``bootstrap_ci``), seeded.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from enum import StrEnum

import numpy as np

N_BOOT = 1000  # bootstrap resamples of the AUC interval


class Attack(StrEnum):
    GAN_LEAKS = "gan-leaks"  # distance to the nearest synthetic image (Chen et al. 2020)
    LOGAN = "logan"  # the run's discriminator (Hayes et al. 2019)


@dataclass(frozen=True)
class MembershipResult:
    """One attack's AUC of members (training images) against non-members (held-out images).

    Attributes:
        attack: an ``Attack``.
        space: where the scores come from ("pixels", a feature extractor, "discriminator").
        auc: ROC AUC; 0.5 means the attack cannot tell members from non-members.
        ci_low, ci_high: 95% percentile-bootstrap interval.
        members, non_members: how many images of each.
    """

    attack: Attack
    space: str
    auc: float
    ci_low: float
    ci_high: float
    members: int
    non_members: int

    def to_json(self) -> dict:
        return asdict(self)

    def describe(self) -> str:
        return f"{self.auc:.2f} [{self.ci_low:.2f}, {self.ci_high:.2f}]"


def membership_auc(member_scores: np.ndarray, non_member_scores: np.ndarray, attack: Attack, space: str,
                   seed: int = 0, n_boot: int = N_BOOT) -> MembershipResult:
    """ROC AUC (higher score = more likely a member) with a seeded bootstrap interval.

    Raises:
        ValueError: a side is empty or a score is not finite.
    """
    from sklearn.metrics import roc_auc_score

    from medsyn.metrics.classification import bootstrap_ci

    members, others = np.asarray(member_scores, np.float64), np.asarray(non_member_scores, np.float64)
    if not len(members) or not len(others):
        raise ValueError(f"membership AUC needs members and non-members, got {len(members)} and {len(others)}")
    scores = np.concatenate([members, others])
    if not np.isfinite(scores).all():
        raise ValueError("membership scores must be finite")
    truth = np.concatenate([np.ones(len(members), np.int64), np.zeros(len(others), np.int64)])
    auc = float(roc_auc_score(truth, scores))
    # bootstrap_ci reads a binary score from column 1 of a (N, 2) "probability" array; only ranks matter for AUC
    low, high = bootstrap_ci(truth, np.stack([-scores, scores], axis=1), "auc", n_boot=n_boot, seed=seed)
    return MembershipResult(Attack(attack), space, auc, low, high, len(members), len(others))


def gan_leaks(member_distances: np.ndarray, non_member_distances: np.ndarray, space: str,
              seed: int = 0) -> MembershipResult:
    """GAN-Leaks' AUC from each image's distance to its nearest synthetic image (nearer: more likely a member)."""
    return membership_auc(-np.asarray(member_distances), -np.asarray(non_member_distances), Attack.GAN_LEAKS, space, seed)
