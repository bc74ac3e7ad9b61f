"""``feature_drift``: task mix, prompt or latency distributions drift (per-batch tests)."""

from __future__ import annotations

from typing import ClassVar

import numpy as np

from detectors._base import _FailureModeDetector, check_param
from detectors.alarm import Alarm, Severity
from detectors.batch_ks import BatchKS
from detectors.protocol import EventLike

__all__ = ["NUMERIC_FIELDS", "TIMING_FIELDS", "FeatureDrift"]

#: Top-level numeric event fields that may be watched.
NUMERIC_FIELDS = (
    "prompt_tokens",
    "completion_tokens",
    "num_turns",
    "num_tool_calls",
    "num_tool_errors",
    "repetition",
)
#: Fields of ``timings`` that may be watched (as ``timings.<name>``).
TIMING_FIELDS = ("generate_s", "env_s", "score_s", "queue_s", "total_s")


class FeatureDrift(_FailureModeDetector):
    """Annotates a change of the distribution of a configured numeric field.

    Each watched field has its own :class:`~detectors.batch_ks.BatchKS`: every ``every``
    values of the field, the latest ``window`` values are compared with the ``reference``
    values before them by a two-sample Kolmogorov-Smirnov test (the heavy work runs once per
    batch, the per-event work is a ring-buffer write per field). The reference slides, so a
    slow drift is absorbed and a change faster than the window span (a new task mix, mock
    data replaced by production data, a slower sandbox) is reported. Group correlation (the
    episodes of one group share a prompt) is allowed for through the design effect.

    Watched fields: ``fields`` (top-level names from :data:`NUMERIC_FIELDS`,
    ``timings.<name>`` with a name from :data:`TIMING_FIELDS`, or ``metrics.<key>``), and
    with ``metrics`` the keys of ``metrics`` in the order they are first seen, up to
    ``max_fields`` fields in all. The fields share the budget (each gets
    ``max_fields * arl0``, in values of the field, which is conservative for fields that are
    not in every event).

    ``statistic`` is the largest ratio of a field's latest KS distance to its critical value
    and ``threshold`` is 1. ``active`` holds while a detected change has not been followed by
    a test that does not reject (see :class:`BatchKS`).

    Parameters
    ----------
    fields
        Fields watched from the start.
    metrics
        Also watch the keys of ``metrics`` as they are first seen.
    max_fields
        Most fields watched.
    window
        Newest values of a field compared with its reference.
    reference
        Values before the window that serve as reference.
    every
        Values of a field between two of its tests.
    block
        Consecutive values per block of the design effect.
    arl0
        False-alarm budget: expected events between false alarms of all fields together.

    Examples
    --------
    The scoring time doubles at episode 5000 (a slower sandbox):

    >>> import random
    >>> from types import SimpleNamespace
    >>> from detectors.feature_drift import FeatureDrift
    >>> rng = random.Random(17)
    >>> def episode(i):
    ...     timings = SimpleNamespace(generate_s=rng.lognormvariate(2.0, 0.4), score_s=(
    ...         rng.lognormvariate(0.0, 0.5) * (2.0 if i >= 5000 else 1.0)))
    ...     return SimpleNamespace(prompt_tokens=rng.randint(100, 400), timings=timings,
    ...                            metrics=None)
    >>> detector = FeatureDrift()
    >>> for i in range(8000):
    ...     detector.update(episode(i))
    ...     if detector.alarm:
    ...         print(i, detector.alarm.severity, detector.alarm.summary)
    ... # doctest: +NORMALIZE_WHITESPACE
    5631 info timings.score_s drifted (KS distance 0.46 > 0.15): median 1.1 -> 2.1,
    p90 2.2 -> 3.9
    """

    __slots__ = (
        "_metric_tests",
        "_tests",
        "arl0",
        "block",
        "every",
        "fields",
        "max_fields",
        "metrics",
        "reference",
        "window",
    )

    detector_id: ClassVar[str] = "feature_drift"
    severity: ClassVar[Severity] = "info"

    def __init__(
        self,
        fields: tuple[str, ...] = ("prompt_tokens", "timings.generate_s", "timings.score_s"),
        metrics: bool = True,
        max_fields: int = 8,
        window: int = 512,
        reference: int = 1024,
        every: int = 512,
        block: int = 32,
        arl0: float = 1_000_000,
    ) -> None:
        check_param(
            isinstance(max_fields, int) and max_fields >= 1, "max_fields", "an int >= 1", max_fields
        )
        check_param(
            isinstance(fields, tuple)
            and len(set(fields)) == len(fields) <= max_fields
            and all(_known(f) for f in fields),
            "fields",
            f"distinct names from {NUMERIC_FIELDS}, timings.<{'|'.join(TIMING_FIELDS)}> or "
            f"metrics.<key>, at most max_fields ({max_fields})",
            fields,
        )
        self.fields = fields
        self.metrics = metrics
        self.max_fields = max_fields
        self.window = window
        self.reference = reference
        self.every = every
        self.block = block
        self.arl0 = arl0
        self._test()  # checks window, reference, every, block and arl0 now
        self._reset()

    def _test(self) -> BatchKS:
        return BatchKS(
            window=self.window,
            reference=self.reference,
            every=self.every,
            block=self.block,
            arl0=self.arl0 * self.max_fields,
        )

    def _reset(self) -> None:
        # (field name, attribute, whether it is one of ``timings``, test), in ``fields`` order
        self._tests: list[tuple[str, str, bool, BatchKS]] = [
            (name, name.rpartition(".")[2], name.startswith("timings."), self._test())
            for name in self.fields
            if not name.startswith("metrics.")
        ]
        self._metric_tests: dict[str, BatchKS] = {
            name.partition(".")[2]: self._test()
            for name in self.fields
            if name.startswith("metrics.")
        }
        self._alarm = None

    def update(self, event: EventLike) -> None:
        if self._alarm is not None:
            self._alarm = None
        changed: list[tuple[str, BatchKS]] = []
        timings = event.timings
        for name, attribute, in_timings, test in self._tests:
            source = timings if in_timings else event
            if source is None:
                continue
            value = getattr(source, attribute)
            if value is None:
                continue
            test.update(value)
            if test._drift:  # the slot, not the property: this is the per-event path
                changed.append((name, test))
        metrics = event.metrics
        if metrics:
            tests = self._metric_tests
            for key, value in metrics.items():
                known = tests.get(key)
                if known is None:
                    if not self.metrics or len(self._tests) + len(tests) >= self.max_fields:
                        continue
                    known = tests[key] = self._test()
                known.update(value)
                if known._drift:
                    changed.append((f"metrics.{key}", known))
        if changed:
            self._raise(changed)

    def _raise(self, changed: list[tuple[str, BatchKS]]) -> None:
        parts = []
        for name, test in changed:
            before, after = test.windows()
            q_before = np.quantile(before, (0.5, 0.9))
            q_after = np.quantile(after, (0.5, 0.9))
            parts.append(
                f"{name} drifted (KS distance {test.statistic:.2g} > {test.threshold:.2g}): "
                f"median {q_before[0]:.2g} -> {q_after[0]:.2g}, "
                f"p90 {q_before[1]:.2g} -> {q_after[1]:.2g}"
            )
        self._alarm = Alarm(
            detector=self.detector_id,
            severity=self.severity,
            value=max(test.statistic / test.threshold for _, test in changed),
            threshold=1.0,
            summary="; ".join(parts),
        )

    def _all_tests(self) -> list[BatchKS]:
        return [test for *_, test in self._tests] + list(self._metric_tests.values())

    @property
    def watched(self) -> tuple[str, ...]:
        """The fields watched so far."""
        return tuple(name for name, *_ in self._tests) + tuple(
            f"metrics.{key}" for key in self._metric_tests
        )

    @property
    def active(self) -> bool:
        return any(test.active for test in self._all_tests())

    @property
    def statistic(self) -> float:
        return max((t.statistic / t.threshold for t in self._all_tests()), default=0.0)

    @property
    def threshold(self) -> float:
        """1: the statistic is a KS distance over its critical value."""
        return 1.0


def _known(name: object) -> bool:
    if not isinstance(name, str):
        return False
    head, _, tail = name.partition(".")
    if not tail:
        return head in NUMERIC_FIELDS
    if head == "timings":
        return tail in TIMING_FIELDS
    return head == "metrics"
