"""Synthetic rollout streams with injectable faults.

The generator produces what trainers would send: one schema-v1 JSON message per finished
episode, for several environments (segments ``run_id`` x ``env_id``) interleaved, in GRPO
groups whose episodes are emitted close together. A stream is a pure function of its
:class:`SimulationConfig`: the same seed gives the same bytes.

Healthy behaviour (no fault):

* each environment has its own reward model: ``math`` (binary correctness plus a small
  format component), ``code`` (fraction of unit tests passed, ``metrics.tests_total`` /
  ``tests_passed``), ``tool`` (continuous task score with noise, turns and tool calls);
  an environment name containing ``math``/``gsm``, ``code``/``swe``/``sandbox`` or
  ``tool``/``web``/``browser`` selects that model, other names take the models in turn;
* the success probability rises slowly over the run (a logistic learning curve) and varies by
  task (a fixed difficulty per ``task_id``), so some groups are naturally all-0 or all-1;
* heavy-tailed (log-normal) ``completion_tokens`` with about 1% natural truncation at
  ``max_completion_tokens``; about 0.5-1% natural failures (``status: failed``, ``reward:
  null``, ``error`` set); a few aborted episodes (0.05%);
* ``policy_version`` advances every :attr:`SimulationConfig.groups_per_step` groups of a run,
  ``trainer_version`` is 0-2 versions ahead; timings with ``score_timeout_s = 30``;
* event time ``ts`` advances at ``events_per_second`` on average, with bursts and lulls.

Faults (:class:`Fault`) switch on at a global message index ``start`` (0-based position in
the produced stream) for one environment (``"*"`` for all) and last until ``end`` (exclusive)
or the end of the stream. A fault never changes a message before its ``start``: the stream of
a faulted configuration is byte-identical to the clean one up to ``start``.

>>> cfg = SimulationConfig(seed=1, events=64,
...                        faults=(Fault("error_burst", "math-v2", start=32),))
>>> msgs = list(generate(cfg))
>>> len(msgs), msgs[0][:30]
(64, b'{"schema_version":1,"event_id"')
>>> msgs[:32] == list(generate(SimulationConfig(seed=1, events=64)))[:32]
True
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import heapq
import json
import math
import os
import sys
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

import msgspec
import numpy as np

__all__ = [
    "DEFAULT_MAGNITUDES",
    "FAULT_KINDS",
    "Fault",
    "SimulationConfig",
    "SimulationStats",
    "generate",
    "generate_events",
    "generate_messages",
    "labels",
    "main",
    "register",
    "run",
]

#: Fault kinds and the meaning of ``magnitude`` for each (its default in brackets).
FAULT_KINDS: dict[str, str] = {
    "error_burst": "share of episodes that fail (status failed, reward null, error set) [0.4]",
    "reward_drop": "fraction by which the success probability drops; 1 = verifier broken [1.0]",
    "masked_failure": "share of episodes that are infra failures scored as reward 0 [0.3]",
    "truncation": "share of episodes cut at max_completion_tokens, scored 0 [0.3]",
    "length_collapse": "factor by which completion_tokens shrink [4.0]",
    "length_explosion": "factor by which completion_tokens grow (capped at the limit) [3.0]",
    "zero_variance": "share of groups whose episodes all get the same reward [1.0]",
    "silence": "unused: the environment emits nothing in the window [1.0]",
    "invalid": "share of messages replaced by malformed ones (dead-letter input) [0.1]",
    "duplicate": "share of events re-sent later with the same event_id [0.1]",
    "reward_hack": "strength of the hack: reward, length and repetition rise together [1.0]",
}

DEFAULT_MAGNITUDES: dict[str, float] = {
    "error_burst": 0.4,
    "reward_drop": 1.0,
    "masked_failure": 0.3,
    "truncation": 0.3,
    "length_collapse": 4.0,
    "length_explosion": 3.0,
    "zero_variance": 1.0,
    "silence": 1.0,
    "invalid": 0.1,
    "duplicate": 0.1,
    "reward_hack": 1.0,
}

_SHARE_KINDS = frozenset(
    {
        "error_burst",
        "reward_drop",
        "masked_failure",
        "truncation",
        "zero_variance",
        "invalid",
        "duplicate",
    }
)
_FACTOR_KINDS = frozenset({"length_collapse", "length_explosion"})
_STRUCTURAL_KINDS = frozenset({"silence", "duplicate"})

#: Events over which a reward hack ramps up to full strength.
REWARD_HACK_RAMP = 2000
SCORE_TIMEOUT_S = 30.0
_CHUNK = 4096
_TASK_POOL = 4096


@dataclass(frozen=True)
class Fault:
    """A fault injected into one environment (``env="*"``: every environment).

    ``start``/``end`` are 0-based indices of the produced stream (``end`` exclusive, None = to
    the end). ``magnitude`` None takes the kind's default (:data:`DEFAULT_MAGNITUDES`); its
    meaning per kind is in :data:`FAULT_KINDS`.

    Per-episode faults act on every message of the environment whose index is in the window.
    ``silence`` drops the environment's episodes from the window (groups in flight at
    ``start`` are cut short, as when a harness goes down); silencing every environment ends
    the stream, since indices count produced messages. ``duplicate`` re-sends an event up to
    ``2 * group_size`` messages after its original; the duplicates count as messages.
    """

    kind: str
    env: str
    start: int
    magnitude: float | None = None
    end: int | None = None

    def __post_init__(self) -> None:
        if self.kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault kind {self.kind!r}; one of {sorted(FAULT_KINDS)}")
        if self.start < 0:
            raise ValueError(f"fault start must be >= 0, got {self.start}")
        if self.end is not None and self.end <= self.start:
            raise ValueError(f"fault end {self.end} must be > start {self.start}")
        m = self.strength
        if not math.isfinite(m):
            raise ValueError(f"fault magnitude must be finite, got {m}")
        if self.kind in _SHARE_KINDS and not 0.0 <= m <= 1.0:
            raise ValueError(f"{self.kind} magnitude is a share in [0, 1], got {m}")
        if self.kind in _FACTOR_KINDS and m < 1.0:
            raise ValueError(f"{self.kind} magnitude is a factor >= 1, got {m}")
        if self.kind == "reward_hack" and not 0.0 <= m <= 1.0:
            raise ValueError(f"reward_hack magnitude is a strength in [0, 1], got {m}")

    @property
    def strength(self) -> float:
        """The magnitude in effect (the kind's default when ``magnitude`` is None)."""
        return DEFAULT_MAGNITUDES[self.kind] if self.magnitude is None else float(self.magnitude)

    @classmethod
    def parse(cls, spec: str) -> Fault:
        """Parse ``KIND:ENV:START[:MAGNITUDE[:END]]`` (an empty MAGNITUDE keeps the default).

        >>> Fault.parse("error_burst:math-v2:5000:0.5")
        Fault(kind='error_burst', env='math-v2', start=5000, magnitude=0.5, end=None)
        >>> Fault.parse("silence:tool-use:100::900").end
        900
        """
        parts = spec.split(":")
        if not 3 <= len(parts) <= 5:
            raise ValueError(f"fault {spec!r} is not KIND:ENV:START[:MAGNITUDE[:END]]")
        magnitude = float(parts[3]) if len(parts) > 3 and parts[3] != "" else None
        end = int(parts[4]) if len(parts) > 4 and parts[4] != "" else None
        return cls(parts[0], parts[1], int(parts[2]), magnitude, end)

    def window(self, total: int) -> tuple[int, int]:
        """``[start, end)`` clipped to a stream of ``total`` messages."""
        end = total if self.end is None else min(self.end, total)
        return min(self.start, total), end


@dataclass(frozen=True)
class SimulationConfig:
    """What to simulate. ``events`` is the number of messages produced (duplicates and
    invalid messages included); ``events_per_second`` is the mean event-time rate used for
    ``ts``; ``groups_per_step`` is the number of groups of a run per policy version."""

    seed: int = 0
    runs: tuple[str, ...] = ("grpo-7b-demo",)
    envs: tuple[str, ...] = ("math-v2", "code-sandbox", "tool-use")
    events: int = 20000
    group_size: int = 8
    start_ts: float = 1_764_000_000.0
    events_per_second: float = 200.0
    faults: tuple[Fault, ...] = ()
    groups_per_step: int = 32

    def __post_init__(self) -> None:
        if not self.runs or not self.envs:
            raise ValueError("at least one run and one environment are needed")
        if len(set(self.runs)) != len(self.runs) or len(set(self.envs)) != len(self.envs):
            raise ValueError("run and environment names must be unique")
        if self.events < 0:
            raise ValueError("events must be >= 0")
        if self.group_size < 1:
            raise ValueError("group_size must be >= 1")
        if not self.events_per_second > 0:
            raise ValueError("events_per_second must be > 0")
        if self.groups_per_step < 1:
            raise ValueError("groups_per_step must be >= 1")
        for f in self.faults:
            if f.env != "*" and f.env not in self.envs:
                raise ValueError(f"fault {f.kind} targets unknown environment {f.env!r}")


@dataclass
class SimulationStats:
    """Counters filled while a stream is consumed (pass one to ``generate*``)."""

    messages: int = 0
    valid: int = 0
    invalid: int = 0
    duplicates: int = 0
    failed: int = 0
    silenced: int = 0
    last_ts: float | None = None
    #: per fault (same order as ``config.faults``): messages of the targeted environments
    #: inside the window (for ``silence``: episodes that were not emitted)
    fault_events: list[int] = field(default_factory=list)
    #: per fault: event time ``ts`` of the message at index ``start`` (None if not reached)
    fault_start_ts: list[float | None] = field(default_factory=list)
    fault_end_ts: list[float | None] = field(default_factory=list)


# --------------------------------------------------------------------------------------------
# environment models


@dataclass(frozen=True)
class _Model:
    kind: int  # 0 math, 1 code, 2 tool
    version: str
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
    errors: tuple[tuple[str, str, str], ...]
    max_turns: int = 0


_MATH = _Model(
    kind=0,
    version="1.3.0",
    p_start=0.35,
    p_end=0.62,
    difficulty_sd=1.8,
    max_completion_tokens=4096,
    len_sigma=0.55,
    prompt_median=180.0,
    tok_per_s=90.0,
    score_median=0.04,
    score_sigma=0.7,
    fail_rate=0.006,
    errors=(
        ("VerifierTimeout", "verifier", "math verifier exceeded 30s"),
        ("SympyParseError", "verifier", "could not parse reference answer"),
        ("ProviderError", "provider", "inference server returned 503"),
    ),
)
_CODE = _Model(
    kind=1,
    version="0.9.2",
    p_start=0.22,
    p_end=0.45,
    difficulty_sd=1.2,
    max_completion_tokens=8192,
    len_sigma=0.6,
    prompt_median=650.0,
    tok_per_s=70.0,
    score_median=1.6,
    score_sigma=0.55,
    fail_rate=0.009,
    errors=(
        ("SandboxOOM", "sandbox", "container killed: out of memory"),
        ("ContainerStartError", "sandbox", "failed to start container"),
        ("TestHarnessError", "harness", "pytest collection failed"),
    ),
)
_TOOL = _Model(
    kind=2,
    version="2.1.0",
    p_start=0.45,
    p_end=0.66,
    difficulty_sd=1.0,
    max_completion_tokens=6144,
    len_sigma=0.5,
    prompt_median=1400.0,
    tok_per_s=80.0,
    score_median=0.35,
    score_sigma=0.5,
    fail_rate=0.007,
    max_turns=12,
    errors=(
        ("ToolServerUnavailable", "tool", "tool server connection refused"),
        ("JudgeError", "judge", "judge response could not be parsed"),
        ("EnvResetError", "env", "environment reset failed"),
    ),
)
_MODELS = (_MATH, _CODE, _TOOL)
_BURST_ERRORS = (
    ("VerifierCrash", "verifier", "verifier process exited with code 137"),
    ("HarnessException", "harness", "Traceback (most recent call last): ConnectionResetError"),
    ("VerifierTimeout", "verifier", "verifier exceeded 30s"),
)
_MASKED_ERROR = {"type": "ScoreTimeout", "where": "verifier", "message": "scoring timed out"}
_COMPONENTS = (("correct", "format"), ("tests",), ("task", "efficiency"))


def _model_for(name: str, index: int) -> _Model:
    low = name.lower()
    if "math" in low or "gsm" in low:
        return _MATH
    if any(s in low for s in ("code", "swe", "sandbox")):
        return _CODE
    if any(s in low for s in ("tool", "web", "browser")):
        return _TOOL
    return _MODELS[index % len(_MODELS)]


def _logit(p: float) -> float:
    return math.log(p / (1.0 - p))


_HEX = np.frombuffer(b"0123456789abcdef", dtype=np.uint8)


def _hex_strings(raw: np.ndarray, uuid4: bool) -> list[str]:
    """Rows of random bytes as lowercase hex strings (formatted as UUIDv4 when asked)."""
    n, width = raw.shape
    if uuid4:
        raw = raw.copy()
        raw[:, 6] = (raw[:, 6] & 0x0F) | 0x40
        raw[:, 8] = (raw[:, 8] & 0x3F) | 0x80
    chars = np.empty((n, width * 2), dtype=np.uint8)
    chars[:, 0::2] = _HEX[raw >> 4]
    chars[:, 1::2] = _HEX[raw & 0x0F]
    if uuid4:
        dash = np.full((n, 1), ord("-"), dtype=np.uint8)
        chars = np.hstack(
            [
                chars[:, :8],
                dash,
                chars[:, 8:12],
                dash,
                chars[:, 12:16],
                dash,
                chars[:, 16:20],
                dash,
                chars[:, 20:],
            ]
        )
    w = chars.shape[1]
    text = chars.tobytes().decode("ascii")
    return [text[i : i + w] for i in range(0, n * w, w)]


# --------------------------------------------------------------------------------------------
# the generator


class _Chunk:
    __slots__ = ("events", "keys", "ts", "values")

    def __init__(self) -> None:
        self.ts: list[float] = []  # event time of each position (pacing)
        self.keys: list[bytes] = []
        self.events: list[dict[str, Any] | None] = []  # None: an invalid message
        self.values: list[bytes] = []  # encoded messages (when the simulator encodes)


class _Simulator:
    def __init__(
        self, config: SimulationConfig, stats: SimulationStats | None, encode: bool = True
    ) -> None:
        self.cfg = config
        self.encode = encode
        self.stats = stats if stats is not None else SimulationStats()
        self.stats.fault_events = [0] * len(config.faults)
        self.stats.fault_start_ts = [None] * len(config.faults)
        self.stats.fault_end_ts = [None] * len(config.faults)
        seq = np.random.SeedSequence(config.seed)
        s_init, s_sched, s_keys, s_vals, s_ids, s_time, s_dup = seq.spawn(7)
        init = np.random.default_rng(s_init)
        self.r_sched = np.random.default_rng(s_sched)
        self.r_keys = np.random.default_rng(s_keys)
        self.r_vals = np.random.default_rng(s_vals)
        self.r_ids = np.random.default_rng(s_ids)
        self.r_time = np.random.default_rng(s_time)
        self.r_dup = np.random.default_rng(s_dup)

        envs, runs = config.envs, config.runs
        self.models = [_model_for(e, i) for i, e in enumerate(envs)]
        n_env = len(envs)
        jitter = init.uniform(-0.05, 0.05, n_env)
        self.env_kind = np.array([m.kind for m in self.models])
        self.env_l0 = np.array(
            [_logit(m.p_start + j) for m, j in zip(self.models, jitter, strict=True)]
        )
        self.env_l1 = np.array(
            [_logit(m.p_end + j) for m, j in zip(self.models, jitter, strict=True)]
        )
        self.env_max = np.array([m.max_completion_tokens for m in self.models])
        self.env_sigma = np.array([m.len_sigma for m in self.models])
        # median chosen so that P(tokens >= max) is about 1% (z = 2.326)
        self.env_mu = np.log(self.env_max) - 2.326 * self.env_sigma - 0.1
        self.env_tok_rate = np.array([m.tok_per_s for m in self.models])
        self.env_score_mu = np.log([m.score_median for m in self.models])
        self.env_score_sigma = np.array([m.score_sigma for m in self.models])
        self.env_fail = np.array([m.fail_rate for m in self.models])
        # per-task difficulty (logit offset) and prompt length, fixed for the run
        self.task_difficulty = np.stack(
            [init.normal(0.0, m.difficulty_sd, _TASK_POOL) for m in self.models]
        )
        self.task_prompt = np.stack(
            [
                np.maximum(
                    8, np.exp(np.log(m.prompt_median) + 0.35 * init.standard_normal(_TASK_POOL))
                ).astype(np.int64)
                for m in self.models
            ]
        )
        self.task_names = [[f"{e}/t{i:05d}" for i in range(_TASK_POOL)] for e in envs]

        # segments: run x env, throughput weight per environment
        env_weight = init.uniform(0.8, 1.25, n_env)
        self.seg_run = np.repeat(np.arange(len(runs)), n_env)
        self.seg_env = np.tile(np.arange(n_env), len(runs))
        w = env_weight[self.seg_env]
        self.seg_p = w / w.sum()
        self.seg_key = [
            f"{runs[r]}|{envs[e]}".encode() for r, e in zip(self.seg_run, self.seg_env, strict=True)
        ]
        self.seg_groups = [0] * len(self.seg_run)
        self.run_groups = [0] * len(runs)

        self.fault_env = [np.array([f.env in ("*", e) for e in envs]) for f in config.faults]
        self.fault_window = [f.window(config.events) for f in config.faults]

        self.pos = 0
        self.ts = float(config.start_ts)
        self.encoder = msgspec.json.Encoder()

    # ---- helpers -----------------------------------------------------------------------

    def _fault_mask(self, i: int, env: np.ndarray, pos: np.ndarray) -> np.ndarray:
        lo, hi = self.fault_window[i]
        mask: np.ndarray = self.fault_env[i][env] & (pos >= lo) & (pos < hi)
        return mask

    def _structural_active(self, lo: int, hi: int) -> bool:
        for f, (s, e) in zip(self.cfg.faults, self.fault_window, strict=True):
            if f.kind in _STRUCTURAL_KINDS and s < hi and e > lo:
                return True
        return False

    # ---- main loop ---------------------------------------------------------------------

    def chunks(self) -> Iterator[_Chunk]:
        total = self.cfg.events
        while self.pos < total:
            chunk = self._chunk(min(_CHUNK, total - self.pos))
            if chunk.keys:
                yield chunk
            elif self._all_silenced(self.pos):  # nothing can ever be emitted again
                return

    def _all_silenced(self, pos: int) -> bool:
        silenced = np.zeros(len(self.cfg.envs), dtype=bool)
        for f, envmask, (lo, hi) in zip(
            self.cfg.faults, self.fault_env, self.fault_window, strict=True
        ):
            if f.kind == "silence" and lo <= pos < hi:
                silenced |= envmask
        return bool(silenced.all())

    def _chunk(self, n_base: int) -> _Chunk:
        cfg = self.cfg
        gs = cfg.group_size
        n_groups = -(-n_base // gs)
        sizes = np.full(n_groups, gs, dtype=np.int64)
        sizes[-1] = n_base - gs * (n_groups - 1)
        starts = np.concatenate(([0], np.cumsum(sizes)[:-1]))

        # -- schedule groups (segment, task, policy version)
        g_seg = self.r_sched.choice(len(self.seg_p), size=n_groups, p=self.seg_p)
        g_task = self.r_sched.integers(0, _TASK_POOL, size=n_groups)
        g_env = self.seg_env[g_seg]
        g_pv = np.empty(n_groups, dtype=np.int64)
        g_ids: list[str] = []
        runs, envs, step = cfg.runs, cfg.envs, cfg.groups_per_step
        for gi, si in enumerate(g_seg.tolist()):
            ri = int(self.seg_run[si])
            num = self.seg_groups[si]
            self.seg_groups[si] = num + 1
            g_pv[gi] = self.run_groups[ri] // step
            self.run_groups[ri] += 1
            g_ids.append(f"{runs[ri]}/{envs[self.seg_env[si]]}/g{num:06d}")
        g_progress = np.clip((self.pos + starts) / max(cfg.events, 1), 0.0, 1.0)

        slot_group = np.repeat(np.arange(n_groups), sizes)
        slot_member = np.arange(n_base) - starts[slot_group]
        sort_keys = starts[slot_group] + self.r_keys.random(n_base) * (2.0 * gs)
        order = np.argsort(sort_keys, kind="stable")

        # -- per-slot randomness (drawn whatever the faults, so a fault changes nothing
        #    before its start)
        rv = self.r_vals
        n = n_base
        u = rv.random((14, n))
        z = rv.standard_normal((8, n))
        tests_total = rv.integers(4, 21, n)
        tests_partial = rv.binomial(tests_total, 0.4)
        turns = 1 + rv.poisson(3.0, n)
        calls_extra = rv.poisson(0.6, n)
        err_pick = rv.integers(0, 3, n)
        inv_kind = rv.integers(0, 6, n)
        gu = rv.random((4, n_groups))
        gz = rv.standard_normal(n_groups)
        g_tests_total = rv.integers(4, 21, n_groups)
        g_tests_partial = rv.binomial(g_tests_total, 0.4)
        event_ids = _hex_strings(self.r_ids.integers(0, 256, (n, 16), dtype=np.uint8), True)
        hashes = _hex_strings(self.r_ids.integers(0, 256, (n, 8), dtype=np.uint8), False)
        block = self.r_time.standard_normal(-(-2 * n // 64))
        gaps = (
            self.r_time.exponential(1.0, 2 * n) * np.repeat(np.exp(0.6 * block - 0.18), 64)[: 2 * n]
        )
        # rare lulls of ~100 events' worth of time; the mean gap stays 1 / events_per_second
        lull = self.r_time.random(2 * n) < 0.0005
        gaps = (gaps + lull * self.r_time.exponential(100.0, 2 * n)) / (
            cfg.events_per_second * 1.05
        )
        dup_u = self.r_dup.random(n)
        dup_delay = self.r_dup.integers(1, 2 * gs + 1, n)

        # -- final order: silence drops, duplicates inserted after their original
        if self._structural_active(self.pos, self.pos + 2 * n):
            out = self._structural_order(order, g_env[slot_group], dup_u, dup_delay)
        else:
            out = order.tolist()
        m_out = len(out)
        out_arr = np.array(out, dtype=np.int64)
        is_event = out_arr >= 0
        ev_slot = out_arr[is_event]
        ev_pos = self.pos + np.flatnonzero(is_event)
        ts_all = self.ts + np.cumsum(gaps[:m_out])
        ev_ts = np.round(ts_all[is_event], 3)

        # -- values of the emitted episodes, vectorised
        g = slot_group[ev_slot]
        env = g_env[g]
        kind = self.env_kind[env]
        task = g_task[g]
        prog = g_progress[g]
        logit_p = (
            self.env_l0[env]
            + (self.env_l1[env] - self.env_l0[env]) * prog
            + self.task_difficulty[env, task]
        )
        p = 1.0 / (1.0 + np.exp(-logit_p))
        ne = len(ev_slot)
        len_mult = 1.0 + 0.15 * prog
        rep_add = np.zeros(ne)
        zv = np.zeros(ne, dtype=bool)
        force_trunc = np.zeros(ne, dtype=bool)
        fail_rate = self.env_fail[env].copy()
        burst = np.zeros(ne, dtype=bool)
        masked = np.zeros(ne, dtype=bool)
        invalid = np.zeros(ne, dtype=bool)
        uu = u[:, ev_slot]
        zz = z[:, ev_slot]
        for i, f in enumerate(cfg.faults):
            mk = self._fault_mask(i, env, ev_pos)
            self.stats.fault_events[i] += int(mk.sum())
            if not mk.any():
                continue
            m = f.strength
            if f.kind == "reward_drop":
                p = np.where(mk, p * (1.0 - m), p)
            elif f.kind == "reward_hack":
                h = np.clip((ev_pos - f.start) / REWARD_HACK_RAMP, 0.0, 1.0) * m * mk
                p = p + (1.0 - p) * 0.7 * h
                len_mult = len_mult * (1.0 + 0.5 * h)
                rep_add = rep_add + 0.35 * h
            elif f.kind == "length_collapse":
                len_mult = np.where(mk, len_mult / m, len_mult)
            elif f.kind == "length_explosion":
                len_mult = np.where(mk, len_mult * m, len_mult)
            elif f.kind == "zero_variance":
                zv |= mk & (gu[2, g] < m)
            elif f.kind == "truncation":
                force_trunc |= mk & (uu[3] < m)
            elif f.kind == "error_burst":
                fail_rate = np.where(mk, np.maximum(fail_rate, m), fail_rate)
                burst |= mk & (uu[2] >= self.env_fail[env])
            elif f.kind == "masked_failure":
                masked |= mk & (uu[4] < m)
            elif f.kind == "invalid":
                invalid |= mk & (uu[5] < m)

        # success and reward per model (a zero-variance group shares its draws)
        u_succ = np.where(zv, gu[0, g], uu[0])
        success = u_succ < p
        u_fmt = np.where(zv, gu[1, g], uu[1])
        fmt = np.where(u_fmt < 0.01, 0.0, np.where(u_fmt < 0.03, 0.5, 1.0))
        t_total = np.where(zv, g_tests_total[g], tests_total[ev_slot])
        # a failed solution passes some tests, or none when it does not even compile
        t_fail = np.minimum(np.where(zv, g_tests_partial[g], tests_partial[ev_slot]), t_total - 1)
        t_fail = np.where(np.where(zv, gu[3, g], uu[11]) < 0.35, 0, t_fail)
        t_pass = np.where(success, t_total, t_fail)
        n_turns = np.minimum(turns[ev_slot], 12)
        n_calls = np.maximum(0, n_turns - 1 + calls_extra[ev_slot])
        n_tool_err = (uu[6] < 0.03 * n_calls).astype(np.int64)
        task_score = np.where(
            success,
            np.clip(0.8 + 0.12 * np.where(zv, gz[g], zz[0]), 0.0, 1.0),
            np.clip(0.12 + 0.08 * np.abs(np.where(zv, gz[g], zz[0])), 0.0, 1.0),
        )
        efficiency = np.where(
            zv, 1.0, np.clip(1.0 - 0.1 * n_tool_err - 0.02 * (n_turns - 1), 0.0, 1.0)
        )
        reward = np.select(
            [kind == 0, kind == 1],
            [0.9 * success + 0.1 * fmt, t_pass / t_total],
            0.8 * task_score + 0.2 * efficiency,
        )

        # lengths and truncation
        maxtok = self.env_max[env]
        tokens = np.exp(self.env_mu[env] + self.env_sigma[env] * zz[1]) * len_mult
        tokens = np.maximum(1, tokens).astype(np.int64)
        natural_trunc = (tokens >= maxtok) & ~zv
        turn_trunc = (kind == 2) & (n_turns >= 12) & ~zv
        tokens = np.where(zv, np.minimum(tokens, maxtok - 1), tokens)
        trunc = natural_trunc | force_trunc | turn_trunc
        tokens = np.where(natural_trunc | force_trunc, maxtok, np.minimum(tokens, maxtok))

        failed = uu[2] < fail_rate
        aborted = ~failed & (uu[7] < 0.0005)
        masked &= ~failed & ~aborted
        trunc &= ~failed & ~aborted & ~masked
        zero = trunc | masked
        reward = np.where(zero, 0.0, reward)
        masked_timeout = masked & (uu[8] < 0.5)  # silent timeout; the other half sets error

        # timings
        gen_s = tokens / self.env_tok_rate[env] * np.exp(0.3 * zz[2])
        env_s = np.where(kind == 1, 2.0 * np.exp(0.5 * zz[3]), n_turns * 0.4 * np.exp(0.4 * zz[3]))
        score_s = np.minimum(
            np.exp(self.env_score_mu[env] + self.env_score_sigma[env] * zz[4]),
            0.8 * SCORE_TIMEOUT_S,
        )
        score_s = np.where(masked_timeout, SCORE_TIMEOUT_S, score_s)
        queue_s = 0.15 * np.exp(0.8 * zz[5])
        total_s = gen_s + np.where(kind == 0, 0.0, env_s) + score_s + queue_s
        repetition = np.clip(0.12 * np.exp(0.35 * zz[6]) + rep_add, 0.0, 1.0)
        stale = np.searchsorted([0.55, 0.9], uu[9])
        pv = g_pv[g]
        pv_end = pv + ((uu[10] < 0.08) & (stale > 0))

        # -- one dict per episode: vectorised columns, then a tight Python loop
        scored = ~failed & ~aborted
        zero = trunc | masked
        status_code = np.select([failed, aborted, trunc], [2, 3, 1], 0)
        stop_code = np.select(
            [failed, aborted, turn_trunc & trunc, trunc, kind == 2], [6, 7, 2, 1, 4], 0
        )
        reward_obj = np.round(reward, 4).astype(object)
        reward_obj[~scored] = None
        # first and second reward component, per model
        comp1 = np.round(np.select([kind == 0, kind == 1], [success * 1.0, reward], task_score), 4)
        comp1 = np.where(zero, 0.0, comp1)
        comp2 = np.where(zero, 0.0, np.where(kind == 0, fmt, np.round(efficiency, 4)))
        t_pass = np.where(zero, 0, t_pass)
        error_obj = np.full(ne, None, dtype=object)
        err_pick_ev = err_pick[ev_slot]
        for i in np.flatnonzero(failed | (masked & ~masked_timeout)).tolist():
            if failed[i]:
                errs = _BURST_ERRORS if burst[i] else self.models[env[i]].errors
                t, w, msg = errs[err_pick_ev[i]]
                error_obj[i] = {"type": t, "where": w, "message": msg}
                if t == "VerifierTimeout":
                    score_s[i] = SCORE_TIMEOUT_S
            else:
                error_obj[i] = dict(_MASKED_ERROR)
        # many small dicts: the cyclic collector would rescan them for nothing
        gc_was_enabled = gc.isenabled()
        gc.disable()
        try:
            evs, values = self._encoded_dicts(
                ev_slot.tolist(),
                g_seg[g].tolist(),
                env.tolist(),
                kind.tolist(),
                g.tolist(),
                slot_member[ev_slot].tolist(),
                ev_ts.tolist(),
                task.tolist(),
                self.task_prompt[env, task].tolist(),
                pv.tolist(),
                pv_end.tolist(),
                (pv + stale).tolist(),
                status_code.tolist(),
                stop_code.tolist(),
                reward_obj.tolist(),
                comp1.tolist(),
                comp2.tolist(),
                tokens.tolist(),
                maxtok.tolist(),
                n_turns.tolist(),
                n_calls.tolist(),
                n_tool_err.tolist(),
                error_obj.tolist(),
                np.round(gen_s, 3).tolist(),
                np.round(env_s, 3).tolist(),
                np.round(score_s, 3).tolist(),
                np.round(queue_s, 3).tolist(),
                np.round(total_s, 3).tolist(),
                np.round(repetition, 3).tolist(),
                t_total.astype(float).tolist(),
                t_pass.astype(float).tolist(),
                g_ids,
                sizes.tolist(),
                event_ids,
                hashes,
            )
        finally:
            if gc_was_enabled:
                gc.enable()
        chunk = _Chunk()
        events: list[dict[str, Any] | None] = list(evs)
        inv_kind_ev = inv_kind[ev_slot]
        for i in np.flatnonzero(invalid).tolist():
            events[i] = None
            if values is not None:
                values[i] = _malform(evs[i], int(inv_kind_ev[i]), self.encoder)
        keys = [self.seg_key[s] for s in g_seg[g].tolist()]
        n_dup = m_out - ne
        if n_dup:  # insert duplicates: the same message again
            ev_at: list[int] = []  # out index -> index of the episode
            f_keys: list[bytes] = []
            f_events: list[dict[str, Any] | None] = []
            f_values: list[bytes] = []
            k = 0
            for o in out:
                j = ev_at[-1 - o] if o < 0 else k
                if o >= 0:
                    k += 1
                ev_at.append(j)
                f_keys.append(keys[j])
                f_events.append(events[j])
                if values is not None:
                    f_values.append(values[j])
            keys, events = f_keys, f_events
            if values is not None:
                values = f_values
        chunk.keys, chunk.events, chunk.ts = keys, events, ts_all.tolist()
        if values is not None:
            chunk.values = values
        n_invalid = sum(1 for ev in events if ev is None)

        # -- bookkeeping
        st = self.stats
        st.messages += m_out
        st.invalid += n_invalid
        st.valid += m_out - n_invalid
        st.duplicates += n_dup
        st.failed += int((failed & ~invalid).sum())
        for i, f in enumerate(cfg.faults):
            lo, hi = self.fault_window[i]
            if self.pos <= lo < self.pos + m_out and st.fault_start_ts[i] is None:
                st.fault_start_ts[i] = round(float(ts_all[lo - self.pos]), 3)
            if f.end is not None and self.pos <= hi - 1 < self.pos + m_out:
                st.fault_end_ts[i] = round(float(ts_all[hi - 1 - self.pos]), 3)
        if m_out:
            self.ts = float(ts_all[-1])
            st.last_ts = round(self.ts, 3)
        self.pos += m_out
        return chunk

    def _structural_order(
        self, order: np.ndarray, slot_env: np.ndarray, dup_u: np.ndarray, dup_delay: np.ndarray
    ) -> list[int]:
        """Order with silenced episodes dropped and duplicates (``-1 - original``) inserted."""
        cfg = self.cfg
        silence = [
            (self.fault_env[i], *self.fault_window[i])
            for i, f in enumerate(cfg.faults)
            if f.kind == "silence"
        ]
        dups = [
            (self.fault_env[i], *self.fault_window[i], f.strength)
            for i, f in enumerate(cfg.faults)
            if f.kind == "duplicate"
        ]
        silence_idx = [i for i, f in enumerate(cfg.faults) if f.kind == "silence"]
        out: list[int] = []
        pending: list[tuple[int, int]] = []  # (insert at len(out), index in out)
        base = self.pos
        for slot in order.tolist():
            while pending and pending[0][0] <= len(out):
                _, j = heapq.heappop(pending)
                out.append(-1 - j)
            gp = base + len(out)
            e = slot_env[slot]
            dropped = False
            for k, (envmask, lo, hi) in enumerate(silence):
                if envmask[e] and lo <= gp < hi:
                    dropped = True
                    self.stats.fault_events[silence_idx[k]] += 1
                    break
            if dropped:
                self.stats.silenced += 1
                continue
            out.append(slot)
            for envmask, lo, hi, m in dups:
                if envmask[e] and lo <= gp < hi and dup_u[slot] < m:
                    heapq.heappush(pending, (len(out) + int(dup_delay[slot]), len(out) - 1))
                    break
        while pending:
            _, j = heapq.heappop(pending)
            out.append(-1 - j)
        # duplicates may overflow the requested total: the stream ends mid-flight
        return out[: cfg.events - self.pos]

    def _encoded_dicts(self, *columns: Any) -> tuple[list[dict[str, Any]], list[bytes] | None]:
        evs = self._dicts(*columns)
        if not self.encode:
            return evs, None
        encode = self.encoder.encode
        return evs, [encode(ev) for ev in evs]

    def _dicts(
        self,
        slot: list[int],
        seg: list[int],
        env: list[int],
        kind: list[int],
        grp: list[int],
        member: list[int],
        ts: list[float],
        task: list[int],
        prompt: list[int],
        pv: list[int],
        pv_end: list[int],
        tv: list[int],
        status: list[int],
        stop: list[int],
        reward: list[float | None],
        comp1: list[float],
        comp2: list[float],
        tokens: list[int],
        maxtok: list[int],
        turns: list[int],
        calls: list[int],
        tool_err: list[int],
        error: list[dict[str, str] | None],
        gen_s: list[float],
        env_s: list[float],
        score_s: list[float],
        queue_s: list[float],
        total_s: list[float],
        repetition: list[float],
        t_total: list[int],
        t_pass: list[int],
        g_ids: list[str],
        sizes: list[int],
        event_ids: list[str],
        hashes: list[str],
    ) -> list[dict[str, Any]]:
        """Assemble the event dicts (the hot loop: keep it free of numpy and attributes)."""
        run_of = [self.cfg.runs[r] for r in self.seg_run.tolist()]
        env_of = [self.cfg.envs[e] for e in self.seg_env.tolist()]
        version = [m.version for m in self.models]
        max_turns = [m.max_turns for m in self.models]
        task_names = self.task_names
        status_names = ("completed", "truncated", "failed", "aborted")
        stop_names = (
            "stop",
            "length",
            "max_turns",
            "timeout",
            "env_done",
            "tool_error",
            "error",
            "unknown",
        )
        timeout = SCORE_TIMEOUT_S
        out: list[dict[str, Any]] = []
        append = out.append
        for i in range(len(slot)):
            k = kind[i]
            e = env[i]
            sg = seg[i]
            gr = grp[i]
            sl = slot[i]
            gid = g_ids[gr]
            r = reward[i]
            comps: dict[str, float] | None
            if r is None:
                comps = None
            elif k == 0:
                comps = {"correct": comp1[i], "format": comp2[i]}
            elif k == 1:
                comps = {"tests": comp1[i]}
            else:
                comps = {"task": comp1[i], "efficiency": comp2[i]}
            if k == 0:
                timings = {
                    "generate_s": gen_s[i],
                    "score_s": score_s[i],
                    "queue_s": queue_s[i],
                    "total_s": total_s[i],
                    "score_timeout_s": timeout,
                }
            else:
                timings = {
                    "generate_s": gen_s[i],
                    "env_s": env_s[i],
                    "score_s": score_s[i],
                    "queue_s": queue_s[i],
                    "total_s": total_s[i],
                    "score_timeout_s": timeout,
                }
            ev: dict[str, Any] = {
                "schema_version": 1,
                "event_id": event_ids[sl],
                "ts": ts[i],
                "run_id": run_of[sg],
                "env_id": env_of[sg],
                "env_version": version[e],
                "phase": "train",
                "episode_id": f"{gid}/{member[i]}",
                "task_id": task_names[e][task[i]],
                "group_id": gid,
                "group_size": sizes[gr],
                "policy_version": pv[i],
                "policy_version_end": pv_end[i],
                "trainer_version": tv[i],
                "status": status_names[status[i]],
                "stop_reason": stop_names[stop[i]],
                "reward": r,
                "reward_components": comps,
                "reward_min": 0.0,
                "reward_max": 1.0,
                "prompt_tokens": prompt[i],
                "completion_tokens": tokens[i],
                "max_completion_tokens": maxtok[i],
            }
            if k == 2:
                ev["num_turns"] = turns[i]
                ev["num_tool_calls"] = calls[i]
                ev["num_tool_errors"] = tool_err[i]
                ev["max_turns"] = max_turns[e]
            ev["error"] = error[i]
            ev["timings"] = timings
            ev["completion_hash"] = hashes[sl]
            ev["repetition"] = repetition[i]
            if k == 1 and r is not None:
                ev["metrics"] = {"tests_total": t_total[i], "tests_passed": t_pass[i]}
            append(ev)
        return out


def _malform(ev: dict[str, Any], kind: int, encoder: msgspec.json.Encoder) -> bytes:
    """A message a consumer must refuse: bad JSON, missing field, NaN, wrong type, ..."""
    if kind == 0:  # cut off mid-message
        data = encoder.encode(ev)
        return data[: len(data) // 2]
    if kind == 1:  # required field missing
        return encoder.encode({k: v for k, v in ev.items() if k != "status"})
    if kind == 2:  # NaN written by a lenient JSON encoder
        return encoder.encode({**ev, "reward": None}).replace(b'"reward":null', b'"reward":NaN', 1)
    if kind == 3:  # wrong type
        return encoder.encode({**ev, "reward": str(ev["reward"])})
    if kind == 4:  # a schema this consumer does not know
        return encoder.encode({**ev, "schema_version": 2})
    return encoder.encode({**ev, "completion_tokens": -1})


# --------------------------------------------------------------------------------------------
# public generators


def _timed_messages(
    config: SimulationConfig, stats: SimulationStats | None
) -> Iterator[tuple[list[bytes], list[bytes], list[float]]]:
    """Per chunk: keys, values and the event time of each position."""
    for chunk in _Simulator(config, stats).chunks():
        yield chunk.keys, chunk.values, chunk.ts


def generate_messages(
    config: SimulationConfig, stats: SimulationStats | None = None
) -> Iterator[tuple[bytes, bytes]]:
    """``(key, value)`` Kafka messages; key is ``run_id|env_id`` (also for invalid ones)."""
    for keys, values, _ in _timed_messages(config, stats):
        yield from zip(keys, values, strict=True)


def generate(config: SimulationConfig, stats: SimulationStats | None = None) -> Iterator[bytes]:
    """The stream as encoded JSON messages (invalid injected messages as raw bytes)."""
    for _, values, _ in _timed_messages(config, stats):
        yield from values


def generate_events(
    config: SimulationConfig, stats: SimulationStats | None = None
) -> Iterator[dict[str, Any]]:
    """The valid messages of the same stream as dicts (duplicates included, invalid skipped).

    A duplicate is the same dict object as its original: copy before mutating.
    """
    for chunk in _Simulator(config, stats, encode=False).chunks():
        for ev in chunk.events:
            if ev is not None:
                yield ev


def labels(config: SimulationConfig, stats: SimulationStats | None = None) -> dict[str, Any]:
    """Ground truth of a stream: the configuration, the faults with their windows and, when
    ``stats`` of a consumed stream are given, counts and event times of the fault onsets."""
    faults = []
    for i, f in enumerate(config.faults):
        lo, hi = f.window(config.events)
        item: dict[str, Any] = {
            "kind": f.kind,
            "env": f.env,
            "envs": list(config.envs) if f.env == "*" else [f.env],
            "segments": [[r, e] for r in config.runs for e in config.envs if f.env in ("*", e)],
            "start": f.start,
            "end": f.end,
            "magnitude": f.strength,
            "magnitude_meaning": FAULT_KINDS[f.kind],
        }
        if stats is not None and i < len(stats.fault_events):
            item["events_in_window"] = stats.fault_events[i]
            item["start_ts"] = stats.fault_start_ts[i]
            item["end_ts"] = stats.fault_end_ts[i]
        item["window"] = [lo, hi]
        if stats is not None:
            item["reached"] = stats.messages > f.start
        faults.append(item)
    out: dict[str, Any] = {
        "seed": config.seed,
        "events": config.events,
        "runs": list(config.runs),
        "envs": list(config.envs),
        "group_size": config.group_size,
        "groups_per_step": config.groups_per_step,
        "start_ts": config.start_ts,
        "events_per_second": config.events_per_second,
        "faults": faults,
    }
    if stats is not None:
        counts = asdict(stats)
        for k in ("fault_events", "fault_start_ts", "fault_end_ts"):
            counts.pop(k)
        out["counts"] = counts
    return out


# --------------------------------------------------------------------------------------------
# command line


def _csv(text: str) -> tuple[str, ...]:
    items = tuple(s.strip() for s in text.split(",") if s.strip())
    if not items:
        raise argparse.ArgumentTypeError("expected a comma-separated list")
    return items


def _fault_arg(text: str) -> Fault:
    try:
        return Fault.parse(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def register(subparsers: Any) -> argparse.ArgumentParser:
    """Add the ``simulate`` sub-command to an ``argparse`` subparsers object."""
    p: argparse.ArgumentParser = subparsers.add_parser(
        "simulate",
        help="generate a synthetic rollout stream with injected faults",
        description="Generate a synthetic rollout stream (deterministic from --seed) to a "
        "JSONL file or a Kafka topic. Fault kinds: " + ", ".join(FAULT_KINDS) + ".",
    )
    d = SimulationConfig()
    p.add_argument("--events", type=int, default=d.events, help="messages to produce")
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--runs", type=_csv, default=d.runs, help="comma-separated run ids")
    p.add_argument("--envs", type=_csv, default=d.envs, help="comma-separated environment ids")
    p.add_argument("--group-size", type=int, default=d.group_size)
    p.add_argument(
        "--rate",
        type=float,
        default=d.events_per_second,
        help="simulated events per second of event time",
    )
    p.add_argument(
        "--start-ts",
        type=float,
        default=d.start_ts,
        help="event time of the first message (unix seconds)",
    )
    p.add_argument(
        "--fault",
        type=_fault_arg,
        action="append",
        default=[],
        metavar="KIND:ENV:START[:MAGNITUDE[:END]]",
        help="inject a fault (repeatable); ENV '*' targets every environment",
    )
    dest = p.add_mutually_exclusive_group()
    dest.add_argument("--out", help="JSONL output file ('-' for standard output)")
    dest.add_argument("--kafka", metavar="BOOTSTRAP", help="Kafka bootstrap servers")
    p.add_argument("--topic", default="rl.rollouts", help="Kafka topic (with --kafka)")
    p.add_argument(
        "--realtime",
        action="store_true",
        help="pace sending on the wall clock to follow the events' ts",
    )
    p.add_argument("--labels", metavar="PATH", help="write the fault ground truth as JSON")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    """Handler of ``simulate``; returns the exit status."""
    from monitor.emitter import JsonlWriter, RolloutEmitter

    try:
        config = SimulationConfig(
            seed=args.seed,
            runs=tuple(args.runs),
            envs=tuple(args.envs),
            events=args.events,
            group_size=args.group_size,
            start_ts=args.start_ts,
            events_per_second=args.rate,
            faults=tuple(args.fault),
        )
    except ValueError as exc:
        print(f"simulate: {exc}", file=sys.stderr)
        return 2
    sink: JsonlWriter | RolloutEmitter
    if args.kafka:
        sink = RolloutEmitter(args.kafka, topic=args.topic)
    else:
        sink = JsonlWriter(args.out or "-")
    stats = SimulationStats()
    t0 = time.perf_counter()
    note = ""
    try:
        _send(config, stats, sink, args.realtime)
        remaining = sink.flush(60.0)
    except KeyboardInterrupt:
        note = "; interrupted"
        remaining = sink.flush(10.0)
    except BrokenPipeError:  # e.g. piped into `head`
        note = "; output closed early"
        remaining = 0
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    finally:
        if isinstance(sink, JsonlWriter):
            with contextlib.suppress(BrokenPipeError):
                sink.close()
    elapsed = time.perf_counter() - t0
    if args.labels:
        with open(args.labels, "w", encoding="utf-8") as fh:
            json.dump(labels(config, stats), fh, indent=2)
            fh.write("\n")
    faults = ",".join(f"{f.kind}:{f.env}:{f.start}" for f in config.faults) or "none"
    errors = int(getattr(sink, "errors", 0))
    print(
        f"simulate: sent {sink.sent} messages ({stats.invalid} invalid, {stats.duplicates} "
        f"duplicates, {stats.failed} failed episodes, {stats.silenced} silenced) in "
        f"{elapsed:.2f}s ({sink.sent / max(elapsed, 1e-9):,.0f}/s); faults: {faults}{note}"
        + (f"; delivery errors: {errors} (last: {sink.last_error})" if errors else "")
        + (f"; undelivered: {remaining}" if remaining else ""),
        file=sys.stderr,
    )
    return 1 if errors or remaining else 0


def _send(config: SimulationConfig, stats: SimulationStats, sink: Any, realtime: bool) -> None:
    """Write the stream to ``sink``; with ``realtime``, follow the events' ts on the clock."""
    t0 = time.perf_counter()
    ts0: float | None = None
    for keys, values, times in _timed_messages(config, stats):
        if not realtime:
            for key, value in zip(keys, values, strict=True):
                sink.emit_raw(value, key)
            continue
        for key, value, ts in zip(keys, values, times, strict=True):
            if ts0 is None:
                ts0 = ts
            delay = (ts - ts0) - (time.perf_counter() - t0)
            if delay > 0.002:
                time.sleep(delay)
            sink.emit_raw(value, key)


def main(argv: list[str] | None = None) -> int:
    """``python -m monitor.simulate ...``: the ``simulate`` sub-command on its own."""
    parser = argparse.ArgumentParser(prog="python -m monitor.simulate")
    sub = parser.add_subparsers(dest="command")
    register(sub)
    args = parser.parse_args(["simulate", *(argv if argv is not None else sys.argv[1:])])
    return int(args.func(args))


if __name__ == "__main__":
    raise SystemExit(main())
