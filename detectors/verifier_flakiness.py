"""``verifier_flakiness``: the same completion of the same task scored differently."""

from __future__ import annotations

import math
from collections import OrderedDict
from typing import Any, ClassVar

from detectors._base import _RateDetector, check_param, percent
from detectors.alarm import Alarm, Severity
from detectors.protocol import EventLike
from detectors.rate_bound import RateBound

__all__ = ["VerifierFlakiness"]

#: Hashes of str are salted per process: a checkpoint restored elsewhere drops its memory.
_SALT = hash("verifier_flakiness")


class VerifierFlakiness(_RateDetector):
    """Warns when re-scored completions get another score too often (a non-deterministic judge).

    A bounded LRU map (``OrderedDict``, at most ``capacity`` entries) remembers the latest
    reward of each ``(task_id, completion_hash)`` of scored training episodes; episodes
    without both are skipped. When a pair comes again (the same answer to the same task,
    e.g. twice in one group, or re-scored later), it is a *re-scored pair*, and a *mismatch*
    when the rewards differ by more than ``tolerance``. The share of mismatches over the last
    ``window`` re-scored pairs is tested by :class:`~detectors.rate_bound.RateBound`: the
    alarm is raised when its Wilson lower bound rises above ``threshold``. A deterministic
    verifier never mismatches.

    Keys are 64-bit hashes of the pair, so an entry costs about 150 bytes (about 0.6 MB at the
    default capacity). Python salts string hashes per process: when a pickled detector is
    restored in another process, the map starts empty.

    Parameters
    ----------
    capacity
        Most pairs remembered (least recently seen go first).
    tolerance
        Largest reward difference that still counts as the same score.
    threshold
        Share of mismatching re-scored pairs that must be exceeded with confidence.
    window
        Re-scored pairs the share is computed over.
    min_samples
        Re-scored pairs needed before the first test.
    arl0
        False-alarm budget (confidence of the bound), see :class:`RateBound`.

    Examples
    --------
    Each task is answered four times and half of the answers repeat; from episode 4000 on
    the judge flips a coin on a quarter of the answers:

    >>> import random
    >>> from types import SimpleNamespace
    >>> from detectors.verifier_flakiness import VerifierFlakiness
    >>> rng = random.Random(15)
    >>> def episode(i):
    ...     answer = rng.randrange(2)
    ...     reward = float(answer == 0)
    ...     if i >= 4000 and rng.random() < 0.25:
    ...         reward = float(rng.random() < 0.5)
    ...     return SimpleNamespace(task_id=f"t{i // 4}", completion_hash=f"h{answer}",
    ...                            reward=reward, phase="train")
    >>> detector = VerifierFlakiness()
    >>> for i in range(8000):
    ...     detector.update(episode(i))
    ...     if detector.alarm:
    ...         print(i, detector.alarm.summary)
    ... # doctest: +NORMALIZE_WHITESPACE
    4219 re-scored completions got another score in 12% of the last 200 pairs (lower bound
    5.1%); largest difference 1
    """

    __slots__ = (
        "_largest",
        "_rate",
        "_scores",
        "_threshold",
        "arl0",
        "capacity",
        "min_samples",
        "tolerance",
        "window",
    )

    detector_id: ClassVar[str] = "verifier_flakiness"
    requires: ClassVar[str | None] = "completion_hash"  # update returns at once without it
    severity: ClassVar[Severity] = "warning"
    fixed_threshold: ClassVar[bool] = True  # the constructor argument

    def __init__(
        self,
        capacity: int = 4096,
        tolerance: float = 1e-6,
        threshold: float = 0.05,
        window: int = 200,
        min_samples: int = 20,
        arl0: float = 1_000_000,
    ) -> None:
        check_param(
            isinstance(capacity, int) and capacity >= 1, "capacity", "an int >= 1", capacity
        )
        check_param(
            tolerance >= 0 and math.isfinite(tolerance), "tolerance", "a number >= 0", tolerance
        )
        self.capacity = capacity
        self.tolerance = tolerance
        self._threshold = threshold
        self.window = window
        self.min_samples = min_samples
        self.arl0 = arl0
        self._reset()

    def _reset(self) -> None:
        self._rate = RateBound(
            threshold=self.threshold,
            window=self.window,
            min_samples=self.min_samples,
            arl0=self.arl0,
        )
        self._scores: OrderedDict[int, float] = OrderedDict()
        self._largest = 0.0
        self._alarm = None

    def update(self, event: EventLike) -> None:
        if self._alarm is not None:
            self._alarm = None
        reward = event.reward
        completion = event.completion_hash
        if reward is None or completion is None or event.phase == "eval":
            return
        task = event.task_id
        if task is None:
            return
        key = hash((task, completion))
        scores = self._scores
        before = scores.get(key)
        scores[key] = reward
        if before is None:
            if len(scores) > self.capacity:
                scores.popitem(last=False)
            return
        scores.move_to_end(key)
        difference = abs(reward - before)
        mismatch = difference > self.tolerance
        if mismatch and difference > self._largest:
            self._largest = difference
        rate = self._rate
        rate.update(mismatch)
        if rate._drift:  # the slot, not the property: this is the per-event path
            self._alarm = Alarm(
                detector=self.detector_id,
                severity=self.severity,
                value=rate.statistic,
                threshold=self.threshold,
                summary=(
                    f"re-scored completions got another score in {percent(rate.rate)} of the "
                    f"last {rate.n} pairs (lower bound {percent(rate.statistic)}); largest "
                    f"difference {self._largest:.3g}"
                ),
                direction="up",
            )

    def __getstate__(self) -> list[Any] | tuple[None, dict[str, Any]]:
        state = super().__getstate__()
        if isinstance(state, list):
            return [*state, _SALT]
        state[1]["_salt"] = _SALT
        return state

    def __setstate__(self, state: list[Any] | tuple[None, dict[str, Any]] | dict[str, Any]) -> None:
        if isinstance(state, list):
            salt = state[-1]
            super().__setstate__(state[:-1])
        else:
            slots = dict(state[1] if isinstance(state, tuple) else state)
            salt = slots.pop("_salt", None)
            super().__setstate__(slots)
        if salt != _SALT:  # restored in another process: the keys mean nothing here
            self._scores = OrderedDict()

    @property
    def rate(self) -> RateBound:
        """The mismatch share over the latest re-scored pairs."""
        return self._rate

    @property
    def remembered(self) -> int:
        """Pairs in the map."""
        return len(self._scores)
