"""Intervals on planted data: the stated coverage, determinism, pairing, and the bootstrap's failure they avoid."""
import numpy as np
import pytest

from dgq_compiler.quality.intervals import (Interval, jackknife_interval, leave_one_out, mean_interval,
                                            resample_indices)


def test_bootstrap_mean_interval_covers_the_true_mean_about_95_percent_of_the_time():
    rng = np.random.default_rng(11)
    covered = 0
    trials = 300
    for trial in range(trials):
        values = rng.binomial(1, 0.6, size=32).astype(float) * 0.5 + rng.normal(0.2, 0.1, 32)  # mean 0.5
        interval, _ = mean_interval(values, resample_indices(32, 400, seed=trial))
        covered += interval.low <= 0.5 <= interval.high
    assert 0.88 <= covered / trials <= 0.985, covered / trials


def test_a_too_narrow_or_off_centre_interval_would_fail_the_coverage_check():
    # the planted check above can fail: quantiles of the wrong level cover far less
    rng = np.random.default_rng(11)
    covered = 0
    for trial in range(300):
        values = rng.normal(0.5, 0.3, 32)
        interval, _ = mean_interval(values, resample_indices(32, 400, seed=trial), level=0.5)
        covered += interval.low <= 0.5 <= interval.high
    assert covered / 300 < 0.7


def test_resamples_are_deterministic_for_a_seed_and_differ_across_seeds():
    a, b, c = resample_indices(32, 100, 5), resample_indices(32, 100, 5), resample_indices(32, 100, 6)
    assert a.shape == (100, 32) and a.min() >= 0 and a.max() < 32
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    values = np.arange(32.0)
    (first, reps_a), (second, reps_b) = mean_interval(values, a), mean_interval(values, b)
    assert first == second and np.array_equal(reps_a, reps_b)


def test_not_applicable_items_are_left_out_of_the_mean():
    values = np.array([1.0, np.nan, 0.0, np.nan])
    interval, replicates = mean_interval(values, resample_indices(4, 200, 0))
    assert interval.value == 0.5 and 0.0 <= interval.low <= interval.high <= 1.0
    assert np.all(np.isnan(replicates) | ((replicates >= 0) & (replicates <= 1)))


def test_jackknife_of_the_mean_is_the_textbook_standard_error():
    rng = np.random.default_rng(1)
    values = rng.normal(3.0, 2.0, 50)
    interval = jackknife_interval(values.mean(), leave_one_out(np.mean, values))
    se = values.std(ddof=1) / np.sqrt(50)
    assert interval.high - interval.value == pytest.approx(1.959963985 * se, rel=1e-8)
    assert jackknife_interval(0.1, np.array([0.0, 0.2, 0.4]), bounds=(0.0, np.inf)).low == 0.0


def test_frechet_distance_jackknife_covers_and_the_bootstrap_would_not():
    """On 32 Gaussian feature vectors the Fréchet distance's bootstrap replicates lie above the statistic
    (resamples repeat rows, the covariance shrinks); the jackknife interval contains the statistic's mean."""
    from models.evaluator import frechet_distance

    rng = np.random.default_rng(4)
    reference = rng.normal(size=(512, 16))
    draws = [rng.normal(size=(32, 16)) + 0.3 for _ in range(40)]
    values = np.array([frechet_distance(d, reference) for d in draws])
    covered = 0
    for d, v in zip(draws, values):
        interval = jackknife_interval(v, leave_one_out(lambda f: frechet_distance(f, reference), d))
        covered += interval.low <= values.mean() <= interval.high
    assert covered / len(draws) >= 0.85
    boot = [frechet_distance(draws[0][rows], reference) for rows in resample_indices(32, 200, 0)]
    assert np.quantile(boot, 0.025) > values[0]  # the percentile bootstrap misses its own statistic


def test_separation_is_non_overlap():
    assert Interval(1.0, 0.9, 1.1).separates_from(Interval(2.0, 1.2, 2.5))
    assert not Interval(1.0, 0.9, 1.3).separates_from(Interval(2.0, 1.2, 2.5))
    assert Interval(0.0, -1.0, 1.0).excludes(1.5) and not Interval(0.0, -1.0, 1.0).excludes(0.0)
