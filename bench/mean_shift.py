"""Mean-shift study: our CUSUM against the optimal detector and river's defaults.

Streams are N(0, 1) whose mean steps up by ``delta`` standard deviations at a random onset
(:data:`SHIFTS`), and a rate variant: Bernoulli successes whose probability drops from
:data:`RATE_P0` to each of :data:`RATE_P1`. Every detector sees the same seeded streams
(KSWIN, at about 200 µs per update, sees fewer and shorter ones).

- ``ours``: the :class:`~detectors.cusum.MeanShiftCUSUM` that ``reward_shift`` runs, with its
  default parameters (batches of 8 with the long-run variance and skewness corrections, and
  the per-sample charts) and its share of the bank's default budget.
- ``oracle_cusum``: the CUSUM of the log-likelihood ratio of the known pre- and post-change
  distributions (for N(0, 1) -> N(delta, 1): ``k = delta / 2``), the optimal detector for a
  given false-alarm rate. Its threshold gives the mean run length between false alarms that
  ``ours`` showed on the clean streams: the constant ``C`` of ``ARL0 ~ C * exp(h)`` is
  measured by simulation at a moderate threshold and the threshold extrapolated from it.
- river's ``ADWIN()``, ``KSWIN()``, ``PageHinkley()`` and, on the rate variant, ``DDM()``
  and ``HDDMA()`` (fed the failure indicator ``1 - success``), all with default parameters.

Delay is the number of samples from the onset to the first alarm at or after it; a trial
without one within :data:`HORIZON` samples is a miss.

>>> h = oracle_threshold(gaussian_llr(1.0), 1000.0, seed=1)
>>> 5.0 < h < 7.0
True
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, Protocol

import numpy as np
from river.drift import ADWIN, KSWIN, PageHinkley
from river.drift.binary import DDM, HDDMA

from detectors import DETECTORS, BankConfig
from detectors.cusum import MeanShiftCUSUM

__all__ = [
    "HORIZON",
    "RATE_P0",
    "RATE_P1",
    "SHIFTS",
    "bernoulli_llr",
    "delays",
    "false_alarms",
    "gaussian_llr",
    "measured_arl",
    "oracle_delays",
    "oracle_threshold",
    "our_cusum",
    "siegmund_threshold",
    "trial_streams",
]

SHIFTS = (0.5, 1.0, 2.0)
RATE_P0 = 0.6
RATE_P1 = (0.5, 0.4, 0.2)
HORIZON = 5000
#: Onsets are uniform in this range (KSWIN: :data:`KSWIN_ONSETS`).
ONSETS = (2000, 4000)
KSWIN_ONSETS = (300, 800)


class Detector(Protocol):
    def update(self, x: float) -> Any: ...
    @property
    def drift_detected(self) -> bool: ...


def our_cusum() -> MeanShiftCUSUM:
    """A fresh copy of the CUSUM inside ``reward_shift`` at the bank's default budget."""
    detector = BankConfig(enabled=tuple(DETECTORS)).build()["reward_shift"]
    cusum: MeanShiftCUSUM = detector.cusum.clone()  # type: ignore[attr-defined]
    return cusum


def make_detector(name: str, seed: int) -> Detector:
    """The detector called ``name`` with default parameters (KSWIN seeded for replay)."""
    if name == "ours":
        return our_cusum()
    factories: dict[str, Callable[[], Detector]] = {
        "adwin": ADWIN,
        "page_hinkley": PageHinkley,
        "kswin": lambda: KSWIN(seed=seed),
        "ddm": DDM,
        "hddm_a": HDDMA,
    }
    return factories[name]()


#: Detectors of the failure indicator (error rate up) rather than of the value itself.
_ON_FAILURES = frozenset({"ddm", "hddm_a"})


def trial_streams(
    kind: str, change: float, trials: int, seed: int, onsets: tuple[int, int] = ONSETS
) -> list[tuple[int, np.ndarray]]:
    """``(onset, samples)`` per trial: N(0, 1) shifted by ``change`` (``kind="normal"``) or
    Bernoulli(RATE_P0) turning into Bernoulli(``change``) (``kind="bernoulli"``)."""
    out = []
    for t in range(trials):
        rng = np.random.default_rng([seed, round(change * 1000), t, len(kind)])
        onset = int(rng.integers(*onsets))
        n = onset + HORIZON
        if kind == "normal":
            x = rng.standard_normal(n)
            x[onset:] += change
        else:
            p = np.where(np.arange(n) < onset, RATE_P0, change)
            x = (rng.random(n) < p).astype(float)
        out.append((onset, x))
    return out


def clean_chunks(kind: str, samples: int, seed: int, chunk: int = 1 << 20) -> list[np.ndarray]:
    rng = np.random.default_rng([seed, 17, len(kind)])
    out = []
    for start in range(0, samples, chunk):
        size = min(chunk, samples - start)
        if kind == "normal":
            out.append(rng.standard_normal(size))
        else:
            out.append((rng.random(size) < RATE_P0).astype(float))
    return out


def false_alarms(name: str, kind: str, samples: int, seed: int) -> int:
    """Alarms of one detector over ``samples`` clean samples (one long stream)."""
    detector = make_detector(name, seed)
    flip = name in _ON_FAILURES
    alarms = 0
    for values in clean_chunks(kind, samples, seed):
        for x in (1.0 - values if flip else values).tolist():
            detector.update(x)
            if detector.drift_detected:
                alarms += 1
    return alarms


def delays(
    name: str, kind: str, change: float, trials: int, seed: int, onsets: tuple[int, int] = ONSETS
) -> tuple[list[int | None], int]:
    """Per trial the delay (None: missed) and the number of alarms before the onsets."""
    flip = name in _ON_FAILURES
    out: list[int | None] = []
    early = 0
    for t, (onset, x) in enumerate(trial_streams(kind, change, trials, seed, onsets)):
        detector = make_detector(name, seed * 1000 + t)
        delay = None
        for i, v in enumerate((1.0 - x if flip else x).tolist()):
            detector.update(v)
            if detector.drift_detected:
                if i < onset:
                    early += 1
                else:
                    delay = i - onset
                    break
        out.append(delay)
    return out, early


# --------------------------------------------------------------------------------------------
# the oracle: a CUSUM of the log-likelihood ratio, vectorised over trials

LLR = Callable[[np.ndarray], np.ndarray]


def gaussian_llr(delta: float) -> LLR:
    """Log-likelihood ratio of N(delta, 1) against N(0, 1)."""
    return lambda x: delta * (x - delta / 2.0)


def bernoulli_llr(p0: float, p1: float) -> LLR:
    """Log-likelihood ratio of Bernoulli(p1) against Bernoulli(p0)."""
    up, down = math.log(p1 / p0), math.log((1.0 - p1) / (1.0 - p0))
    return lambda x: np.where(x > 0.5, up, down)


def _clean_sampler(llr: LLR, kind: str) -> Callable[[np.random.Generator, int], np.ndarray]:
    if kind == "normal":
        return lambda rng, n: llr(rng.standard_normal(n))
    return lambda rng, n: llr((rng.random(n) < RATE_P0).astype(float))


def measured_arl(
    llr: LLR, h: float, seed: int, kind: str = "normal", alarms: int = 1000, width: int = 4096
) -> float:
    """Mean run length between false alarms of the LLR CUSUM at threshold ``h`` (renewals)."""
    rng = np.random.default_rng([seed, 29])
    sample = _clean_sampler(llr, kind)
    s = np.zeros(width)
    count = 0
    steps = 0
    while count < alarms:
        block = sample(rng, width * 64).reshape(64, width)
        for row in block:
            s = np.maximum(s + row, 0.0)
            hit = s > h
            if hit.any():
                count += int(hit.sum())
                s[hit] = 0.0
        steps += 64
    return steps * width / count


def oracle_threshold(llr: LLR, arl0: float, seed: int, kind: str = "normal") -> float:
    """Threshold of the LLR CUSUM for a mean run length ``arl0`` between false alarms.

    ``ARL0 ~ C * exp(h)`` for large ``h``; ``C`` is measured at the threshold where the
    run length is about 5 000 samples (or ``arl0`` when smaller) and ``h`` solved for.
    """
    h_ref = math.log(min(arl0, 5_000.0))
    c = measured_arl(llr, h_ref, seed, kind) / math.exp(h_ref)
    return math.log(arl0 / c)


def siegmund_threshold(delta: float, arl0: float) -> float:
    """Siegmund's approximation of the same threshold, in LLR units, for N(0,1) -> N(delta,1)."""
    k = delta / 2.0
    lo, hi = 0.0, 200.0
    for _ in range(200):
        mid = (lo + hi) / 2.0
        y = 2.0 * k * (mid + 1.166)
        arl = (math.exp(y) - y - 1.0) / (2.0 * k * k)
        lo, hi = (mid, hi) if arl < arl0 else (lo, mid)
    return lo * delta


def oracle_delays(
    streams: list[tuple[int, np.ndarray]], llr: LLR, h: float
) -> tuple[list[int | None], int]:
    """Delays of the LLR CUSUM on the trial streams (restarted after a false alarm)."""
    onsets = np.array([o for o, _ in streams])
    n = max(len(x) for _, x in streams)
    values = np.zeros((len(streams), n))
    for row, (_, x) in enumerate(streams):
        values[row, : len(x)] = llr(x)
    s = np.zeros(len(streams))
    found = np.full(len(streams), -1)
    early = 0
    for t in range(n):
        s = np.maximum(s + values[:, t], 0.0)
        hit = s > h
        if hit.any():
            before = hit & (t < onsets)
            early += int(before.sum())
            first = hit & (t >= onsets) & (found < 0)
            found[first] = t - onsets[first]
            s[hit] = 0.0
            if (found >= 0).all():
                break
    return [int(d) if d >= 0 and d <= HORIZON else None for d in found.tolist()], early
