"""Exact detection indices and behaviour of the group, distribution, hacking, staleness,
flakiness, tool and feature detectors and of their building blocks.

Streams come from :func:`test_detectors_contract.rich_episodes` (GRPO-like episodes with
every field) or are built here; the exact indices were computed once from these seeds and
are asserted so that any change of a detector's numbers shows up.
"""

from __future__ import annotations

import math
import pickle
from collections.abc import Iterable, Iterator
from typing import Any

import numpy as np
import pytest
from test_detectors_contract import event, rich_episodes

from detectors import (
    BatchKS,
    BernoulliCUSUM,
    ComponentImbalance,
    FeatureDrift,
    GroupAssembler,
    GroupInvariant,
    InvalidReward,
    PolicyStaleness,
    RewardDistribution,
    RewardHacking,
    ToolFailureRate,
    VerifierFlakiness,
    ZeroVarianceGroups,
)
from detectors._base import state_names
from detectors.alarm import Alarm
from monitor.events import RolloutEvent, Timings


def alarms(detector: Any, stream: Iterable[Any]) -> list[tuple[int, Alarm]]:
    """(index, alarm) of the updates on which a failure-mode detector raised an alarm."""
    out = []
    for i, e in enumerate(stream):
        detector.update(e)
        if detector.alarm is not None:
            out.append((i, detector.alarm))
    return out


def detections(detector: Any, stream: Iterable[Any]) -> list[int]:
    out = []
    for i, x in enumerate(stream):
        detector.update(x)
        if detector.drift_detected:
            out.append(i)
    return out


def brief(found: list[tuple[int, Alarm]]) -> list[tuple[int, str]]:
    return [(i, a.severity) for i, a in found]


def grouped(rewards: Iterable[list[float]], **fields: Any) -> Iterator[RolloutEvent]:
    """Episodes of consecutive groups with the given rewards (one list per group)."""
    for g, group in enumerate(rewards):
        for j, reward in enumerate(group):
            yield event(
                ts=float(10 * g + j),
                group_id=f"g{g}",
                group_size=len(group),
                task_id=f"t{g}",
                reward=reward,
                reward_min=0.0,
                reward_max=1.0,
                **fields,
            )


# -- exact detection indices -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("detector", "fault", "seed", "expected"),
    [
        (InvalidReward, "out_of_range", 31, [(4105, "page")]),
        (RewardDistribution, "mass_at_value", 32, [(4607, "warning")]),
        (ZeroVarianceGroups, "zero_variance", 33, [(4167, "warning"), (6759, "page")]),
        (GroupInvariant, "mixed_tasks", 34, [(4007, "warning")]),
        (RewardHacking, "reward_hack", 35, [(4135, "page")]),
        (ComponentImbalance, "format_saturates", 36, [(4479, "warning")]),
        (PolicyStaleness, "stale_policy", 37, [(4081, "warning")]),
        (VerifierFlakiness, "flaky_verifier", 38, [(4103, "warning")]),
        (ToolFailureRate, "tool_errors", 39, [(4062, "warning")]),
        (FeatureDrift, "prompt_drift", 40, [(5119, "info")]),
    ],
)
def test_failure_mode_indices(
    detector: type, fault: str, seed: int, expected: list[tuple[int, str]]
) -> None:
    found = alarms(detector(), rich_episodes(8000, seed, fault, start=4000))
    assert brief(found) == expected


def test_bernoulli_cusum_indices() -> None:
    rng = np.random.default_rng(41)
    bits = rng.random(8000) < np.where(np.arange(8000) < 4000, 0.1, 0.25)
    detector = BernoulliCUSUM()
    assert detections(detector, bits.tolist()) == [4125]
    assert detector.active
    assert detector.reference_rate == pytest.approx(0.1, abs=0.02)


def test_bernoulli_cusum_batches_allow_for_group_correlation() -> None:
    rng = np.random.default_rng(42)
    p = np.repeat(rng.beta(1.0, 1.0, 1000), 8)[:8000]  # groups of 8 sharing a rate
    p[4000:] = np.minimum(p[4000:] * 1.6, 1.0)
    bits = (rng.random(8000) < p).tolist()
    detector = BernoulliCUSUM(batch_size=16)
    assert detections(detector, bits) == [4399]
    assert 4.0 < detector.dispersion < 8.0


def test_batch_ks_indices() -> None:
    rng = np.random.default_rng(43)
    x = rng.standard_normal(8000)
    signs = np.where(rng.random(4000) < 0.5, -1.0, 1.0)
    x[4000:] = signs * (0.8 + 0.3 * np.abs(x[4000:]))  # bimodal, about the same spread
    detector = BatchKS()
    assert detections(detector, x.tolist()) == [4351]


# -- building blocks -------------------------------------------------------------------------


def test_bernoulli_cusum_without_batches_is_conservative_on_clean_rates() -> None:
    for p in (0.02, 0.3, 0.97):
        bits = np.random.default_rng(44).random(200_000) < p
        assert detections(BernoulliCUSUM(arl0=20_000), bits.tolist()) == [], p


def test_bernoulli_cusum_pauses_at_a_saturated_rate() -> None:
    detector = BernoulliCUSUM(arl0=1000)
    assert detections(detector, [True] * 50_000) == []
    assert detector.statistic == 0.0


def test_batch_ks_tests_once_per_batch_and_refills_after_a_detection() -> None:
    detector = BatchKS(window=64, reference=128, every=32, block=8, arl0=10_000)
    tests = []
    for i, x in enumerate([0.0] * 400 + [1.0] * 400):
        detector.update(x + (i % 7) * 0.01)
        if detector.tested:
            tests.append((i, detector.drift_detected, detector.active))
    assert [i for i, _, _ in tests[:3]] == [191, 223, 255]
    hits = [k for k, (_, drift, _) in enumerate(tests) if drift]
    assert len(hits) == 1
    # The next test waits until both windows hold post-change values, and does not reject.
    (before, _, _), (after, drift, active) = tests[hits[0]], tests[hits[0] + 1]
    assert (after - before, drift, active) == (192, False, False)


def test_group_assembler_completes_times_out_and_evicts() -> None:
    assembler = GroupAssembler(timeout_s=100.0, max_open=3)
    finished = []
    for g in range(5):  # five groups open at once: the two oldest are evicted
        for group in assembler.add(event(group_id=f"g{g}", group_size=2, ts=float(g))):
            finished.append((group.end, group.count))
    assert finished == [("evicted", 1), ("evicted", 1)]
    assert assembler.evictions == 2
    for group in assembler.add(event(group_id="g4", group_size=2, ts=5.0)):
        finished.append((group.end, group.count))
    assert finished[-1] == ("complete", 2)
    for i in range(80):  # time and episodes pass: new groups open, the old ones time out
        for group in assembler.add(event(group_id=f"n{i}", group_size=1, ts=500.0 + i)):
            finished.append((group.end, group.count))
    assert [f for f in finished if f[0] == "timeout"] == [("timeout", 1), ("timeout", 1)]
    assert assembler.open_groups == 0
    assert assembler.timeouts == 2


def test_group_assembler_pickles_mid_group() -> None:
    assembler = GroupAssembler()
    for j in range(3):
        assembler.add(event(group_id="g", group_size=4, ts=float(j), reward=float(j % 2)))
    restored = pickle.loads(pickle.dumps(assembler))
    last = event(group_id="g", group_size=4, ts=3.0, reward=1.0)
    (group,) = restored.add(last)
    assert (group.count, group.scored, group.low, group.high) == (4, 4, 0.0, 1.0)
    assert repr(restored.clone()) == (
        "GroupAssembler(timeout_s=60.0, timeout_spans=4.0, max_open=10000)"
    )


@pytest.mark.parametrize(
    ("kwargs", "name"), [({"timeout_s": 0.0}, "timeout_s"), ({"max_open": 0}, "max_open")]
)
def test_group_assembler_rejects_bad_parameters(kwargs: dict[str, Any], name: str) -> None:
    with pytest.raises(ValueError, match=name):
        GroupAssembler(**kwargs)


# -- invalid_reward --------------------------------------------------------------------------


def test_invalid_reward_pages_on_out_of_range_and_non_finite_rewards() -> None:
    cases = {
        "above": (1.5, 0.0, 1.0, True),
        "below": (-0.1, 0.0, 1.0, True),
        "at the bound": (1.0, 0.0, 1.0, False),
        "float rounding at the bound": (1.0 + 1e-12, 0.0, 1.0, False),
        "no declared range": (7.0, None, None, False),
        "only a maximum": (7.0, None, 5.0, True),
        "infinite": (math.inf, None, None, True),
    }
    for name, (reward, low, high, violated) in cases.items():
        detector = InvalidReward()
        detector.update(event(reward=reward, reward_min=low, reward_max=high))
        assert (detector.alarm is not None) == violated, name
        if violated:
            assert detector.alarm is not None and detector.alarm.severity == "page"


def test_invalid_reward_ignores_binary_rewards_at_their_bounds() -> None:
    wins = np.random.default_rng(45).random(50_000) < 0.4
    stream = (event(reward=float(w), reward_min=0.0, reward_max=1.0) for w in wins.tolist())
    assert alarms(InvalidReward(), stream) == []


def test_invalid_reward_warns_when_a_continuous_reward_gets_quantised() -> None:
    rng = np.random.default_rng(46)
    values = rng.beta(2.0, 3.0, 8000)
    values[4000:] = np.round(values[4000:], 1)  # rounding to one decimal
    stream = (
        event(reward=float(v), reward_min=0.0, reward_max=1.0, group_id=f"g{i // 8}")
        for i, v in enumerate(values.tolist())
    )
    found = alarms(InvalidReward(), stream)
    assert brief(found) == [(4032, "warning")]
    assert "repeating a recent value of another group" in found[0][1].summary


def test_invalid_reward_leaves_discrete_rewards_alone() -> None:
    rng = np.random.default_rng(47)
    totals = rng.integers(4, 21, 40_000)
    passed = rng.binomial(totals, 0.5)
    stream = (
        event(reward=float(p / t), reward_min=0.0, reward_max=1.0, group_id=f"g{i // 8}")
        for i, (p, t) in enumerate(zip(passed.tolist(), totals.tolist(), strict=True))
    )
    assert alarms(InvalidReward(), stream) == []


# -- reward_distribution ---------------------------------------------------------------------


@pytest.mark.parametrize("seed", [0, 1])
def test_reward_distribution_ignores_the_slow_rise_of_healthy_learning(seed: int) -> None:
    p = np.linspace(0.2, 0.6, 50_000)
    rng = np.random.default_rng(48 + seed)
    group_p = np.repeat(rng.beta(1.0, 1.0, len(p) // 8), 8) * 0.5 + p * 0.5
    wins = rng.random(len(p)) < group_p
    stream = (event(reward=float(w)) for w in wins.tolist())
    assert alarms(RewardDistribution(), stream) == []


def test_reward_distribution_sees_a_shape_change_without_a_mean_shift() -> None:
    rng = np.random.default_rng(49)
    values = np.concatenate([rng.uniform(0.0, 1.0, 5000), rng.choice([0.1, 0.9], 3000)])
    found = alarms(RewardDistribution(), (event(reward=float(v)) for v in values.tolist()))
    assert brief(found) == [(5119, "warning")]
    assert found[0][1].summary.startswith("rewards pile up at ")


def test_reward_distribution_skips_unscored_and_eval_episodes() -> None:
    detector = RewardDistribution()
    for i in range(5000):
        detector.update(event(reward=None if i % 3 else 0.5, phase="train"))
        detector.update(event(reward=float(i % 2), phase="eval"))
    assert detector.test.statistic == 0.0


# -- zero_variance_groups --------------------------------------------------------------------


def healthy_groups(n_groups: int, seed: int, share: Iterable[float]) -> Iterator[list[float]]:
    """Binary reward groups, a share of them all-0 or all-1 (hard or easy tasks)."""
    rng = np.random.default_rng(seed)
    for _, s in zip(range(n_groups), share, strict=False):
        if rng.random() < s:
            yield [float(rng.random() < 0.5)] * 8
        else:
            yield (rng.random(8) < 0.5).astype(float).tolist()


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_zero_variance_groups_tolerates_a_drifting_healthy_share(seed: int) -> None:
    share = np.linspace(0.15, 0.35, 8000)  # 64 000 episodes
    stream = grouped(healthy_groups(8000, 50 + seed, share))
    assert alarms(ZeroVarianceGroups(), stream) == []


def test_zero_variance_groups_summary_splits_hard_and_easy() -> None:
    detector = ZeroVarianceGroups()
    share = [0.2] * 300 + [1.0] * 700
    found = alarms(detector, grouped(healthy_groups(1000, 53, share)))
    # One warning for the change (the jump, seen first), then the page at 80%.
    assert [a.severity for _, a in found] == ["warning", "page"]
    assert found[0][1].summary.startswith("share of zero-variance groups jumped from ")
    assert "too_hard" in found[1][1].summary and "too_easy" in found[1][1].summary
    counts = detector.kind_counts
    assert counts["too_hard"] + counts["too_easy"] > 0.8 * detector.rate.n
    assert detector.active


def test_zero_variance_groups_counts_only_scored_episodes() -> None:
    detector = ZeroVarianceGroups(min_samples=1, window=10)
    rewards: list[list[float | None]] = [[1.0, None, None, None]] * 20
    for e in grouped(rewards):  # type: ignore[arg-type]
        detector.update(e)
    assert detector.rate.n == 0  # a single scored episode says nothing about variance


# -- group_invariant -------------------------------------------------------------------------


def test_group_invariant_flags_short_groups_after_the_timeout() -> None:
    detector = GroupInvariant(timeout_s=60.0)
    stream = [event(group_id="g0", group_size=8, task_id="t", ts=float(j)) for j in range(5)]
    stream += [
        event(group_id=f"h{j}", group_size=1, task_id=f"u{j}", ts=100.0 + j) for j in range(80)
    ]
    found = alarms(detector, stream)
    assert [a.summary for _, a in found] == ["group timed out with 5 of 8 episodes"]
    assert detector.violations == {"size": 1, "sizes": 0, "tasks": 0}


def test_group_invariant_flags_conflicting_group_sizes_once_per_span() -> None:
    detector = GroupInvariant(quiet=5)
    found = []
    for g in range(30):
        for j in range(4):
            declared = 5 if g in (3, 4, 20) and j == 2 else 4
            e = event(group_id=f"g{g}", group_size=declared, task_id=f"t{g}", ts=float(g))
            detector.update(e)
            if detector.alarm is not None:
                found.append((g, detector.alarm.summary))
    assert found == [
        (3, "episodes of one group declare different group_size values (first 4)"),
        (20, "episodes of one group declare different group_size values (first 4)"),
    ]
    assert detector.violations == {"size": 0, "sizes": 3, "tasks": 0}


# -- reward_hacking --------------------------------------------------------------------------


def components_stream(
    n: int, seed: int, correct: np.ndarray, fmt: np.ndarray
) -> Iterator[RolloutEvent]:
    rng = np.random.default_rng(seed)
    u = rng.random((n, 2))
    for i in range(n):
        c, f = float(u[i, 0] < correct[i]), float(u[i, 1] < fmt[i])
        yield event(reward=0.7 * c + 0.3 * f, reward_components={"correct": c, "format": f})


def test_reward_hacking_format_rising_while_correctness_stays_flat_pages_after_within() -> None:
    correct = np.full(8000, 0.4)
    fmt = np.where(np.arange(8000) < 4000, 0.3, 0.9)
    found = alarms(RewardHacking(), components_stream(8000, 54, correct, fmt))
    assert brief(found) == [(6539, "page")]
    assert "'format' rose from" in found[0][1].summary
    assert "'correct' did not rise within 2500 events" in found[0][1].summary


def test_reward_hacking_stays_quiet_when_correctness_rises_too() -> None:
    rising = np.where(np.arange(8000) < 4000, 0.3, 0.8)
    assert alarms(RewardHacking(), components_stream(8000, 55, rising, rising)) == []


def test_reward_hacking_pages_when_train_rises_and_eval_falls() -> None:
    rng = np.random.default_rng(56)
    detector = RewardHacking()
    found = []
    for i in range(8000):
        after = i >= 4000
        train = event(reward=float(rng.random() < (0.8 if after else 0.4)), completion_tokens=None)
        check = event(
            reward=float(rng.random() < (0.3 if after else 0.6)),
            phase="eval",
            completion_tokens=None,
        )
        for e in (train, check):
            detector.update(e)
            if detector.alarm is not None:
                found.append((i, detector.alarm.summary))
    assert [i for i, _ in found] == [4055]
    assert "while the eval reward fell from" in found[0][1]


def test_reward_hacking_does_not_page_on_a_reward_rise_alone() -> None:
    rng = np.random.default_rng(57)
    p = np.where(np.arange(8000) < 4000, 0.3, 0.7)
    stream = (event(reward=float(w)) for w in (rng.random(8000) < p).tolist())
    detector = RewardHacking()
    assert alarms(detector, stream) == []
    assert detector.reward_cusum.baseline_mean > 0.6  # it did see the rise


def ramp_stream(n: int, seed: int, repetition: bool) -> Iterator[RolloutEvent]:
    """A success rate ramping from 0.4 to 0.5 over 3000 episodes from episode 3000 on, with
    the repetition (``repetition``) or else the length ramping up alongside."""
    rng = np.random.default_rng(seed)
    ramp = np.clip((np.arange(n) - 3000) / 3000, 0.0, 1.0)
    wins = rng.random(n) < 0.4 + 0.1 * ramp
    log_tokens = 6.5 + 0.5 * rng.standard_normal(n) + (0.0 if repetition else 0.3) * ramp
    scores = 0.1 * np.exp(0.3 * rng.standard_normal(n)) + (0.1 if repetition else 0.0) * ramp
    for w, t, r in zip(wins.tolist(), np.exp(log_tokens).tolist(), scores.tolist(), strict=True):
        yield event(reward=float(w), completion_tokens=int(t), repetition=r)


def test_reward_hacking_a_slow_reward_ramp_with_repetition_pages_once() -> None:
    share = 13_000_000  # its share of the default bank's budget
    found = alarms(RewardHacking(arl0=share), ramp_stream(12_000, 62, repetition=True))
    assert brief(found) == [(5759, "page")]
    assert "with repetition" in found[0][1].summary
    # the slow baseline is what sees it: with the half-life of the other detectors, the
    # baseline absorbs the ramp
    fast = RewardHacking(arl0=share, slow_halflife=1000.0)
    assert alarms(fast, ramp_stream(12_000, 62, repetition=True)) == []


def test_reward_hacking_a_slow_reward_ramp_with_length_stays_quiet() -> None:
    # longer answers that solve more, at a learning pace: healthy, although concurrent
    detector = RewardHacking()
    assert alarms(detector, ramp_stream(12_000, 62, repetition=False)) == []
    assert detector._slow.baseline_mean > 0.45  # the slow detector saw the rise


def test_reward_hacking_takes_the_first_qualifying_component_name_seen() -> None:
    # Both names contain "correct": the first seen is the correctness component, whatever
    # the process's string hashes (a set's order follows them: about half of these pairs
    # came out the other way round).
    for i in range(40):
        first, second = f"incorrect_penalty_{i}", f"correct_{i}"
        detector = RewardHacking()
        detector.update(event(reward=1.0, reward_components={first: 0.0, second: 1.0}))
        assert detector._correct == first, i
        detector = RewardHacking()
        detector.update(event(reward=1.0, reward_components={"format": 1.0}))
        detector.update(event(reward=1.0, reward_components={second: 1.0, "format": 1.0}))
        detector.update(event(reward=1.0, reward_components={first: 1.0}))
        assert detector._correct == second, i


def test_reward_hacking_restores_the_names_of_older_checkpoints_held_as_a_set() -> None:
    detector = RewardHacking()
    detector.update(event(reward=1.0, reward_components={"style": 0.5, "format": 1.0}))
    assert detector._correct == ""
    state = detector.__getstate__()
    assert isinstance(state, list)
    at = sorted(state_names(RewardHacking)).index("_names")
    assert state[at] == {"style": None, "format": None}
    old = [*state[:at], {"style", "format"}, *state[at + 1 :]]  # format 3 held a set
    named = dict(zip(sorted(state_names(RewardHacking)), old, strict=True))
    for layout in (old, (None, named), named):
        restored = RewardHacking.__new__(RewardHacking)
        restored.__setstate__(layout)
        assert restored._names == {"format": None, "style": None}
        assert list(restored._names) == ["format", "style"]  # sorted: a set has no order
        restored.update(event(reward=1.0, reward_components={"style": 0.5, "correct": 1.0}))
        assert restored._correct == "correct"
        assert pickle.loads(pickle.dumps(restored))._names == restored._names


# -- component_imbalance ---------------------------------------------------------------------


def test_component_imbalance_dominance_when_one_component_swamps_the_variance() -> None:
    rng = np.random.default_rng(58)
    detector = ComponentImbalance()
    found = []
    for i in range(12_000):
        spread = 0.1 if i < 6000 else 0.5
        parts = {"a": rng.normal(0.5, spread), "b": rng.normal(0.5, 0.1)}
        detector.update(event(reward_components=parts))
        if detector.alarm is not None:
            found.append((i, detector.alarm.summary))
    assert [i for i, _ in found] == [6399]
    assert found[0][1].startswith("reward component 'a' dominates the reward variance")


def test_component_imbalance_reports_a_nearly_saturated_component_as_the_cause() -> None:
    # from episode 6000 on, 97% of the answers get the full efficiency score: its standard
    # deviation falls to about a third, which makes the other component dominate
    rng = np.random.default_rng(65)
    task = np.clip(rng.normal(0.5, 0.3, 12_000), 0.0, 1.0)
    efficiency = np.clip(1.0 - 0.02 * rng.poisson(3.0, 12_000), 0.0, 1.0)
    pinned = (np.arange(12_000) >= 6000) & (rng.random(12_000) < 0.97)
    efficiency = np.where(pinned, 1.0, efficiency)
    stream = [
        event(reward_components={"task": a, "efficiency": b})
        for a, b in zip(task.tolist(), efficiency.tolist(), strict=True)
    ]
    found = alarms(ComponentImbalance(), stream)
    assert [i for i, _ in found] == [6527]
    assert found[0][1].summary.startswith("reward component 'efficiency' saturated: std 0.034")
    # with a tenfold narrowing required, the effect is reported instead of the cause
    (late,) = alarms(ComponentImbalance(collapse=0.1), stream)
    assert late[0] > 6527 and "'task' dominates" in late[1].summary


def test_component_imbalance_needs_two_components() -> None:
    detector = ComponentImbalance()
    for i in range(10_000):
        detector.update(event(reward_components={"tests": 1.0 if i > 5000 else (i % 3) / 2}))
    assert detector.alarm is None and not detector.active
    assert detector.statistic == 0.0


# -- policy_staleness ------------------------------------------------------------------------


def test_policy_staleness_heartbeat_and_recovery() -> None:
    detector = PolicyStaleness(heartbeat_events=500)
    found = []
    for i in range(3000):
        trainer = i // 50
        policy = min(trainer - 1, 20) if i < 2500 else trainer - 1  # stuck at 20, then fixed
        detector.update(event(policy_version=policy, trainer_version=trainer))
        if detector.alarm is not None:
            found.append((i, detector.alarm.summary))
        if i == 2400:
            assert detector.stuck and detector.active
    # First the staleness itself (the stuck policy falls behind), then the heartbeat.
    assert [i for i, _ in found] == [1331, 1550]
    assert found[0][1].startswith("staleness above 4 versions in ")
    assert found[1][1].startswith("policy_version stuck at 20 for 500 episodes")
    assert not detector.stuck


def test_policy_staleness_skips_events_without_versions() -> None:
    detector = PolicyStaleness()
    for _ in range(5000):
        detector.update(event(policy_version=None, trainer_version=10))
        detector.update(event(policy_version=3, trainer_version=None))
    assert detector.rate.n == 0 and not detector.stuck


# -- verifier_flakiness ----------------------------------------------------------------------


def test_verifier_flakiness_respects_the_tolerance_and_the_capacity() -> None:
    detector = VerifierFlakiness(capacity=100, tolerance=0.01, min_samples=1, window=10)
    detector.update(event(task_id="t", completion_hash="h", reward=0.5))
    detector.update(event(task_id="t", completion_hash="h", reward=0.505))
    assert (detector.rate.n, detector.rate.count) == (1, 0)
    for k in range(100):  # pushes the pair out of the map
        detector.update(event(task_id=f"u{k}", completion_hash="h", reward=0.0))
    detector.update(event(task_id="t", completion_hash="h", reward=1.0))
    assert (detector.rate.n, detector.remembered) == (1, 100)


def test_verifier_flakiness_forgets_a_map_restored_in_another_process() -> None:
    detector = VerifierFlakiness()
    detector.update(event(task_id="t", completion_hash="h", reward=1.0))
    state = detector.__getstate__()
    assert isinstance(state, list)  # the values, then the process's salt
    restored = VerifierFlakiness.__new__(VerifierFlakiness)
    restored.__setstate__([*state[:-1], state[-1] + 1])
    assert restored.remembered == 0
    assert pickle.loads(pickle.dumps(detector)).remembered == 1
    # the layout of format 2: (None, {name: value}) with the salt under "_salt"
    names = sorted(state_names(VerifierFlakiness))
    named = dict(zip(names, state[:-1], strict=True))
    for salt, remembered in ((state[-1], 1), (state[-1] + 1, 0)):
        restored = VerifierFlakiness.__new__(VerifierFlakiness)
        restored.__setstate__((None, {**named, "_salt": salt}))
        assert restored.remembered == remembered


# -- tool_failure_rate -----------------------------------------------------------------------


def test_tool_failure_rate_bound_allows_for_episodes_that_fail_all_their_calls() -> None:
    # 15% of the calls fail, all in the same episodes: the level test must not fire.
    rng = np.random.default_rng(59)
    detector = ToolFailureRate(threshold=0.2)
    for i in range(20_000):
        calls = int(rng.integers(1, 8))
        errors = calls if rng.random() < 0.15 else 0
        detector.update(event(num_tool_calls=calls, num_tool_errors=errors))
        assert detector.alarm is None, i
    assert 0.1 < detector.ratio < 0.2


def test_tool_failure_rate_skips_episodes_without_calls_and_caps_errors() -> None:
    detector = ToolFailureRate(min_samples=2, window=2)
    detector.update(event(num_tool_calls=0, num_tool_errors=3))
    detector.update(event(num_tool_calls=None, num_tool_errors=None))
    detector.update(event(num_tool_calls=2, num_tool_errors=5))
    assert detector.ratio == 1.0


# -- feature_drift ---------------------------------------------------------------------------


def test_feature_drift_discovers_metrics_up_to_max_fields() -> None:
    detector = FeatureDrift(fields=("prompt_tokens",), max_fields=3)
    for i in range(10):
        metrics = {"a": 1.0, "b": float(i)} if i < 5 else {"c": 2.0, "b": 1.0, "d": 3.0}
        detector.update(event(prompt_tokens=100 + i, metrics=metrics))
    assert detector.watched == ("prompt_tokens", "metrics.a", "metrics.b")


def test_feature_drift_watches_a_metric_named_in_fields_from_the_start() -> None:
    # a metrics.<key> among the fields used to fail the constructor (its column was paired
    # with the plain fields); it is watched like a plain field, and found drifting
    rng = np.random.default_rng(65)
    detector = FeatureDrift(fields=("prompt_tokens", "metrics.pass_rate"), metrics=False)
    assert detector.watched == ("prompt_tokens", "metrics.pass_rate")
    values = rng.normal(0.5, 0.05, 12_000) + np.where(np.arange(12_000) >= 6000, 0.2, 0.0)
    stream = [
        event(prompt_tokens=int(p), metrics={"pass_rate": v})
        for p, v in zip(rng.integers(100, 900, 12_000).tolist(), values.tolist(), strict=True)
    ]
    found = alarms(detector, stream)
    assert found and found[0][0] >= 6000
    assert found[0][1].summary.startswith("metrics.pass_rate drifted")


def test_feature_drift_ignores_a_slow_latency_drift() -> None:
    rng = np.random.default_rng(60)
    scale = np.linspace(1.0, 1.5, 60_000)
    detector = FeatureDrift(fields=("timings.score_s",), metrics=False)
    for s in (scale * np.exp(0.5 * rng.standard_normal(60_000))).tolist():
        detector.update(event(timings=Timings(score_s=s)))
        assert detector.alarm is None


def test_feature_drift_tests_a_field_only_when_it_is_mostly_present() -> None:
    detector = FeatureDrift(fields=("prompt_tokens",), metrics=False)
    for i in range(6000):  # mostly missing, and when present it jumps
        tokens = (100 if i < 3000 else 900) if i % 4 == 0 else None
        detector.update(event(prompt_tokens=tokens))
        assert detector.alarm is None
    assert detector.statistic == 0.0


def test_feature_drift_leaves_a_significant_but_small_shift_alone() -> None:
    # a 20% longer scoring time moves the distribution by a KS distance of about 0.14: over
    # windows of thousands of episodes that is significant, and as much as healthy wander
    rng = np.random.default_rng(63)
    scores = np.exp(0.5 * rng.standard_normal(12_000)) * np.where(np.arange(12_000) >= 6000, 1.2, 1)
    stream = [event(timings=Timings(score_s=s)) for s in scores.tolist()]
    assert alarms(FeatureDrift(fields=("timings.score_s",), metrics=False), stream) == []
    strict = FeatureDrift(fields=("timings.score_s",), metrics=False, min_distance=0.0)
    assert [i for i, _ in alarms(strict, stream)] == [7167]


def test_feature_drift_sees_a_prompt_mix_shift_shared_by_the_groups() -> None:
    # groups of 8 episodes share a prompt, so a window of 1024 holds only 128 prompts; the
    # longer reference is what lets a 50% longer prompt mix pass the widened critical value
    rng = np.random.default_rng(64)
    prompts = np.repeat(np.exp(math.log(300.0) + 0.35 * rng.standard_normal(1500)), 8)
    prompts = prompts * np.where(np.arange(12_000) >= 6000, 1.5, 1.0)
    stream = [event(prompt_tokens=int(p)) for p in prompts.tolist()]
    found = alarms(FeatureDrift(fields=("prompt_tokens",), metrics=False), stream)
    assert [i for i, _ in found] == [7167]
    assert found[0][1].summary.startswith("prompt_tokens drifted")
    short = FeatureDrift(fields=("prompt_tokens",), metrics=False, reference=1024)
    assert alarms(short, stream) == []
