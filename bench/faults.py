"""The injected faults of the detection benchmark, one or more per detector id.

A :class:`Fault` names the detector id that should catch it, its magnitudes (the meaning of
a magnitude is in ``meaning``), the ones that are *large* (every such trial must be detected:
the recall target) and the environments it applies to. It changes the columns of a
:class:`~bench.scenarios.Stream` at or after the onset, in up to three stages: ``before``
the outcomes are drawn (success probability, length multiplier, failure rate, ...),
``after`` them (forced truncation, rescoring, group structure of rewards) and ``final``
(reported fields: reward values, versions, prompt lengths, latencies, group membership).

>>> from bench.scenarios import FAILURE_MODE_IDS
>>> sorted({fault.detector for fault in FAULTS.values()}) == sorted(FAILURE_MODE_IDS)
True
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from bench.scenarios import ENVS, TASKS, Stream, score

__all__ = ["FAULTS", "Fault", "faults_for"]

Stage = Callable[[Stream, float], None]
ALL_ENVS = tuple(ENVS)
#: Events over which a reward hack ramps up to full strength.
HACK_RAMP = 2000


def _nothing(s: Stream, magnitude: float) -> None:
    return None


@dataclass(frozen=True)
class Fault:
    """A fault kind: what it breaks, how strongly, and which detector id should say so."""

    name: str
    detector: str
    meaning: str
    magnitudes: tuple[float, ...]
    large: tuple[float, ...]
    envs: tuple[str, ...] = ALL_ENVS
    before: Stage = _nothing
    after: Stage = _nothing
    final: Stage = _nothing


# --------------------------------------------------------------------------------------------
# helpers


def _scored(s: Stream) -> np.ndarray:
    """Episodes with a reward (not failed, aborted or truncated)."""
    scored: np.ndarray = ~s.failed & ~s.aborted & ~s.truncated
    return scored


def _picked(s: Stream, share: float) -> np.ndarray:
    """Post-onset episodes selected with probability ``share`` (the faults' own draws)."""
    picked: np.ndarray = s.post & (s.fault_u < share)
    return picked


def _train_groups(s: Stream) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """First and last position of every group, and which groups lie wholly after the onset."""
    train = np.flatnonzero(s.group >= 0)
    first = np.full(s.n_groups, s.n)
    last = np.full(s.n_groups, -1)
    np.minimum.at(first, s.group[train], train)
    np.maximum.at(last, s.group[train], train)
    complete = np.bincount(s.group[train], minlength=s.n_groups) == s.group_size.max()
    after = (first >= s.onset) & complete & (last >= 0)
    return first, last, after


def _pick_groups(s: Stream, share: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    first, last, after = _train_groups(s)
    chosen = after & (s.fault_rng.random(s.n_groups) < share)
    return first, last, chosen


def _pre_mean(s: Stream) -> float:
    """Mean of the scored training rewards before the onset."""
    before = ~s.post & ~s.is_eval & ~np.isnan(s.reward)
    return float(np.mean(s.reward[before])) if before.any() else 0.5


# --------------------------------------------------------------------------------------------
# stage functions


def _error_burst(s: Stream, m: float) -> None:
    s.fail_rate = np.where(s.post, np.maximum(s.fail_rate, m), s.fail_rate)


def _masked_failure(s: Stream, m: float) -> None:
    hit = _picked(s, m) & _scored(s)
    s.masked |= hit
    s.masked_error |= hit & (s.fault_rng.random(s.n) < 0.5)  # half with an error, half silent


def _reward_drop_p(s: Stream, m: float) -> None:
    s.p = np.where(s.post, s.p * (1.0 - m), s.p)


def _reward_drop_repeats(s: Stream, m: float) -> None:
    # the same completion, scored by the broken verifier, fails as often as any other
    s.success = np.where(s.post & s.repeated & (s.fault_u < m), False, s.success)
    score(s)


def _length_collapse(s: Stream, m: float) -> None:
    s.len_mult = np.where(s.post, s.len_mult / m, s.len_mult)


def _length_explosion(s: Stream, m: float) -> None:
    s.len_mult = np.where(s.post, s.len_mult * m, s.len_mult)


def _truncation(s: Stream, m: float) -> None:
    cut = _picked(s, m) & ~s.failed & ~s.aborted
    s.truncated |= cut
    s.tokens = np.where(cut & ~s.turn_truncated, s.model.max_completion_tokens, s.tokens)
    s.repeated &= ~cut


def _out_of_range(s: Stream, m: float) -> None:
    hit = _picked(s, m) & ~np.isnan(s.reward)
    s.reward = np.where(hit, np.round(1.05 + 0.5 * s.fault_rng.random(s.n), 4), s.reward)


def _clipped(s: Stream, m: float) -> None:
    hit = _picked(s, m) & ~np.isnan(s.reward)
    s.reward = np.where(hit, 1.0, s.reward)


def _rounded(s: Stream, m: float) -> None:
    hit = _picked(s, m) & ~np.isnan(s.reward)
    s.reward = np.where(hit, np.round(s.reward, 1), s.reward)


def _mass_at_value(s: Stream, m: float) -> None:
    value = round(_pre_mean(s), 2)
    hit = _picked(s, m) & ~np.isnan(s.reward) & ~s.is_eval
    s.reward = np.where(hit, value, s.reward)


def _spread(s: Stream, m: float) -> None:
    mean = _pre_mean(s)
    hit = s.post & ~np.isnan(s.reward) & ~s.is_eval
    s.reward = np.where(hit, np.round(mean + (1.0 - m) * (s.reward - mean), 4), s.reward)


def _zero_variance(s: Stream, m: float) -> None:
    first, _, chosen = _pick_groups(s, m)
    member = (s.group >= 0) & chosen[np.maximum(s.group, 0)]
    rep = first[np.maximum(s.group, 0)]
    # every member repeats the score of the group's first episode (a constant verifier)
    s.reward = np.where(member, s.reward[rep], s.reward)
    s.components = [np.where(member, c[rep], c) for c in s.components]
    s.success = np.where(member, s.success[rep], s.success)
    s.truncated &= ~member
    s.turn_truncated &= ~member
    s.tokens = np.where(member, np.minimum(s.tokens, s.model.max_completion_tokens - 1), s.tokens)
    s.repeated &= ~member


def _restructure(s: Stream, m: float, how: str) -> None:
    _, last, chosen = _pick_groups(s, m)
    ends = last[chosen]
    order = np.arange(s.n)
    if how == "extra":  # one more episode right after the group's last one
        order = np.sort(np.concatenate([order, ends]), kind="stable")
    elif how == "missing":  # the group's last episode never arrives
        order = np.delete(order, ends)
    s.order = order


def _extra_member(s: Stream, m: float) -> None:
    _restructure(s, m, "extra")


def _missing_member(s: Stream, m: float) -> None:
    _restructure(s, m, "missing")


def _mixed_tasks(s: Stream, m: float) -> None:
    _, last, chosen = _pick_groups(s, m)
    override = np.full(s.n, -1)
    ends = last[chosen]
    override[ends] = (s.task[ends] + 1 + s.fault_rng.integers(0, TASKS - 1, len(ends))) % TASKS
    s.task_override = override
    s.repeated[ends] = False


def _hack_strength(s: Stream, m: float) -> np.ndarray:
    ramp = np.clip((s.pos - s.onset) / HACK_RAMP, 0.0, 1.0)
    strength: np.ndarray = ramp * m * (s.post & ~s.is_eval)
    return strength


def _reward_hack(s: Stream, m: float) -> None:
    h = _hack_strength(s, m)
    s.p = s.p + (1.0 - s.p) * 0.7 * h
    s.len_mult = s.len_mult * (1.0 + 0.5 * h)
    s.rep_add = s.rep_add + 0.35 * h


def _reward_hack_repeats(s: Stream, m: float) -> None:
    # the hacked policy stops producing the canonical short answers
    s.repeated &= ~(_hack_strength(s, m) > s.fault_u)


def _saturation(s: Stream, m: float) -> None:
    s.efficiency = np.where(_picked(s, m), 1.0, s.efficiency)
    score(s)


def _format_dominance(s: Stream, m: float) -> None:
    # the policy learns the format reward and loses correctness: format saturates at 1 while
    # the correctness component falls, so the format part dominates the reward
    hit = _picked(s, m) & ~s.is_eval
    s.fmt = np.where(hit, 1.0, s.fmt)
    s.success = np.where(hit & (s.fault_rng.random(s.n) < 0.8), False, s.success)
    s.repeated &= ~hit
    score(s)


def _staleness(s: Stream, m: float) -> None:
    s.policy_version = np.where(s.post, s.policy_version - int(m), s.policy_version)


def _sync_stuck(s: Stream, m: float) -> None:
    before = s.policy_version[~s.post]
    frozen = int(before.max()) if len(before) else int(s.policy_version[0])
    s.policy_version = np.where(_picked(s, m), frozen, s.policy_version)


def _flaky(s: Stream, m: float) -> None:
    flip = _picked(s, m) & s.repeated
    s.success = np.where(flip, ~s.success, s.success)
    score(s)


def _tool_errors(s: Stream, m: float) -> None:
    s.tool_error_p = np.where(s.post, m, s.tool_error_p)


def _prompt_drift(s: Stream, m: float) -> None:
    s.prompt_mult = np.where(s.post, m, 1.0)


def _latency_drift(s: Stream, m: float) -> None:
    extra = np.where(s.post, (m - 1.0) * s.generate_s, 0.0)
    s.generate_s = s.generate_s + extra
    s.total_s = s.total_s + extra


# --------------------------------------------------------------------------------------------
# the catalogue

_SHARE = "share of episodes"
FAULTS: dict[str, Fault] = {
    f.name: f
    for f in (
        Fault("error_burst", "error_rate", f"{_SHARE} that fail (reward null, error set)",
              (0.1, 0.2, 0.4), (0.2, 0.4), before=_error_burst),
        Fault("masked_failure", "masked_failure",
              f"{_SHARE} whose scoring failed but that are reported as reward 0 (half at the "
              "scoring timeout, half with an error attached)",
              (0.002, 0.01, 0.05), (0.01, 0.05), after=_masked_failure),
        Fault("reward_drop", "reward_shift", "fraction by which the success probability drops",
              (0.2, 0.5, 1.0), (0.5, 1.0), before=_reward_drop_p, after=_reward_drop_repeats),
        Fault("length_collapse", "length_anomaly", "factor by which completions shrink",
              (1.25, 2.0, 4.0), (2.0, 4.0), before=_length_collapse),
        Fault("length_explosion", "length_anomaly",
              "factor by which completions grow (capped at the token limit)",
              (1.25, 2.0, 3.0), (2.0, 3.0), before=_length_explosion),
        Fault("truncation", "truncation_rate", f"{_SHARE} cut at the token limit, scored 0",
              (0.2, 0.4, 0.7), (0.4, 0.7), after=_truncation),
        Fault("reward_out_of_range", "invalid_reward",
              f"{_SHARE} with a reward above the declared maximum (1.05-1.55)",
              (0.001, 0.01, 0.1), (0.01, 0.1), final=_out_of_range),
        Fault("reward_clipped", "invalid_reward",
              f"{_SHARE} whose reward is clipped to the declared maximum (mass at a bound)",
              (0.1, 0.3, 0.6), (0.3, 0.6), envs=("tool",), final=_clipped),
        Fault("reward_rounded", "invalid_reward",
              f"{_SHARE} whose reward is rounded to one decimal (few distinct values)",
              (0.3, 0.6, 1.0), (0.6, 1.0), envs=("tool",), final=_rounded),
        Fault("reward_mass_at_value", "reward_distribution",
              f"{_SHARE} scored a default value (the pre-onset mean: no mean shift)",
              (0.1, 0.3, 0.6), (0.3, 0.6), envs=("code", "tool"), final=_mass_at_value),
        Fault("reward_spread", "reward_distribution",
              "shrinkage of rewards towards their mean (same mean, narrower distribution)",
              (0.4, 0.7, 0.9), (0.7, 0.9), envs=("code", "tool"), final=_spread),
        Fault("zero_variance", "zero_variance_groups",
              "share of groups in which every episode gets the same reward",
              (0.3, 0.6, 1.0), (0.6, 1.0), after=_zero_variance),
        Fault("group_extra_member", "group_invariant",
              "share of groups that get one episode more than group_size",
              (0.005, 0.02, 0.1), (0.02, 0.1), final=_extra_member),
        Fault("group_missing_member", "group_invariant",
              "share of groups whose last episode never arrives",
              (0.005, 0.02, 0.1), (0.02, 0.1), final=_missing_member),
        Fault("group_mixed_tasks", "group_invariant",
              "share of groups with one episode of another task",
              (0.005, 0.02, 0.1), (0.02, 0.1), final=_mixed_tasks),
        Fault("reward_hack", "reward_hacking",
              f"strength: reward, length and repetition rise together over {HACK_RAMP} "
              "events while eval reward stays flat",
              (0.3, 0.6, 1.0), (0.6, 1.0), before=_reward_hack, after=_reward_hack_repeats),
        Fault("component_saturation", "component_imbalance",
              f"{_SHARE} whose efficiency component is pinned at its maximum",
              (0.5, 0.9, 1.0), (0.9, 1.0), envs=("tool",), after=_saturation),
        Fault("format_dominance", "component_imbalance",
              f"{_SHARE} with a perfect format and mostly wrong answers (format dominates)",
              (0.3, 0.6, 1.0), (0.6, 1.0), envs=("math",), after=_format_dominance),
        Fault("staleness_growth", "policy_staleness",
              "extra versions between trainer and policy (async lag grows)",
              (2.0, 8.0, 16.0), (8.0, 16.0), final=_staleness),
        Fault("weight_sync_stuck", "policy_staleness",
              f"{_SHARE} generated by weights frozen at the onset while the trainer advances",
              (0.25, 0.5, 1.0), (0.5, 1.0), final=_sync_stuck),
        Fault("verifier_flaky", "verifier_flakiness",
              "probability that a repeated completion is scored the other way",
              (0.05, 0.2, 0.5), (0.2, 0.5), after=_flaky),
        Fault("tool_errors", "tool_failure_rate", "probability that a tool call fails (3% clean)",
              (0.1, 0.25, 0.5), (0.25, 0.5), envs=("tool",), before=_tool_errors),
        Fault("prompt_drift", "feature_drift", "factor on prompt_tokens (task mix drift)",
              (1.25, 1.5, 2.5), (1.5, 2.5), final=_prompt_drift),
        Fault("latency_drift", "feature_drift", "factor on timings.generate_s (slower inference)",
              (1.25, 2.0, 4.0), (2.0, 4.0), final=_latency_drift),
    )
}  # fmt: skip


def faults_for(detector_id: str) -> list[Fault]:
    """The faults that the detector id should catch."""
    return [f for f in FAULTS.values() if f.detector == detector_id]
