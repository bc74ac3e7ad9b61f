"""The written-out per-event paths of the detectors (and the single-precision sorts of the
drift tests) against the plain computations they replace: the same numbers, bit for bit."""

from __future__ import annotations

import random
from types import SimpleNamespace

import numpy as np
import pytest

from detectors import BernoulliCUSUM, FeatureDrift, InvalidReward
from detectors._base import state_names
from detectors.batch_ks import compare_windows, indicator_design_effect
from detectors.cusum import MeanShiftCUSUM
from detectors.rate_bound import RateBound


@pytest.mark.parametrize("seed", range(4))
def test_batch_ks_sorted_single_precision_windows_give_the_same_test(seed: int) -> None:
    # feature_drift sorts its single-precision values and passes them widened: the same
    # result as sorting the doubles, zeros of either sign and ties included.
    rng = np.random.default_rng(seed)
    pool = np.array([-0.0, 0.0, 1.0, -1.5, 2.25, 1e30, -1e-30], dtype=np.float32)
    for _ in range(50):
        reference = rng.choice(pool, int(rng.integers(8, 300))).astype(np.float32)
        current = rng.normal(size=int(rng.integers(8, 300))).astype(np.float32)
        if rng.random() < 0.5:
            current[: len(current) // 2] = rng.choice(pool, len(current) // 2)
        ordered = (np.sort(reference).astype(np.float64), np.sort(current).astype(np.float64))
        wide = reference.astype(np.float64), current.astype(np.float64)
        for block in (1, 4, 16):
            assert compare_windows(*wide, block, 0.0, ordered) == compare_windows(*wide, block, 0.0)


def test_batch_ks_indicator_design_effect_matches_np_diff() -> None:
    rng = np.random.default_rng(3)
    for _ in range(200):
        block = int(rng.integers(1, 20))
        indicator = np.repeat(rng.random(int(rng.integers(1, 80))) < 0.4, int(rng.integers(1, 9)))
        n, k = len(indicator), len(indicator) // block
        share = float(np.count_nonzero(indicator)) / n
        total = share * (1.0 - share)
        expected = 1.0
        if k >= 3 and total > 0.0:
            steps = np.diff(indicator[: k * block].reshape(k, block).sum(axis=1)) / block
            variance = float(steps @ steps) / (2.0 * (k - 1))
            expected = min(max(variance * block / total, 1.0), float(block))
        assert indicator_design_effect(indicator, block) == expected


@pytest.mark.parametrize("batch_size", [1, 3, 16])
def test_invalid_reward_feeds_its_share_tests_as_their_update_would(batch_size: int) -> None:
    # The within-batch branch of BernoulliCUSUM.update is inlined in InvalidReward.update:
    # the share tests must end up as if fed through update, after every episode.
    rng = random.Random(batch_size)
    kwargs = dict(warmup=4 * batch_size, baseline_halflife=50.0 * batch_size, arl0=2000.0)
    detector = InvalidReward(memory=8, batch_size=batch_size, **kwargs)
    bound = BernoulliCUSUM(odds_ratio=3.0, batch_size=batch_size, **{**kwargs, "arl0": 4000.0})
    repeat = BernoulliCUSUM(odds_ratio=3.0, batch_size=batch_size, **{**kwargs, "arl0": 4000.0})
    recent: list[float] = []
    for i in range(3000):
        at_bound = rng.random() < (0.1 if i < 1500 else 0.6)
        reward = rng.choice((0.0, 1.0)) if at_bound else round(rng.uniform(0.01, 0.99), 2)
        detector.update(
            SimpleNamespace(
                reward=reward,
                reward_min=0.0,
                reward_max=1.0,
                status="completed",
                phase="train",
                group_id=None,
            )
        )
        bound.update(at_bound)
        if not at_bound:
            recent = recent[-7:]  # the oldest of 8 leaves before the lookup
            repeat.update(reward in recent)
            recent.append(reward)
        for mine, plain in ((detector.bound_share, bound), (detector.repeat_share, repeat)):
            for slot in state_names(BernoulliCUSUM):
                assert getattr(mine, slot) == getattr(plain, slot), (i, slot)


def test_feature_drift_columns_hold_the_values_while_growing_and_wrapping() -> None:
    # min_distance near 1: no detection empties the columns
    detector = FeatureDrift(
        fields=("prompt_tokens", "timings.score_s"),
        window=16,
        reference=16,
        every=8,
        block=4,
        min_distance=0.99,
    )
    rng = random.Random(5)
    seen: list[tuple[float, float, float]] = []
    for i in range(100):
        tokens = rng.randint(0, 1000)
        score = None if i % 7 == 0 else rng.random()
        metrics = None if i % 5 == 0 else {"m": float(i)}
        timings = None if i % 11 == 0 else SimpleNamespace(score_s=score)
        detector.update(SimpleNamespace(prompt_tokens=tokens, timings=timings, metrics=metrics))
        assert detector.alarm is None
        missing = score is None or timings is None
        seen.append((tokens, np.nan if missing else score, np.nan if metrics is None else i))
        assert detector.watched == ("prompt_tokens", "timings.score_s", "metrics.m")[: 2 + (i > 0)]
        for column, values in zip(detector._columns, zip(*seen[-32:], strict=True), strict=False):
            oldest_first = np.roll(np.frombuffer(column, dtype=np.float32), -detector._pos)
            np.testing.assert_array_equal(oldest_first, np.array(values, dtype=np.float32))


def test_cusum_per_sample_charts_follow_the_plain_recursion() -> None:
    # The per-sample charts skip a side at 0 that stays at 0; the sides and run lengths must
    # equal the textbook recursion on the same clipped z, bit for bit.
    rng = random.Random(3)
    cusum = MeanShiftCUSUM(arl0=5000, warmup=64, batch_size=8, lags=6, fast_k=(0.5, 1.0))
    charts = [[0.0, 0.0, 0, 0], [0.0, 0.0, 0, 0]]
    checked = 0
    for i in range(40_000):
        x = rng.gauss(0.3 if (i // 5000) % 2 else 0.0, 1.0)
        inv, mean, drift = cusum._inv_sd, cusum._mean, cusum._drift
        cusum.update(x)
        if drift:
            charts = [[0.0, 0.0, 0, 0], [0.0, 0.0, 0, 0]]
            continue
        if not inv:
            continue
        z = min(max((x - mean) * inv, -cusum.clip), cusum.clip)
        for j, f in enumerate(cusum.fast_k):
            up, down, n_up, n_down = charts[j]
            up = up + z - f
            n_up, up = (n_up + 1, up) if up > 0.0 else (0, 0.0)
            down = down - z - f
            n_down, down = (n_down + 1, down) if down > 0.0 else (0, 0.0)
            charts[j] = [up, down, n_up, n_down]
            if cusum._drift and cusum._fired == 0 and j == 0:
                break
        got = [
            [cusum._u0, cusum._d0, cusum._nu0, cusum._nd0],
            [cusum._u1, cusum._d1, cusum._nu1, cusum._nd1],
        ]
        if cusum._drift and cusum._fired == 0:
            assert got[0] == charts[0]
        else:
            assert got == charts
        checked += 1
    assert checked > 30_000


def test_rate_bound_count_matches_the_window() -> None:
    rng = random.Random(5)
    rate = RateBound(threshold=0.1, window=50, min_samples=10)
    for i in range(5000):
        p = 0.3 if (i // 700) % 2 else 0.02
        rate.update(rng.randrange(1, 4) if rng.random() < p else 0)
        assert rate.count == sum(1 for label in rate._ring if label)
        assert rate.n == min(i + 1, 50)
