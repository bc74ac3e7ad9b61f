"""``feature_drift``: task mix, prompt or latency distributions drift (per-batch tests)."""

from __future__ import annotations

import math
from array import array
from collections.abc import Mapping, Sequence
from types import SimpleNamespace
from typing import ClassVar

import numpy as np

from detectors._base import _FailureModeDetector, check_param
from detectors.alarm import Alarm, Severity
from detectors.batch_ks import BatchKS, compare_windows, ks_critical_value
from detectors.protocol import EventLike, TimingsLike

__all__ = ["NUMERIC_FIELDS", "TIMING_FIELDS", "FeatureDrift"]

_NAN = math.nan

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
#: Stands in for a missing ``timings`` object: every timing is missing.
_NO_TIMINGS: TimingsLike = SimpleNamespace(**dict.fromkeys((*TIMING_FIELDS, "score_timeout_s")))


class FeatureDrift(_FailureModeDetector):
    """Annotates a change of the distribution of a configured numeric field.

    Each watched field has a column in a ring of the last ``reference + window`` events
    (single precision, 4 bytes a value; a missing value is stored as NaN; the columns grow as
    events come); the per-event work is one write per field. Every
    ``every`` events, per field, the values of the newest ``window`` events are compared with
    those of the ``reference`` events before them by a two-sample Kolmogorov-Smirnov test
    (:func:`~detectors.batch_ks.compare_windows`, as in :class:`~detectors.batch_ks.BatchKS`:
    critical value from the budget, widened by the design effect, since the episodes of one
    group share a prompt). The critical value is at least ``min_distance``: windows of a few
    thousand episodes make a wander of a few percent of the quantiles significant, and a
    healthy run wanders that much (lengths, and with them the generation time, follow the
    policy). A field is tested when at least half of
    each window has a value. The reference slides, so a slow drift is absorbed and a change
    faster than the window span (a new task mix, mock data replaced by production data, a
    slower sandbox) is reported. After a detection the field's column is emptied, so the
    change is reported once and the field is tested again on post-change values only.

    Watched fields: ``fields`` (top-level names from :data:`NUMERIC_FIELDS`,
    ``timings.<name>`` with a name from :data:`TIMING_FIELDS`, or ``metrics.<key>``), and
    with ``metrics`` the keys of ``metrics`` in the order they are first seen, up to
    ``max_fields`` fields in all. The fields share the budget: a test of one field rejects
    a clean window with probability ``every / (max_fields * arl0)``.

    ``statistic`` is the largest ratio of a field's latest KS distance to its critical value
    and ``threshold`` is 1. ``active`` holds from a detection until a later test of that
    field does not reject.

    Parameters
    ----------
    fields
        Fields watched from the start.
    metrics
        Also watch the keys of ``metrics`` as they are first seen.
    max_fields
        Most fields watched.
    window
        Newest events whose values are compared with the reference.
    reference
        Events before the window that serve as reference.
    every
        Events between two tests.
    block
        Consecutive values per block of the design effect.
    min_distance
        Least KS distance reported as a drift, whatever the critical value.
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
    6143 info timings.score_s drifted (KS distance 0.48 > 0.15): median 1 -> 2.1,
    p90 2.1 -> 3.8
    """

    __slots__ = (
        "_active",
        "_columns",
        "_crit",
        "_d",
        "_deff",
        "_known_keys",
        "_left",
        "_length",
        "_metric_columns",
        "_names",
        "_plain",
        "_pos",
        "_size",
        "_x",
        "arl0",
        "block",
        "every",
        "fields",
        "max_fields",
        "metrics",
        "min_distance",
        "reference",
        "window",
    )

    detector_id: ClassVar[str] = "feature_drift"
    severity: ClassVar[Severity] = "info"
    fixed_threshold: ClassVar[bool] = True  # always 1

    def __init__(
        self,
        fields: Sequence[str] = ("prompt_tokens", "timings.generate_s", "timings.score_s"),
        metrics: bool = True,
        max_fields: int = 8,
        window: int = 1024,
        reference: int = 2048,
        every: int = 1024,
        block: int = 64,
        min_distance: float = 0.15,
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
        check_param(0.0 <= min_distance < 1.0, "min_distance", "a number in [0, 1)", min_distance)
        # the same checks as a BatchKS of these sizes
        BatchKS(window=window, reference=reference, every=every, block=block, arl0=arl0)
        self.fields = tuple(fields)
        self.metrics = metrics
        self.max_fields = max_fields
        self.window = window
        self.reference = reference
        self.every = every
        self.block = block
        self.min_distance = min_distance
        self.arl0 = arl0
        self._size = window + reference
        self._x = ks_critical_value(every / (arl0 * max_fields))
        self._reset()

    def _reset(self) -> None:
        self._names = [n for n in self.fields if not n.startswith("metrics.")]
        self._names += [n for n in self.fields if n.startswith("metrics.")]
        self._columns = [self._empty(0) for _ in self._names]
        self._length = 0
        plain = len(self._names) - sum(1 for n in self.fields if n.startswith("metrics."))
        # (attribute, whether it is one of ``timings``, column) of the plain fields, and
        # (key, column) of the metrics, in column order
        self._plain = [
            (name.rpartition(".")[2], name.startswith("timings."), column)
            for name, column in zip(self._names[:plain], self._columns[:plain], strict=True)
        ]
        self._metric_columns = [
            (name.partition(".")[2], column)
            for name, column in zip(self._names[plain:], self._columns[plain:], strict=True)
        ]
        self._known_keys = {key for key, _ in self._metric_columns}
        self._d = [0.0] * len(self._names)
        self._crit = [1.0] * len(self._names)
        self._deff = [0.0] * len(self._names)
        self._active = [False] * len(self._names)
        self._pos = 0
        self._left = self._size
        self._alarm = None

    @staticmethod
    def _empty(length: int) -> array[float]:
        return array("f", [_NAN]) * length

    def update(self, event: EventLike) -> None:
        if self._alarm is not None:
            self._alarm = None
        timings = event.timings
        if timings is None:
            timings = _NO_TIMINGS
        metrics = event.metrics
        pos = self._pos
        length = self._length
        if length < self._size:
            # The columns grow until the ring is full (inlined, not a helper: in a daemon
            # watching many segments, most of them are young and grow on most events).
            for attribute, in_timings, column in self._plain:
                value = getattr(timings if in_timings else event, attribute)
                column.append(_NAN if value is None else value)
            for key, column in self._metric_columns:
                value = None if metrics is None else metrics.get(key)
                column.append(_NAN if value is None else value)
            self._length = length + 1
        else:
            for attribute, in_timings, column in self._plain:
                value = getattr(timings if in_timings else event, attribute)
                column[pos] = _NAN if value is None else value
            for key, column in self._metric_columns:
                value = None if metrics is None else metrics.get(key)
                column[pos] = _NAN if value is None else value
        if metrics and self.metrics and not self._known_keys.issuperset(metrics):
            self._discover(metrics, pos)
        pos += 1
        self._pos = pos if pos < self._size else 0
        left = self._left - 1
        if left:
            self._left = left
            return
        self._left = self.every
        self._test_all()

    def _discover(self, metrics: Mapping[str, float], pos: int) -> None:
        """Watch the keys of ``metrics`` not seen before, while fields are left."""
        for key, value in metrics.items():
            if key in self._known_keys or len(self._columns) >= self.max_fields:
                continue
            self._known_keys.add(key)
            self._names.append(f"metrics.{key}")
            column = self._empty(self._length)  # the other columns already hold this event
            column[pos] = value
            self._columns.append(column)
            self._metric_columns.append((key, column))
            self._d.append(0.0)
            self._crit.append(1.0)
            self._deff.append(0.0)
            self._active.append(False)

    def _test_all(self) -> None:
        changed = []
        for i, column in enumerate(self._columns):
            windows = self._windows(column)
            if windows is None:
                continue
            reference, current, ordered = windows
            d, deff, self._deff[i] = compare_windows(
                reference, current, self.block, self._deff[i], ordered
            )
            n, m = len(reference), len(current)
            crit = max(self._x * math.sqrt(deff * (n + m) / (n * m)), self.min_distance)
            self._d[i] = d
            self._crit[i] = crit
            rejects = d > crit
            self._active[i] = rejects
            if rejects:
                changed.append((self._names[i], d, crit, reference, current))
                column[:] = self._empty(len(column))  # in place: the field lists share it
                self._deff[i] = 0.0
        if changed:
            self._raise(changed)

    def _windows(
        self, column: array[float]
    ) -> tuple[np.ndarray, np.ndarray, tuple[np.ndarray, np.ndarray]] | None:
        """The finite values of the reference and current windows and the two sorted (in
        double precision), or None when too few."""
        ring = np.frombuffer(column, dtype=np.float32)
        pos = self._pos
        values = np.concatenate((ring[pos:], ring[:pos]))
        reference = values[: self.reference]
        current = values[self.reference :]
        reference = reference[np.isfinite(reference)]
        current = current[np.isfinite(current)]
        if 2 * len(reference) < self.reference or 2 * len(current) < self.window:
            return None
        # Sorted in single precision, then widened: the same values in the same order (the
        # widening is exact and keeps the order; only zeros of either sign, which compare
        # equal, may come in another order) for about half the time of sorting doubles.
        ordered = (np.sort(reference).astype(np.float64), np.sort(current).astype(np.float64))
        return reference.astype(np.float64), current.astype(np.float64), ordered

    def _raise(self, changed: list[tuple[str, float, float, np.ndarray, np.ndarray]]) -> None:
        parts = []
        for name, d, crit, before, after in changed:
            q_before = np.quantile(before, (0.5, 0.9))
            q_after = np.quantile(after, (0.5, 0.9))
            parts.append(
                f"{name} drifted (KS distance {d:.2g} > {crit:.2g}): "
                f"median {q_before[0]:.2g} -> {q_after[0]:.2g}, "
                f"p90 {q_before[1]:.2g} -> {q_after[1]:.2g}"
            )
        self._alarm = Alarm(
            detector=self.detector_id,
            severity=self.severity,
            value=max(d / crit for _, d, crit, _, _ in changed),
            threshold=1.0,
            summary="; ".join(parts),
        )

    @property
    def watched(self) -> tuple[str, ...]:
        """The fields watched so far, in column order."""
        return tuple(self._names)

    @property
    def active(self) -> bool:
        return any(self._active)

    @property
    def statistic(self) -> float:
        """The largest KS distance over its critical value among the fields (0 without any).

        ``max`` over the fields in order, written as a loop (read for every segment on each
        scrape: no generator).
        """
        stat: float | None = None
        for d, c in zip(self._d, self._crit, strict=True):
            value = d / c
            if stat is None or value > stat:
                stat = value
        return 0.0 if stat is None else stat

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
