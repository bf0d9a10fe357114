"""Calibration sample selection by density and diversity in latent space (EDA-DM's calibration-level alignment).

From a pool of FP-trajectory latents at one timestep, pick k whose distribution matches the pool's. The criterion
is the kernel maximum mean discrepancy (MMD) between the chosen set and the pool, minimised greedily (kernel
herding): with a Gaussian kernel K, adding x to a chosen set S of size m - 1 lowers MMD^2 most for

    x = argmax  mean_p K(x, p)  -  (1 / m) * sum_{s in S} K(x, s)
               (density: dense      (diversity: far from what is
                regions first)        already chosen)

so dense regions are represented in proportion to their mass and the spread is covered. The bandwidth is the
median pairwise distance of the pool (the usual heuristic). No randomness: ties go to the lower pool index.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from dgq_compiler.errors import DgqError


def _sq_distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    d = (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2.0 * a @ b.T
    return np.maximum(d, 0.0)


def bandwidth(pool: np.ndarray) -> float:
    """sigma^2 of the Gaussian kernel: the median squared pairwise distance of the pool (> 0)."""
    d = _sq_distances(pool, pool)
    upper = d[np.triu_indices(len(pool), k=1)]
    positive = upper[upper > 0]
    return float(np.median(positive)) if positive.size else 1.0


def kernel(a: np.ndarray, b: np.ndarray, sigma2: float) -> np.ndarray:
    return np.exp(-_sq_distances(a, b) / sigma2)


def select_samples(pool, k: int) -> list[int]:
    """Indices of k pool rows (features [P, D]) chosen by greedy MMD minimisation, in the order chosen."""
    pool = np.asarray(pool, dtype=np.float64).reshape(len(pool), -1)
    if not 1 <= k <= len(pool):
        raise DgqError(f"cannot choose {k} samples from a pool of {len(pool)}: expected 1..{len(pool)}")
    gram = kernel(pool, pool, bandwidth(pool))
    density = gram.mean(axis=1)
    similarity = np.zeros(len(pool))
    chosen: list[int] = []
    for m in range(1, k + 1):
        score = density - similarity / m
        score[chosen] = -np.inf
        best = int(np.argmax(score))  # the first maximum: deterministic ties
        chosen.append(best)
        similarity += gram[best]
    return chosen


@dataclass(frozen=True)
class MatchReport:
    """How well a chosen set's statistics match its pool's (lower is better; 0 = identical)."""
    mmd: float              # kernel MMD (pool bandwidth) between chosen set and pool
    mean_error: float       # |mean(chosen) - mean(pool)| averaged over features, in units of the pool's std
    std_error: float        # |std(chosen) / std(pool) - 1| averaged over features
    random_mmd: float       # the same MMD for random subsets of the same size (mean of `draws`), for scale

    def to_dict(self) -> dict:
        return {k: round(v, 6) for k, v in asdict(self).items()}


def _mmd(pool, chosen, sigma2) -> float:
    kpp = kernel(pool, pool, sigma2).mean()
    kcc = kernel(chosen, chosen, sigma2).mean()
    kpc = kernel(pool, chosen, sigma2).mean()
    return float(np.sqrt(max(kpp + kcc - 2 * kpc, 0.0)))


def match_report(pool, indices, seed: int = 0, draws: int = 8) -> MatchReport:
    pool = np.asarray(pool, dtype=np.float64).reshape(len(pool), -1)
    chosen = pool[list(indices)]
    sigma2 = bandwidth(pool)
    std = pool.std(axis=0)
    std = np.where(std > 0, std, 1.0)
    rng = np.random.default_rng(seed)
    random = [_mmd(pool, pool[rng.choice(len(pool), len(chosen), replace=False)], sigma2) for _ in range(draws)]
    chosen_std = chosen.std(axis=0) if len(chosen) > 1 else np.zeros(pool.shape[1])
    return MatchReport(mmd=_mmd(pool, chosen, sigma2),
                       mean_error=float((np.abs(chosen.mean(0) - pool.mean(0)) / std).mean()),
                       std_error=float(np.abs(chosen_std / std - 1.0).mean()),
                       random_mmd=float(np.mean(random)))
