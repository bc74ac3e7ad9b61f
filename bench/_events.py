"""A fast generator of valid schema-v1 rollout events over many segments.

``monitor.simulate`` models learning curves and faults event by event (about 120k events/s);
preloading millions of events for a throughput run needs something faster and simpler. Here
the random parts are drawn with numpy for a whole chunk at once and each message is one
``%``-format of a fixed template, so a healthy stream is generated at about 200,000 events
per second. The events are healthy: about 0.8% fail (``reward: null`` with an
``error``), 1% are truncated at ``max_completion_tokens``, the rest complete with a reward
in [0, 1] and log-normal completion lengths.

>>> factory = EventFactory(segments=4, seed=1)
>>> messages = factory.messages(3, np.full(3, 1_764_000_000.0))
>>> key, value = messages[0]
>>> from monitor.events import decode_event
>>> event = decode_event(value)
>>> key.decode() == f"{event.run_id}|{event.env_id}", event.ts
(True, 1764000000.0)
"""

from __future__ import annotations

import numpy as np

#: Environments per run: segment ``i`` is run ``i // ENVS_PER_RUN``, environment ``i % ...``.
ENVS_PER_RUN = 100
GROUP_SIZE = 8
MAX_COMPLETION_TOKENS = 4096
FAIL_SHARE = 0.008
TRUNCATED_SHARE = 0.01

_PREFIX = (
    '{"schema_version":1,"event_id":"%032x","ts":%.3f,"run_id":"%s","env_id":"%s",'
    '"env_version":"1.4.2","phase":"train","task_id":"%s/t%05d","group_id":"%s/%s/g%07d",'
    '"group_size":8,"policy_version":%d,"trainer_version":%d,'
)
_COMPLETED = (
    '"status":"completed","stop_reason":"stop","reward":%.4f,'
    '"reward_components":{"correct":%.1f,"format":%.1f},"reward_min":0.0,"reward_max":1.0,'
    '"prompt_tokens":%d,"completion_tokens":%d,"max_completion_tokens":4096,"num_turns":1,'
    '"error":null,"timings":{"generate_s":%.3f,"score_s":%.3f,"score_timeout_s":30.0},'
    '"repetition":%.3f}'
)
_TRUNCATED = (
    '"status":"truncated","stop_reason":"length","reward":0.0,'
    '"reward_components":{"correct":0.0,"format":0.0},"reward_min":0.0,"reward_max":1.0,'
    '"prompt_tokens":%d,"completion_tokens":4096,"max_completion_tokens":4096,"num_turns":1,'
    '"error":null,"timings":{"generate_s":%.3f,"score_s":%.3f,"score_timeout_s":30.0},'
    '"repetition":%.3f}'
)
_FAILED = (
    '"status":"failed","stop_reason":"error","reward":null,'
    '"prompt_tokens":%d,"completion_tokens":%d,"max_completion_tokens":4096,"num_turns":1,'
    '"error":{"type":"SandboxTimeout","where":"sandbox","message":"no answer in 60 s"},'
    '"timings":{"generate_s":%.3f,"score_s":%.3f,"score_timeout_s":30.0},"repetition":%.3f}'
)


def segment_names(segments: int) -> list[tuple[str, str]]:
    """``(run_id, env_id)`` of each segment."""
    return [
        (f"grpo-run-{i // ENVS_PER_RUN:03d}", f"env-{i % ENVS_PER_RUN:03d}")
        for i in range(segments)
    ]


class EventFactory:
    """Chunks of ``(key, value)`` messages spread uniformly at random over ``segments``.

    Consecutive calls continue the same stream: event ids stay unique, and each segment's
    episodes keep forming groups of :data:`GROUP_SIZE` in order.
    """

    def __init__(self, segments: int, seed: int = 0) -> None:
        if segments < 1:
            raise ValueError(f"segments must be >= 1, got {segments}")
        self.segments = segments
        self._rng = np.random.default_rng(seed)
        self._names = segment_names(segments)
        self._keys = [f"{run}|{env}".encode() for run, env in self._names]
        self._success = self._rng.uniform(0.2, 0.8, segments)
        self._seen = np.zeros(segments, dtype=np.int64)
        self._id_base = int(self._rng.integers(1 << 62)) << 64
        self._produced = 0

    def messages(self, n: int, ts: np.ndarray) -> list[tuple[bytes, bytes]]:
        """The next ``n`` messages; ``ts[i]`` is the event time of message ``i``."""
        rng = self._rng
        seg = rng.integers(self.segments, size=n)
        seq = self._sequence_numbers(seg)
        group = seq // GROUP_SIZE
        policy = group // 32
        kind = rng.random(n)
        correct = rng.random(n) < self._success[seg]
        fmt = rng.random(n) < 0.9
        reward = np.where(correct, 0.9, 0.0) + np.where(fmt, 0.1, 0.0)
        length = np.minimum(rng.lognormal(6.5, 0.6, n), MAX_COMPLETION_TOKENS - 1).astype(int)
        prompt = rng.integers(80, 900, n)
        generate_s = length * 0.004 + rng.random(n)
        score_s = rng.uniform(0.05, 2.0, n)
        repetition = rng.uniform(0.05, 0.35, n)
        lag = rng.integers(0, 3, n)
        ids = range(self._id_base + self._produced, self._id_base + self._produced + n)
        self._produced += n
        out: list[tuple[bytes, bytes]] = []
        names, keys = self._names, self._keys
        rows = zip(
            ids,
            ts.tolist(),
            seg.tolist(),
            group.tolist(),
            policy.tolist(),
            lag.tolist(),
            kind.tolist(),
            reward.tolist(),
            correct.tolist(),
            fmt.tolist(),
            prompt.tolist(),
            length.tolist(),
            generate_s.tolist(),
            score_s.tolist(),
            repetition.tolist(),
            strict=True,
        )
        for eid, t, s, g, pv, lg, k, r, c, f, p, ln, gen, sc, rep in rows:
            run, env = names[s]
            head = _PREFIX % (eid, t, run, env, env, g % 4096, run, env, g, pv, pv + lg)
            if k < FAIL_SHARE:
                tail = _FAILED % (p, ln, gen, sc, rep)
            elif k < FAIL_SHARE + TRUNCATED_SHARE:
                tail = _TRUNCATED % (p, gen, sc, rep)
            else:
                tail = _COMPLETED % (r, float(c), float(f), p, ln, gen, sc, rep)
            out.append((keys[s], (head + tail).encode()))
        return out

    def _sequence_numbers(self, seg: np.ndarray) -> np.ndarray:
        """Position of each event within its segment's stream, continuing earlier chunks."""
        order = np.argsort(seg, kind="stable")
        ordered = seg[order]
        first = np.searchsorted(ordered, ordered, side="left")
        within = np.empty(len(seg), dtype=np.int64)
        within[order] = np.arange(len(seg)) - first
        seq = self._seen[seg] + within
        np.add.at(self._seen, seg, 1)
        return seq
