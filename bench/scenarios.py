"""Labelled rollout streams for the detection benchmark: clean controls and injected faults.

One stream is one segment (``run_id`` x ``env_id``), described by a :class:`SegmentSpec`: an
environment model (``math``: binary correctness plus a small format component; ``code``:
share of unit tests passed; ``tool``: a continuous task score with turns and tool calls), a
clean *control* (what healthy training looks like: see :data:`CONTROLS`), a length, a seed
and optionally a fault (``bench.faults``) with a magnitude and an onset index. Every clean
stream has GRPO groups (episodes of a group share a task and are emitted close together,
interleaved with neighbouring groups), per-task difficulty (so some groups are naturally
all-0 or all-1), about 0.6-0.9% natural failures, about 1% natural truncation, blocks of eval
episodes, repeated identical completions that a deterministic verifier scores identically,
and policy versions that advance while the trainer runs a little ahead.

The columns of a stream are drawn with numpy for the whole segment; :func:`events` then
yields one :class:`monitor.events.RolloutEvent` per episode, the type the daemon feeds to the
detectors. The randomness of the clean part does not depend on the fault, so a faulted
stream equals the clean stream of the same spec before its onset.

>>> spec = SegmentSpec(control="stationary", env="math", events=2000, seed=1)
>>> stream = generate(spec)
>>> len(stream), stream.events_list()[0].env_id
(2000, 'math')
>>> faulted = generate(SegmentSpec("stationary", "math", 2000, 1, "reward_drop", 1.0, 1500))
>>> faulted.events_list()[:1500] == stream.events_list()[:1500]
True
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from monitor.events import ErrorInfo, RolloutEvent, Timings

__all__ = [
    "CONTROLS",
    "ENVS",
    "FAILURE_MODE_IDS",
    "Control",
    "EnvModel",
    "SegmentSpec",
    "Stream",
    "events",
    "generate",
]

#: Detector ids of the failure-mode catalogue that run on the event stream (``silence`` is a
#: Prometheus rule on the last event time, not a detector of the bank).
FAILURE_MODE_IDS: tuple[str, ...] = (
    "error_rate",
    "masked_failure",
    "invalid_reward",
    "reward_shift",
    "reward_distribution",
    "length_anomaly",
    "truncation_rate",
    "zero_variance_groups",
    "group_invariant",
    "reward_hacking",
    "component_imbalance",
    "policy_staleness",
    "verifier_flakiness",
    "tool_failure_rate",
    "feature_drift",
)

SCORE_TIMEOUT_S = 30.0
#: Events over which the learning curve of the ``learning`` controls rises from start to end.
TREND_EVENTS = 50_000
#: Tasks of a segment (a task recurs every ~TASKS groups) and eval tasks.
TASKS = 2048
EVAL_TASKS = 512
#: One block of EVAL_BLOCK eval episodes every EVAL_EVERY positions.
EVAL_EVERY = 2500
EVAL_BLOCK = 64
#: Share of training episodes whose completion is one of REPEAT_ANSWERS canonical answers of
#: the task (short answers repeat); a deterministic verifier scores them identically.
REPEAT_SHARE = 0.15
REPEAT_ANSWERS = 2
#: Groups per policy version (per segment) and per-call tool error probability.
GROUPS_PER_STEP = 11
TOOL_ERROR_P = 0.03


@dataclass(frozen=True)
class EnvModel:
    """The healthy behaviour of one environment kind."""

    name: str
    p_start: float
    p_end: float
    difficulty_sd: float
    max_completion_tokens: int
    len_sigma: float
    prompt_median: float
    tok_per_s: float
    score_median: float
    score_sigma: float
    fail_rate: float
    components: tuple[str, ...]
    errors: tuple[ErrorInfo, ...]
    max_turns: int | None = None


ENVS: dict[str, EnvModel] = {
    "math": EnvModel(
        "math", 0.35, 0.62, 1.8, 4096, 0.55, 180.0, 90.0, 0.04, 0.7, 0.006,
        ("correct", "format"),
        (
            ErrorInfo("VerifierTimeout", "verifier", "math verifier exceeded 30s"),
            ErrorInfo("SympyParseError", "verifier", "could not parse reference answer"),
            ErrorInfo("ProviderError", "provider", "inference server returned 503"),
        ),
    ),
    "code": EnvModel(
        "code", 0.22, 0.45, 1.2, 8192, 0.6, 650.0, 70.0, 1.6, 0.55, 0.009,
        ("tests",),
        (
            ErrorInfo("SandboxOOM", "sandbox", "container killed: out of memory"),
            ErrorInfo("ContainerStartError", "sandbox", "failed to start container"),
            ErrorInfo("TestHarnessError", "harness", "pytest collection failed"),
        ),
    ),
    "tool": EnvModel(
        "tool", 0.45, 0.66, 1.0, 6144, 0.5, 1400.0, 80.0, 0.35, 0.5, 0.007,
        ("task", "efficiency"),
        (
            ErrorInfo("ToolServerUnavailable", "tool", "tool server connection refused"),
            ErrorInfo("JudgeError", "judge", "judge response could not be parsed"),
            ErrorInfo("EnvResetError", "env", "environment reset failed"),
        ),
        max_turns=12,
    ),
}  # fmt: skip


@dataclass(frozen=True)
class Control:
    """A kind of healthy training stream.

    ``trend``: the success probability follows the learning curve (and lengths grow 15%)
    over :data:`TREND_EVENTS`; otherwise it stays at the middle of the curve. ``ar_sd`` and
    ``ar_halflife``: an AR(1) random walk of the logit success probability and of the
    log-length (a sixth of the sd), stationary sd and half-life in events. ``tail_df``:
    Student-t (unit variance) instead of normal noise of the log-length and the latencies.
    ``group_sd``: a per-group logit effect on top of the task difficulty (more within-group
    correlation). ``burst``: sd of the log event rate per block of 64 events.
    ``jitter_steps``: policy versions advance after a random number of groups.
    """

    name: str
    description: str
    trend: bool = False
    ar_sd: float = 0.0
    ar_halflife: float = 3000.0
    tail_df: float = 0.0
    group_sd: float = 0.0
    group_size: int = 8
    burst: float = 0.3
    jitter_steps: bool = False


CONTROLS: dict[str, Control] = {
    c.name: c
    for c in (
        Control("stationary", "i.i.d. episodes around a fixed success rate"),
        Control("learning", "logistic learning curve; lengths grow 15%", trend=True),
        Control(
            "autocorrelated",
            "AR(1) wander (half-life 3000 events) of the success logit (sd 0.3) and the "
            "log-length (sd 0.05); irregular policy steps",
            ar_sd=0.3,
            jitter_steps=True,
        ),
        Control("heavy_tails", "Student-t (3 d.f.) log-lengths and latencies", tail_df=3.0),
        Control(
            "grouped",
            "groups of 16 with an extra per-group effect (sd 1.0): strong correlation",
            group_sd=1.0,
            group_size=16,
        ),
        Control("bursty", "event rate varying by 5x within minutes, lulls", burst=1.2),
        Control(
            "production",
            "all of the above: learning, AR(1), heavy tails, group effect, bursts",
            trend=True,
            ar_sd=0.3,
            jitter_steps=True,
            tail_df=3.0,
            group_sd=0.7,
            burst=1.0,
        ),
    )
}

#: Mean event rates (events per second) of a segment, picked by seed: mixed rates.
EVENT_RATES = (0.5, 5.0, 50.0)


@dataclass(frozen=True)
class SegmentSpec:
    """One labelled stream: ``fault`` (a name from ``bench.faults.FAULTS``) switches on at
    event index ``onset`` with ``magnitude``; None means a clean control."""

    control: str
    env: str
    events: int
    seed: int
    fault: str | None = None
    magnitude: float = 0.0
    onset: int | None = None


def _crc(name: str) -> int:
    return zlib.crc32(name.encode())


class Stream:
    """The columns of one segment (numpy arrays, one entry per episode position).

    Faults (``bench.faults``) modify the columns between the generation stages; the column
    names follow the event fields (``reward`` is NaN where the event has ``reward: null``).
    ``order`` (when a fault changed the group structure) lists the positions to emit, a
    position given twice is emitted again as another episode.
    """

    # layout
    is_eval: np.ndarray
    group: np.ndarray
    n_groups: int
    group_size: np.ndarray
    task: np.ndarray
    group_effect: np.ndarray
    policy_version: np.ndarray
    staleness: np.ndarray
    # inputs of the outcomes that faults may change
    len_mult: np.ndarray
    rep_add: np.ndarray
    fail_rate: np.ndarray
    tool_error_p: np.ndarray
    p: np.ndarray
    log_len_ar: np.ndarray
    repeat_success: np.ndarray
    repeat_u: np.ndarray
    repeat_counts: dict[str, np.ndarray]
    prompt_of_task: np.ndarray
    # per-episode randomness
    u: np.ndarray
    z: np.ndarray
    len_noise: np.ndarray
    lat_noise: np.ndarray
    tests_total: np.ndarray
    tests_partial: np.ndarray
    turns: np.ndarray
    calls_extra: np.ndarray
    err_pick: np.ndarray
    answer: np.ndarray
    ts: np.ndarray
    fault_rng: np.random.Generator
    fault_u: np.ndarray
    # outcomes
    repeated: np.ndarray
    success: np.ndarray
    fmt: np.ndarray
    t_fail: np.ndarray
    task_hi: np.ndarray
    task_lo: np.ndarray
    efficiency: np.ndarray
    reward: np.ndarray
    components: list[np.ndarray]
    tests_passed: np.ndarray
    num_tool_calls: np.ndarray
    num_tool_errors: np.ndarray
    tokens: np.ndarray
    repetition: np.ndarray
    failed: np.ndarray
    aborted: np.ndarray
    truncated: np.ndarray
    turn_truncated: np.ndarray
    masked: np.ndarray
    masked_error: np.ndarray
    # derived
    score_s: np.ndarray
    generate_s: np.ndarray
    queue_s: np.ndarray
    env_s: np.ndarray | None
    total_s: np.ndarray
    trainer_version: np.ndarray
    prompt_mult: np.ndarray | None
    task_override: np.ndarray | None
    order: np.ndarray | None

    def __init__(self, spec: SegmentSpec, rng: np.random.Generator) -> None:
        self.spec = spec
        self.model = ENVS[spec.env]
        self.control = CONTROLS[spec.control]
        self.rng = rng
        self.n = spec.events
        self.pos = np.arange(self.n)
        self.onset = spec.onset if spec.onset is not None else self.n
        #: positions at or after the fault onset
        self.post = self.pos >= self.onset
        self.task_names = [f"{spec.env}/t{i:04d}" for i in range(TASKS)]
        self.eval_names = [f"{spec.env}/eval{i:03d}" for i in range(EVAL_TASKS)]
        self.prompt_mult = None
        self.task_override = None
        self.order = None

    def __len__(self) -> int:
        return self.n if self.order is None else len(self.order)

    def events_list(self) -> list[RolloutEvent]:
        return list(events(self))


# --------------------------------------------------------------------------------------------
# generation stages


def _ar1(rng: np.random.Generator, n: int, sd: float, halflife: float) -> np.ndarray:
    phi = math.exp(-math.log(2.0) / halflife)
    shocks = (rng.standard_normal(n) * sd * math.sqrt(1.0 - phi * phi)).tolist()
    out = [0.0] * n
    x = rng.standard_normal() * sd
    for i, e in enumerate(shocks):
        x = phi * x + e
        out[i] = x
    return np.array(out)


def _noise(rng: np.random.Generator, n: int, df: float) -> np.ndarray:
    """Unit-variance noise: normal, or Student-t with ``df`` degrees of freedom."""
    if df <= 0:
        return rng.standard_normal(n)
    scaled: np.ndarray = rng.standard_t(df, n) * math.sqrt((df - 2.0) / df)
    return scaled


def _layout(s: Stream) -> None:
    """Eval blocks, the emission order of group members, tasks and policy versions."""
    rng, n, c = s.rng, s.n, s.control
    offset = int(rng.integers(0, EVAL_EVERY))
    s.is_eval = ((s.pos + offset) % EVAL_EVERY) < EVAL_BLOCK
    train_pos = np.flatnonzero(~s.is_eval)
    size = c.group_size
    n_groups = -(-len(train_pos) // size) + 1
    # a group's members finish over ~2 group lengths, interleaved with their neighbours
    slots = np.arange(n_groups * size)
    keys = (slots // size) * size + rng.random(len(slots)) * 2.0 * size
    order = np.argsort(keys, kind="stable")[: len(train_pos)]
    s.group = np.full(n, -1)
    s.group[train_pos] = order // size
    s.n_groups = n_groups
    s.group_size = np.where(s.is_eval, 0, size)
    g_task = rng.integers(0, TASKS, n_groups)
    g_effect = rng.standard_normal(n_groups) * c.group_sd
    if c.jitter_steps:
        steps: np.ndarray = np.cumsum(rng.random(n_groups) < 1.0 / GROUPS_PER_STEP)
    else:
        steps = np.arange(n_groups) // GROUPS_PER_STEP
    g_pv = 100 + steps
    eval_task = rng.integers(0, EVAL_TASKS, n)
    s.task = np.where(s.is_eval, eval_task, g_task[np.maximum(s.group, 0)])
    s.group_effect = np.where(s.is_eval, 0.0, g_effect[np.maximum(s.group, 0)])
    pv = np.where(s.is_eval, g_pv[0], g_pv[np.maximum(s.group, 0)])
    # eval episodes run on the newest weights so far
    s.policy_version = np.where(s.is_eval, np.maximum.accumulate(pv), pv)
    s.staleness = np.searchsorted([0.55, 0.9], rng.random(n))  # 0, 1 or 2 versions behind
    # ``rate`` stage inputs that faults may change
    s.len_mult = np.ones(n)
    s.rep_add = np.zeros(n)
    s.fail_rate = np.full(n, s.model.fail_rate)
    s.tool_error_p = np.full(n, TOOL_ERROR_P)


def _success_probability(s: Stream) -> None:
    rng, m, c = s.rng, s.model, s.control
    l0 = math.log(m.p_start / (1 - m.p_start))
    l1 = math.log(m.p_end / (1 - m.p_end))
    if c.trend:
        progress = np.minimum(s.pos / TREND_EVENTS, 1.0)
        base = l0 + (l1 - l0) * progress
        s.len_mult = s.len_mult * (1.0 + 0.15 * progress)
    else:
        base = np.full(s.n, (l0 + l1) / 2.0)
    ar = _ar1(rng, s.n, c.ar_sd, c.ar_halflife) if c.ar_sd > 0 else np.zeros(s.n)
    s.log_len_ar = ar / 6.0
    difficulty = rng.normal(0.0, m.difficulty_sd, TASKS)
    eval_difficulty = rng.normal(0.0, m.difficulty_sd, EVAL_TASKS)
    diff = np.where(s.is_eval, eval_difficulty[s.task % EVAL_TASKS], difficulty[s.task])
    s.p = 1.0 / (1.0 + np.exp(-(base + ar + diff + s.group_effect)))
    # per task: the canonical answers a repeated completion is one of, scored once for all
    s.repeat_success = rng.random((TASKS, REPEAT_ANSWERS)) < 1.0 / (
        1.0 + np.exp(-((l0 + l1) / 2.0 + difficulty[:, None]))
    )
    s.repeat_u = rng.random((TASKS, REPEAT_ANSWERS, 4))
    shape = (TASKS, REPEAT_ANSWERS)
    tests_total = rng.integers(4, 21, shape)
    turns = np.minimum(1 + rng.poisson(3.0, shape), 11)
    calls = np.maximum(0, turns - 1 + rng.poisson(0.6, shape))
    s.repeat_counts = {
        "tests_total": tests_total,
        "tests_partial": rng.binomial(tests_total, 0.4),
        "turns": turns,
        "calls": calls,
        "tool_errors": rng.binomial(calls, TOOL_ERROR_P),
    }
    s.prompt_of_task = np.maximum(
        8, np.exp(math.log(m.prompt_median) + 0.35 * rng.standard_normal(TASKS))
    ).astype(np.int64)


def _draws(s: Stream) -> None:
    """All per-episode randomness of the clean stream, drawn whatever the fault."""
    rng, n = s.rng, s.n
    s.u = rng.random((8, n))
    s.z = rng.standard_normal((3, n))
    s.len_noise = _noise(rng, n, s.control.tail_df)
    s.lat_noise = _noise(rng, n, s.control.tail_df)
    s.tests_total = rng.integers(4, 21, n)
    s.tests_partial = rng.binomial(s.tests_total, 0.4)
    s.turns = np.minimum(1 + rng.poisson(3.0, n), 12)
    s.calls_extra = rng.poisson(0.6, n)
    s.err_pick = rng.integers(0, 3, n)
    s.answer = rng.integers(0, REPEAT_ANSWERS, n)
    block = rng.standard_normal(-(-n // 64))
    burst = s.control.burst
    rate = EVENT_RATES[s.spec.seed % len(EVENT_RATES)]
    gaps = rng.exponential(1.0, n) * np.repeat(np.exp(burst * block - burst * burst / 2), 64)[:n]
    gaps = gaps + (rng.random(n) < 0.0005) * rng.exponential(100.0, n)
    s.ts = 1_764_000_000.0 + np.cumsum(gaps) / (rate * 1.05)
    # the faults' own randomness: a separate generator, so the clean part never changes
    s.fault_rng = np.random.default_rng([s.spec.seed, 7919])
    s.fault_u = s.fault_rng.random(n)


def _outcomes(s: Stream) -> None:
    """Success, the parts of the reward, lengths, tools, truncation, failures."""
    u, z, m, n = s.u, s.z, s.model, s.n
    s.repeated = ~s.is_eval & (u[0] < REPEAT_SHARE)
    # a repeated answer is the same completion: everything its score depends on is fixed
    rep = {k: v[s.task, s.answer] for k, v in s.repeat_counts.items()}
    s.tests_total = np.where(s.repeated, rep["tests_total"], s.tests_total)
    s.tests_partial = np.where(s.repeated, rep["tests_partial"], s.tests_partial)
    s.turns = np.where(s.repeated, rep["turns"], s.turns)
    rep_success = s.repeat_success[s.task, s.answer]
    s.success = np.where(s.repeated, rep_success, u[1] < s.p)
    ru = s.repeat_u[s.task, s.answer]  # (n, 4): fixed per canonical answer
    fu = np.where(s.repeated, ru[:, 0], u[2])
    s.fmt = np.where(fu < 0.01, 0.0, np.where(fu < 0.03, 0.5, 1.0))
    t_fail = np.minimum(s.tests_partial, s.tests_total - 1)
    s.t_fail = np.where(np.where(s.repeated, ru[:, 1], u[3]) < 0.35, 0, t_fail)
    calls = np.maximum(0, s.turns - 1 + s.calls_extra)
    s.num_tool_calls = np.where(s.repeated, rep["calls"], calls)
    tool_errors = s.rng.binomial(s.num_tool_calls, np.clip(s.tool_error_p, 0.0, 1.0))
    s.num_tool_errors = np.where(s.repeated, rep["tool_errors"], tool_errors)
    zt = np.where(s.repeated, ru[:, 2] * 2.0 - 1.0, z[0])
    s.task_hi = np.clip(0.8 + 0.12 * zt, 0.0, 1.0)
    s.task_lo = np.clip(0.12 + 0.08 * np.abs(zt), 0.0, 1.0)
    s.efficiency = np.clip(1.0 - 0.1 * s.num_tool_errors - 0.02 * (s.turns - 1), 0.0, 1.0)
    score(s)
    # lengths: a repeated answer has the length of its canonical completion
    mu = math.log(m.max_completion_tokens) - 2.326 * m.len_sigma - 0.1
    log_len = mu + m.len_sigma * s.len_noise + s.log_len_ar
    log_len = np.where(s.repeated, mu + m.len_sigma * (ru[:, 3] * 2.0 - 1.0), log_len)
    cap = m.max_completion_tokens
    tokens = np.clip(np.exp(np.minimum(log_len, 20.0)) * s.len_mult, 1, 4 * cap).astype(np.int64)
    s.tokens = np.where(s.repeated, np.minimum(tokens, cap - 1), tokens)
    s.repetition = np.clip(0.12 * np.exp(0.35 * z[1]) + s.rep_add, 0.0, 1.0)
    s.failed = u[4] < s.fail_rate
    s.aborted = ~s.failed & (u[5] < 0.0005)
    turn_cut = (s.turns >= 12) if m.max_turns else np.zeros(n, dtype=bool)
    s.truncated = ((s.tokens >= cap) | turn_cut) & ~s.failed & ~s.aborted
    s.turn_truncated = turn_cut & s.truncated
    s.tokens = np.minimum(s.tokens, cap)
    s.masked = np.zeros(n, dtype=bool)  # scored 0 although the scoring failed (a fault)
    s.masked_error = np.zeros(n, dtype=bool)


def score(s: Stream) -> None:
    """Reward and components from success and the per-episode parts (faults may rescore)."""
    name = s.model.name
    success = s.success
    s.tests_passed = np.where(success, s.tests_total, s.t_fail)
    if name == "math":
        reward = 0.9 * success + 0.1 * s.fmt
        comps = [success.astype(float), s.fmt]
    elif name == "code":
        reward = s.tests_passed / s.tests_total
        comps = [reward]
    else:
        task_score = np.where(success, s.task_hi, s.task_lo)
        reward = 0.8 * task_score + 0.2 * s.efficiency
        comps = [task_score, s.efficiency]
    s.reward = np.round(reward, 4)
    s.components = [np.round(c, 4) for c in comps]


def _finish(s: Stream) -> None:
    """Derived fields: zero reward when truncated, null when failed, timings, versions."""
    m, z = s.model, s.z
    zero = s.truncated | s.masked
    s.reward = np.where(zero, 0.0, s.reward)
    s.components = [np.where(zero, 0.0, c) for c in s.components]
    s.reward = np.where(s.failed | s.aborted, np.nan, s.reward)
    s.generate_s = s.tokens / m.tok_per_s * np.exp(0.3 * s.lat_noise)
    score_s = np.minimum(
        np.exp(math.log(m.score_median) + m.score_sigma * z[2]), 0.8 * SCORE_TIMEOUT_S
    )
    timeout_error = s.failed & (s.err_pick == 0) & (m.name == "math")
    silent_timeout = s.masked & ~s.masked_error
    s.score_s = np.where(timeout_error | silent_timeout, SCORE_TIMEOUT_S, score_s)
    s.queue_s = 0.15 * np.exp(0.8 * np.clip(0.5 * s.lat_noise + s.u[6] - 0.5, -4.0, 4.0))
    s.env_s = s.turns * 0.4 * np.exp(0.4 * (s.u[7] - 0.5)) if m.name != "math" else None
    s.total_s = s.generate_s + s.score_s + s.queue_s
    if s.env_s is not None:
        s.total_s = s.total_s + s.env_s
    s.trainer_version = np.maximum.accumulate(s.policy_version + s.staleness)


def generate(spec: SegmentSpec) -> Stream:
    """The columns of one labelled segment (see the module docstring)."""
    from bench.faults import FAULTS  # faults import this module

    rng = np.random.default_rng([spec.seed, _crc(spec.control), _crc(spec.env)])
    s = Stream(spec, rng)
    fault = FAULTS[spec.fault] if spec.fault is not None else None
    if fault is not None and spec.env not in fault.envs:
        raise ValueError(f"fault {spec.fault} applies to {fault.envs}, not {spec.env!r}")
    _layout(s)
    _success_probability(s)
    _draws(s)
    if fault is not None and s.post.any():
        fault.before(s, spec.magnitude)
    _outcomes(s)
    if fault is not None and s.post.any():
        fault.after(s, spec.magnitude)
    _finish(s)
    if fault is not None and s.post.any():
        fault.final(s, spec.magnitude)
    return s


# --------------------------------------------------------------------------------------------
# events


_STATUS = ("completed", "truncated", "failed", "aborted")
_STOPS = ("error", "unknown", "max_turns", "length", "stop")
_MASKED_ERROR = ErrorInfo("ScoreTimeout", "verifier", "scoring timed out")


def events(s: Stream) -> Iterator[RolloutEvent]:
    """The episodes of a stream as :class:`RolloutEvent`, in emission order."""
    m = s.model
    status = np.select([s.failed, s.aborted, s.truncated], [2, 3, 1], 0).tolist()
    stop = np.select([s.failed, s.aborted, s.turn_truncated, s.truncated], [0, 1, 2, 3], 4)
    stop_codes = stop.tolist()
    rewards = [None if math.isnan(r) else r for r in s.reward.tolist()]
    names = tuple(m.components)
    comps = list(zip(*[c.tolist() for c in s.components], strict=True))
    errors = m.errors
    err_pick = s.err_pick.tolist()
    failed = s.failed.tolist()
    masked_err = (s.masked & s.masked_error).tolist()
    is_eval = s.is_eval.tolist()
    group = s.group.tolist()
    task = s.task.tolist()
    prompt_tokens = s.prompt_of_task[s.task]
    if s.prompt_mult is not None:
        prompt_tokens = np.maximum(1, prompt_tokens * s.prompt_mult).astype(np.int64)
    prompt = prompt_tokens.tolist()
    override = s.task_override.tolist() if s.task_override is not None else None
    repeated = s.repeated.tolist()
    answer = s.answer.tolist()
    ts = s.ts.tolist()
    pv = s.policy_version.tolist()
    tv = s.trainer_version.tolist()
    gsize = s.group_size.tolist()
    tokens = s.tokens.tolist()
    rep = np.round(s.repetition, 3).tolist()
    gen = s.generate_s.tolist()
    score_s = s.score_s.tolist()
    queue = s.queue_s.tolist()
    total = s.total_s.tolist()
    env_s = s.env_s.tolist() if s.env_s is not None else [None] * s.n
    is_tool = m.max_turns is not None
    turns = s.turns.tolist()
    calls = s.num_tool_calls.tolist()
    tool_err = s.num_tool_errors.tolist()
    is_code = m.name == "code"
    tests_total = s.tests_total.tolist()
    tests_passed = s.tests_passed.tolist()
    cap = m.max_completion_tokens
    env_id = m.name
    run_id = f"bench-{s.spec.control}"
    group_ids = [f"g{g:06d}" for g in range(s.n_groups)]
    tag = f"{s.spec.seed:x}"
    order = s.order.tolist() if s.order is not None else range(s.n)
    seen: set[int] = set()
    for i in order:
        event_id = f"{tag}.{i}"
        if s.order is not None:  # a position emitted twice is another episode
            if i in seen:
                event_id += "b"
            seen.add(i)
        r = rewards[i]
        ev = is_eval[i]
        t = task[i]
        error = None
        if failed[i]:
            error = errors[err_pick[i]]
        elif masked_err[i]:
            error = _MASKED_ERROR
        task_id = s.eval_names[t] if ev else s.task_names[t]
        if override is not None and override[i] >= 0:
            task_id = s.task_names[override[i]]
        metrics = None
        if is_code and r is not None:
            metrics = {"tests_total": float(tests_total[i]), "tests_passed": float(tests_passed[i])}
        yield RolloutEvent(
            schema_version=1,
            event_id=event_id,
            ts=ts[i],
            run_id=run_id,
            env_id=env_id,
            status=_STATUS[status[i]],  # type: ignore[arg-type]
            reward=r,
            env_version="1.0.0",
            phase="eval" if ev else "train",
            task_id=task_id,
            group_id=None if ev else group_ids[group[i]],
            group_size=None if ev else gsize[i],
            policy_version=pv[i],
            trainer_version=tv[i],
            stop_reason=_STOPS[stop_codes[i]],  # type: ignore[arg-type]
            reward_components=None if r is None else dict(zip(names, comps[i], strict=True)),
            reward_min=0.0,
            reward_max=1.0,
            prompt_tokens=prompt[i],
            completion_tokens=tokens[i],
            num_turns=turns[i] if is_tool else 1,
            num_tool_calls=calls[i] if is_tool else None,
            num_tool_errors=tool_err[i] if is_tool else None,
            max_completion_tokens=cap,
            max_turns=12 if is_tool else None,
            error=error,
            timings=Timings(
                generate_s=gen[i],
                env_s=env_s[i],
                score_s=score_s[i],
                queue_s=queue[i],
                total_s=total[i],
                score_timeout_s=SCORE_TIMEOUT_S,
            ),
            completion_hash=f"a{t}.{answer[i]}" if repeated[i] else event_id,
            repetition=rep[i],
            metrics=metrics,
        )
