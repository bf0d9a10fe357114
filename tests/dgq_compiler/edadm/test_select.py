"""Density-and-diversity sample selection: planted pools, the match report, determinism."""
from __future__ import annotations

import numpy as np
import pytest

from dgq_compiler.edadm.select import match_report, select_samples
from dgq_compiler.errors import DgqError


def _two_clusters(big: int, small: int, seed: int = 0, dim: int = 16):
    rng = np.random.default_rng(seed)
    a = rng.normal(0.0, 1.0, (big, dim))
    b = rng.normal(0.0, 1.0, (small, dim)) + 12.0  # far apart: the cluster of a row is unambiguous
    pool = np.concatenate([a, b])
    return pool[rng.permutation(len(pool))]


@pytest.mark.parametrize("big, small, k", [(300, 100, 8), (240, 160, 10), (350, 50, 8)])
def test_two_cluster_pool_is_represented_in_proportion(big, small, k):
    pool = _two_clusters(big, small)
    chosen = select_samples(pool, k)
    in_small = int((pool[chosen].mean(axis=1) > 6).sum())
    assert len(set(chosen)) == k
    assert abs(in_small - k * small / (big + small)) <= 0.5 + 1e-9  # the nearest integer share, or a tie
    # a density-only rule (the k densest rows) takes the big cluster alone: the diversity term does the work
    gram_density = np.exp(-((pool[:, None] - pool[None]) ** 2).sum(-1) / np.median(
        ((pool[:, None] - pool[None]) ** 2).sum(-1))).mean(1)
    assert (pool[np.argsort(-gram_density)[:k]].mean(axis=1) > 6).sum() == 0


def test_chosen_set_matches_the_pool_better_than_random_subsets():
    pool = _two_clusters(300, 100, seed=1)
    chosen = select_samples(pool, 8)
    report = match_report(pool, chosen)
    assert report.mmd < 0.7 * report.random_mmd
    first = match_report(pool, list(range(8)))
    assert report.mmd < first.mmd and report.mean_error < first.mean_error


def test_selection_is_deterministic_and_checks_its_size():
    pool = _two_clusters(60, 20, seed=2)
    assert select_samples(pool, 5) == select_samples(pool.copy(), 5)
    assert select_samples(pool, len(pool))  # the whole pool is a valid choice
    with pytest.raises(DgqError, match="cannot choose 0 samples from a pool of 80"):
        select_samples(pool, 0)
