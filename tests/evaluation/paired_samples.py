"""Simulated paired scores for the paired-test and comparison tests: binormal pairs and a clustered null."""

from __future__ import annotations

import math

import numpy as np


def binormal_pair(rng: np.random.Generator, n: int, mu_a: float, mu_b: float,
                  rho: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Labels and two correlated scores: model m scores a positive N(mu_m, 1) and a negative N(0, 1).

    Both models share a N(0, rho) part of their noise (per sample), so their errors are correlated with
    correlation rho; each model's own scores stay unit-variance normal within each class.
    """
    y = rng.integers(0, 2, n)
    shared = math.sqrt(rho) * rng.normal(size=n)
    score_a = mu_a * y + shared + math.sqrt(1 - rho) * rng.normal(size=n)
    score_b = mu_b * y + shared + math.sqrt(1 - rho) * rng.normal(size=n)
    return y, score_a, score_b


def as_prob(score: np.ndarray, shift: float = 0.0) -> np.ndarray:
    """Two-column probabilities, P(class 1) a logistic of the score (monotone: AUROC unchanged)."""
    p1 = 1 / (1 + np.exp(-(score - shift)))
    return np.c_[1 - p1, p1]


def clustered_null(rng: np.random.Generator, seeds: tuple[int, int] = (1, 1), n_patients: int = 60,
                   patient_labels: bool = False) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Labels, patient ids and (S, n, 2) probabilities of two setups with equal population AUROC and accuracy.

    60 patients with 3-8 images each. A score is 1.5 y + u + e + t with a patient effect u ~ N(0, 2/3), an image
    effect e ~ N(0, 1/6) and a seed's own training noise t ~ N(0, 1/6) per image, so a seed's within-class ICC on
    the score scale is 2/3. The two setups' u are correlated 0.5, and so are their e: correlated models, not
    copies. Both
    setups have the same distribution, so every seed of either has the same population AUROC and accuracy
    (threshold at 0.75, from probabilities logistic in the score). Labels are per image, a patient's images
    positive with probability 0.2 or 0.8 (both classes inside many patients: Obuchowski's S11 term matters), or
    with patient_labels one label per patient (every image of a patient alike, the audit's setting).
    """
    sizes = rng.integers(3, 9, n_patients)
    groups = np.repeat(np.arange(n_patients), sizes)
    if patient_labels:
        y = np.repeat(rng.integers(0, 2, n_patients), sizes)
    else:
        y = (rng.random(len(groups)) < np.repeat(rng.choice([0.2, 0.8], n_patients), sizes)).astype(int)

    def correlated(size: int) -> list[np.ndarray]:
        shared = rng.normal(size=size)
        return [math.sqrt(0.5) * (shared + rng.normal(size=size)) for _ in range(2)]

    (ua, ub), (ea, eb) = correlated(n_patients), correlated(len(y))
    probs = []
    for u, e, n_seeds in ((ua, ea, seeds[0]), (ub, eb, seeds[1])):
        score = 1.5 * y + math.sqrt(2 / 3) * u[groups] + math.sqrt(1 / 6) * e
        score = score + math.sqrt(1 / 6) * rng.normal(size=(n_seeds, len(y)))
        p1 = 1 / (1 + np.exp(-(score - 0.75)))
        probs.append(np.stack([1 - p1, p1], axis=2))
    return y, groups, probs[0], probs[1]
