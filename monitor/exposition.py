"""The per-segment part of ``/metrics``, written as text directly.

With 1,000 segments the per-segment families hold about 46,000 samples; prometheus_client's
``generate_latest`` spends about 20 µs on each (label escaping and formatting per sample), a
second per scrape on this machine, and holds the GIL meanwhile, stalling consumption. Here
the lines of one family of one segment are one ``%``-template of bytes, shared by all
segments, filled with the values in one call (the segment's escaped label prefix then
replaces a placeholder); the text of each segment is kept between scrapes, and a segment that
received no event since it was last read reuses its text without calling a detector (many
environments of a run are idle at any time). A detector whose class declares its threshold
fixed (``fixed_threshold``) has it read once, when its segment is first seen; the unscored
count's text is kept until the count moves. The output is handed over as the pieces it is
kept in (:meth:`SegmentExposition.chunks`), never copied whole. It is the same exposition as
the collectors in ``monitor.metrics`` produce (a test parses both and compares the samples,
another compares the bytes with a plain line-by-line rendering); those collectors remain
the registry API (``get_sample_value``) and the reference.

Scrapes are served one at a time (a lock): two at once would update the same kept texts.

What a scrape reads, and why it is consistent enough
----------------------------------------------------
The render runs in the HTTP thread while the consumer thread keeps processing; there is no
lock. It reads each segment that changed once, in one pass over the segments: its
processed-event count (the change marker, ``Segment.events``), then its counters, a copy of
its reward and length windows (one ``memcpy`` each) and its detectors' statistics and the
thresholds that may move, back to back (some µs per segment). Quantiles are computed from
the copies after the pass, and the text is formatted from what was read: nothing live is
walked after the pass. Every value read is whole (the GIL makes each attribute read and
each window copy atomic), so a segment's lines show its state after some batch or, if the
consumer thread ran during those few µs, a mix of two successive batches; never a torn
number. Different segments may be read at different batches, as with any scrape of live
counters. The pass is Python code, so the consumer thread gets the GIL every switch
interval (5 ms) meanwhile; numpy sorts the quantile matrix with the GIL released.

A kept text must not keep stale values: the consumer counts a batch's events into the
segment (``record_batch``, which moves the marker) *before* it updates the detectors, so a
read between the two gets statistics older than its marker. Such a text is therefore reused
only while no batch has ended since it was read (it is as recent as the batch then in
progress); once the batch count (``PipelineCounters.batches``, moved when a batch ends,
after its detectors ran) is past the count read just after the marker, the segment is read
again, and from then on its text is reused until its marker moves. The consumer publishes
nothing for this: it costs it nothing.

The kept text is that of live segments only (the table is rebuilt on each scrape): about
the size of the per-segment output (4.5 MB at 1,000 segments). Label prefixes are stored
once per segment, the line layout once per set of detectors.
"""

from __future__ import annotations

import math
import operator
import threading
import time
from array import array
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np

from monitor.metrics import QUANTILES
from monitor.pipeline import Pipeline
from monitor.segments import STATUSES, Segment


def _escape(value: str) -> str:
    return value.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")


_SPECIAL = {"nan": "NaN", "inf": "+Inf", "-inf": "-Inf"}


def _num(value: float) -> str:
    """A sample value as Prometheus text (``repr`` of the float; NaN and infinities spelled
    as the format wants them).

    >>> [_num(v) for v in (0.25, 3, float("nan"), float("-inf"))]
    ['0.25', '3.0', 'NaN', '-Inf']
    """
    text = repr(float(value))
    return _SPECIAL.get(text, text)


#: Where a template holds the label prefix (see :class:`_Template`).
_PREFIX = b"\0"


class _Template:
    """A ``%``-template of exposition lines, each holding the label prefix, then a value.

    ``fast`` is bytes, with the values as ``%r`` conversions, for Python floats and ints (the
    ``repr`` of which is their ``str``, as the text format wants it); ``slow`` is text, with
    ``%s`` conversions, for the values already spelled out (:func:`_num`). In both the prefix
    is :data:`_PREFIX`, a NUL, which no line may hold otherwise. See :func:`_fill`.
    """

    __slots__ = ("fast", "slow")

    def __init__(self, lines: Iterable[str]) -> None:
        """``lines`` hold the prefix as ``@P@`` and end with the value, ``@V@``.

        >>> t = _Template(['m{@P@,q="0.5"} @V@', "m_count{@P@} @V@"])
        >>> (t.fast % (0.25, 4)).replace(_PREFIX, b'run="r"')
        b'm{run="r",q="0.5"} 0.25\\nm_count{run="r"} 4\\n'
        """
        out = []
        for line in lines:
            if not (line.count("@P@") == line.count("@V@") == 1 and line.endswith(" @V@")):
                raise ValueError(f"a template line holds the prefix, then the value: {line!r}")
            if "\0" in line:
                raise ValueError(f"a template line holds no NUL: {line!r}")
            out.append(line.replace("%", "%%").replace("@P@", "\0") + "\n")
        text = "".join(out)
        self.fast = text.replace("@V@", "%r").encode()
        self.slow = text.replace("@V@", "%s")


def _fill(template: _Template, prefix: bytes, values: Sequence[Any]) -> bytes:
    """``template`` with the label prefix (UTF-8) and the values (floats, or ints) as
    exposition text.

    A Python float formats as its ``repr``, which the text format takes as is; NaN and
    infinities need their own spelling, and numpy scalars their ``float``, so those take the
    slower path. One sum tells: it is a finite Python float unless a value is NaN, infinite,
    or not a Python number (or the sum overflows, which only costs the slower path). The
    values it lets through are the floats and ints detectors and segments hold, whose
    ``repr`` (``%r``) is their ``str``.
    ``%``-formatting bytes is faster than text, and needs no encoding after; the template is
    shared by all segments: the values are formatted in, then the prefix replaces each NUL
    (one ``replace``, which copies it in at C speed; the prefix is not scanned again, so it
    may hold anything).

    >>> t = _Template(["a{@P@} @V@", "b{@P@} @V@"])
    >>> _fill(t, b"x", [0.5, 1e-300]), _fill(t, b"x", [float("inf"), np.float32(0.1)])
    (b'a{x} 0.5\\nb{x} 1e-300\\n', b'a{x} +Inf\\nb{x} 0.10000000149011612\\n')
    """
    total = sum(values, 0.0)
    if type(total) is float and total - total == 0.0:  # finite (inf - inf, NaN: NaN)
        return (template.fast % tuple(values)).replace(_PREFIX, prefix)
    return (template.slow % tuple(map(_num, values))).encode().replace(_PREFIX, prefix)


def _summary_template(name: str) -> _Template:
    return _Template(
        [
            *[f'{name}{{@P@,quantile="{q}"}} @V@' for q in QUANTILES],
            f"{name}_count{{@P@}} @V@",
            f"{name}_sum{{@P@}} @V@",
        ]
    )


# The per-segment families, in output order: name, type, help.
_FAMILIES = (
    ("rollout_monitor_events_total", "counter", "Valid events processed, by episode status."),
    (
        "rollout_monitor_unscored_events_total",
        "counter",
        "Events whose reward is null (not scored).",
    ),
    (
        "rollout_monitor_last_event_timestamp_seconds",
        "gauge",
        "Event time (ts) of the newest event of the segment.",
    ),
    (
        "rollout_monitor_reward",
        "summary",
        "Reward of scored episodes; quantiles over the last 512.",
    ),
    (
        "rollout_monitor_completion_tokens",
        "summary",
        "Completion length in tokens; quantiles over the last 512.",
    ),
    ("rollout_monitor_detector_statistic", "gauge", "Current test statistic of the detector."),
    (
        "rollout_monitor_detector_threshold",
        "gauge",
        "Bound the detector statistic is compared against.",
    ),
)
_EVENTS, _UNSCORED, _LAST_TS, _REWARD, _LENGTH, _STATISTIC, _THRESHOLD = range(len(_FAMILIES))
_HEADERS = [f"# HELP {n} {h}\n# TYPE {n} {k}\n".encode() for n, k, h in _FAMILIES]

_EVENTS_T = _Template([f'rollout_monitor_events_total{{@P@,status="{s}"}} @V@' for s in STATUSES])
_UNSCORED_T = _Template(["rollout_monitor_unscored_events_total{@P@} @V@"])
_LAST_TS_T = _Template(["rollout_monitor_last_event_timestamp_seconds{@P@} @V@"])
_REWARD_T = _summary_template("rollout_monitor_reward")
_LENGTH_T = _summary_template("rollout_monitor_completion_tokens")
_NAN_QUANTILES = [math.nan] * len(QUANTILES)

_status_counts: Callable[[dict[str, int]], tuple[int, ...]] = operator.itemgetter(*STATUSES)
_statistic = operator.attrgetter("statistic")
_threshold = operator.attrgetter("threshold")


def _fixed_threshold(detector: object) -> bool:
    """Whether ``detector`` declares that its threshold never changes after construction."""
    return getattr(type(detector), "fixed_threshold", False) is True


class _DetectorTemplates:
    """The statistic and threshold templates of one list of detector ids (shared by every
    segment whose bank runs that list)."""

    __slots__ = ("statistic", "threshold")

    def __init__(self, ids: tuple[str, ...]) -> None:
        self.statistic = _Template(
            [f'rollout_monitor_detector_statistic{{@P@,detector="{d}"}} @V@' for d in ids]
        )
        self.threshold = _Template(
            [f'rollout_monitor_detector_threshold{{@P@,detector="{d}"}} @V@' for d in ids]
        )

    @staticmethod
    def of(ids: tuple[str, ...]) -> _DetectorTemplates:
        found = _DETECTOR_TEMPLATES.get(ids)
        if found is None:
            found = _DETECTOR_TEMPLATES[ids] = _DetectorTemplates(ids)
        return found


_DETECTOR_TEMPLATES: dict[tuple[str, ...], _DetectorTemplates] = {}


class _Entry:
    """One segment's rendered text per family, and what decides whether it can be reused.

    ``marker`` is the segment's event count when the text was read; ``horizon`` the batch
    count read just after it; ``settled`` is true once the text was read after the batch that
    moved the marker there had ended (see the module docstring).
    """

    __slots__ = (
        "bank",
        "blocks",
        "detectors",
        "horizon",
        "marker",
        "prefix",
        "settled",
        "templates",
        "thresholds",
        "unscored",
        "varying",
        "varying_at",
        "varying_thresholds",
    )

    def __init__(self, segment: Segment) -> None:
        self.prefix = f'run="{_escape(segment.run)}",env="{_escape(segment.env)}"'.encode()
        self.bank = segment.bank
        # Any: the render reads a statistic and a threshold, whatever the object (a compiled
        # build would otherwise check each one's class)
        items: list[tuple[str, Any]] = list(segment.bank.detectors.items())
        self.detectors = [detector for _, detector in items]
        self.templates = _DetectorTemplates.of(tuple(d for d, _ in items))
        self.marker = -1
        self.settled = False
        self.horizon = -1
        self.blocks: list[bytes] = [b""] * len(_FAMILIES)
        self.unscored: Any = None  # the count the unscored block shows (None: not read yet)
        # Thresholds: read here once; afterwards only those of the detectors whose class does
        # not declare ``fixed_threshold`` (see detectors._base._FailureModeDetector).
        self.thresholds = [*map(_threshold, self.detectors)]
        self.blocks[_THRESHOLD] = _fill(self.templates.threshold, self.prefix, self.thresholds)
        at = [i for i, d in enumerate(self.detectors) if not _fixed_threshold(d)]
        self.varying_at = at
        self.varying = [self.detectors[i] for i in at]
        self.varying_thresholds = [self.thresholds[i] for i in at]


class _Windows:
    """Copies of one summary's windows of the segments read afresh, laid end to end in one
    buffer of C doubles, and their :data:`QUANTILES` as ``np.quantile`` computes them (the
    reference collectors use it), with one numpy call per distinct window length instead of
    one per window: windows are full (512 values) but for new segments.

    Each window is copied by one C call (``array.tobytes``, a ``memcpy`` from a ring of C
    doubles; a list is converted in C): the consumer thread cannot run meanwhile. The copies
    are then joined into one buffer of the exact size, which the quantiles sort in place.
    (Growing one buffer window by window instead reallocates it about a hundred times on the
    way to 4 MB; once glibc's malloc has raised its mmap threshold past that size, each of
    those reallocations copies the whole buffer: 3 to 11 ms at 1,000 segments, against about
    1 ms for the copies and the join.)

    >>> windows = _Windows()
    >>> for w in (array("d", [3.0, 1.0, 2.0]), [], [4.0, 5.0, 6.0], array("f", [7.0])):
    ...     windows.add(w)
    >>> windows.quantiles()
    [[1.2, 2.0, 2.8], [nan, nan, nan], [4.2, 5.0, 5.8], [7.0, 7.0, 7.0]]
    """

    __slots__ = ("copies", "lengths")

    def __init__(self) -> None:
        self.copies: list[bytes] = []
        self.lengths: list[int] = []

    def add(self, window: Sequence[float]) -> None:
        # a ring of C doubles is copied as is; other arrays and lists are converted in C
        if type(window) is array and window.typecode == "d":
            copy = window.tobytes()
        else:
            copy = array("d", window).tobytes()
        self.copies.append(copy)
        self.lengths.append(len(copy) >> 3)

    def quantiles(self) -> list[list[float]]:
        """The quantiles of each window, in order (NaN for an empty one); the copies are
        dropped."""
        copies, lengths = self.copies, self.lengths
        self.copies, self.lengths = [], []
        out: list[list[float]] = [_NAN_QUANTILES] * len(lengths)
        buffer = bytearray().join(copies)  # writable: sorted in place
        del copies[:]
        if not buffer:
            return out
        flat = np.frombuffer(buffer, dtype=np.float64)
        first = lengths[0]
        if lengths.count(first) == len(lengths):  # the usual case: all windows are full
            return _quantiles(flat.reshape(len(lengths), first))
        starts = np.cumsum([0, *lengths[:-1]])
        by_length: dict[int, list[int]] = {}
        for i, n in enumerate(lengths):
            if n:
                by_length.setdefault(n, []).append(i)
        for n, rows in by_length.items():
            matrix = flat[starts[rows][:, None] + np.arange(n)]
            for i, row in zip(rows, _quantiles(matrix), strict=True):
                out[i] = row
        return out


def _quantiles(matrix: np.ndarray[Any, Any]) -> list[list[float]]:
    """The :data:`QUANTILES` of each row of ``matrix`` (scratch: it is sorted in place),
    equal to ``np.quantile(matrix, QUANTILES, axis=1).T`` to the last bit.

    ``np.quantile`` partitions each row around the 8 ranks it needs (and the last), which
    costs more than sorting the rows (numpy sorts float64 rows with SIMD); from the sorted
    rows its linear method is replayed as numpy computes it (:func:`_ranks`: the ranks
    either side of ``(n - 1) * q``, and the interpolation of ``numpy``'s ``_lerp``). A test
    pins the equality on random, tied, infinite and NaN values of every length up to 600.

    >>> _quantiles(np.array([[3.0, 1.0, 2.0, 4.0], [1.0, np.nan, 0.0, 0.0]]))
    [[1.3, 2.5, 3.7], [nan, nan, nan]]
    """
    _sort_rows(matrix)
    below, above, gamma = _ranks(matrix.shape[1])
    a = matrix[:, below]
    b = matrix[:, above]
    with np.errstate(invalid="ignore"):  # infinities: NaN, as numpy's (which warns)
        diff = b - a
        result = a + diff * gamma
        np.subtract(b, diff * (1 - gamma), out=result, where=gamma >= 0.5)
    nan_rows = np.isnan(matrix[:, -1])  # NaN sorts last; numpy's quantile is then NaN
    if nan_rows.any():
        result[nan_rows] = np.nan
    values: list[list[float]] = result.tolist()
    return values


#: Scales under which the values of a window may be float32 exactly (see :func:`_sort_rows`):
#: integers below 2**24 (token counts) as they are; decimals with at most four places below
#: about 1,677 (rewards often are) times 10,000.
_SCALES = (1.0, 1e4)
#: The bits of -0.0 as an int64.
_NEGATIVE_ZERO = np.float64(-0.0).view(np.int64)


def _sort_rows(matrix: np.ndarray[Any, Any]) -> None:
    """Sort each row of ``matrix`` in place: the same values as ``matrix.sort(axis=1)``.

    numpy sorts float32 rows with SIMD instructions, several times faster than float64 rows.
    A row whose every value ``v`` equals ``float64(float32(v * s)) / s`` for a scale ``s`` of
    :data:`_SCALES` is sorted as those float32: mapped back the same way they give each value
    exactly, in order (the map back is monotonic), so the sorted row is bit for bit the one
    float64 sorting gives. Other rows are sorted as float64, as are those holding a -0.0
    (among zeros of both signs, which one lands at a rank is up to the sort algorithm: those
    keep numpy's float64 sort). NaN is never equal, so a row with one is sorted as float64.

    >>> m = np.array([[3.0, 1.0, 2.5], [0.3, 0.1, 0.2], [1 / 3, 0.0, -1.0], [2.0, np.nan, 1.0]])
    >>> _sort_rows(m)
    >>> m.tolist()
    [[1.0, 2.5, 3.0], [0.1, 0.2, 0.3], [-1.0, 0.0, 0.3333333333333333], [1.0, 2.0, nan]]
    """
    negative_zero = (matrix.view(np.int64) == _NEGATIVE_ZERO).any(axis=1)
    left = np.flatnonzero(~negative_zero)  # the rows not sorted yet that may be float32
    whole = len(left) == len(matrix)  # no row sorted yet, none left out
    with np.errstate(over="ignore", invalid="ignore"):  # out of float32's range: not exact
        # the windows of one summary are alike: first the scales that suit the first row
        first = matrix[left[:1]]
        for scale in sorted(_SCALES, key=lambda s: not _float32_keys(first, s)[1].all()):
            if not len(left):
                break
            values = matrix if whole else matrix[left]
            keys, exact = _float32_keys(values, scale)
            if whole and exact.all():  # the usual case: every row, in place
                keys.sort(axis=1)
                matrix[...] = keys
                if scale != 1.0:
                    matrix /= scale
                return
            if not exact.any():
                continue
            keys = keys[exact]
            keys.sort(axis=1)
            back = keys.astype(np.float64)
            if scale != 1.0:
                back /= scale
            matrix[left[exact]] = back
            left = left[~exact]
            whole = False
    if whole:
        matrix.sort(axis=1)
        return
    rest = np.concatenate((np.flatnonzero(negative_zero), left))
    if len(rest):
        values = matrix[rest]
        values.sort(axis=1)
        matrix[rest] = values


def _float32_keys(
    values: np.ndarray[Any, Any], scale: float
) -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]]:
    """``float32(values * scale)``, and for each row whether it maps back exactly (see
    :func:`_sort_rows`; call it with over- and invalid-value warnings off)."""
    keys = (values if scale == 1.0 else values * scale).astype(np.float32)
    back = keys.astype(np.float64)
    if scale != 1.0:
        back /= scale
    exact: np.ndarray[Any, Any] = (back == values).all(axis=1)
    return keys, exact


_RANKS: dict[int, tuple[Any, Any, Any]] = {}


def _ranks(n: int) -> tuple[Any, Any, Any]:
    """For windows of ``n`` values: the ranks below and above each quantile's virtual index,
    and the interpolation weight, as ``np.quantile``'s linear method computes them."""
    found = _RANKS.get(n)
    if found is None:
        virtual = (n - 1) * np.asarray(QUANTILES, dtype=np.float64)
        below = np.floor(virtual)
        above = below + 1
        beyond = virtual >= n - 1
        below[beyond] = -1
        above[beyond] = -1
        found = _RANKS[n] = (
            below.astype(np.intp),
            above.astype(np.intp),
            virtual - below.astype(np.intp),
        )
    return found


class SegmentExposition:
    """Renders the segment, detector and alert families of a pipeline as exposition text."""

    def __init__(self, pipeline: Pipeline) -> None:
        self.pipeline = pipeline
        self._entries: dict[Segment, _Entry] = {}
        self._lock = threading.Lock()
        self.last_seconds = 0.0  # time the previous render took (exported as collect cost)
        self.last_rendered = 0  # segments read afresh by the previous render (the others reused)

    def render(self) -> bytes:
        """The exposition text, as one ``bytes``."""
        return b"".join(self.chunks())

    def chunks(self) -> list[bytes]:
        """The exposition text as the pieces it is kept in (a header, then one piece per
        segment, per family), to be written one after the other: the HTTP server gathers
        them into writes of some hundred KB, so no copy of the whole text is ever made."""
        with self._lock:  # concurrent scrapes would update the same kept texts
            return self._chunks()

    def _chunks(self) -> list[bytes]:
        started = time.perf_counter()
        counters = self.pipeline.counters
        batches = counters.batches
        old = self._entries
        entries: dict[Segment, _Entry] = {}
        fresh: list[tuple[_Entry, int, float, int, float]] = []
        rewards, lengths = _Windows(), _Windows()
        read, add_rewards, add_lengths, add_fresh = (
            self._read,
            rewards.add,
            lengths.add,
            fresh.append,
        )
        for segment in self.pipeline.segments.snapshot():
            entry = old.get(segment)
            if entry is None or entry.bank is not segment.bank:
                entry = _Entry(segment)
            entries[segment] = entry
            marker = segment.events  # read before the values: see the module docstring
            if marker == entry.marker:
                if entry.settled or batches <= entry.horizon:
                    continue  # no event since; or no batch ended since it was read
                entry.settled = True  # the batch that moved the marker has ended
            else:
                entry.marker = marker
                entry.settled = False
                entry.horizon = counters.batches  # read after the marker
            read(entry, segment)
            # The summaries: windows copied (the consumer keeps writing them), their
            # quantiles computed for all segments at once after this pass.
            add_rewards(segment.rewards)
            add_lengths(segment.lengths)
            add_fresh(
                (
                    entry,
                    segment.reward_count,
                    segment.reward_sum,
                    segment.length_count,
                    segment.length_sum,
                )
            )
        self._entries = entries
        self._summaries(fresh, rewards.quantiles(), lengths.quantiles())
        self.last_rendered = len(fresh)

        rows = [entry.blocks for entry in entries.values()]
        out: list[bytes] = []
        for family, header in enumerate(_HEADERS):
            out.append(header)
            out += map(operator.itemgetter(family), rows)
        out.append(self._alerts().encode())
        self.last_seconds = time.perf_counter() - started
        return out

    @staticmethod
    def _read(entry: _Entry, segment: Segment) -> None:
        """Read and render what of ``segment`` needs no quantile."""
        p = entry.prefix
        blocks = entry.blocks
        counts = _status_counts(segment.status_counts)
        unscored = segment.unscored
        last_ts = segment.last_ts
        statistics = [*map(_statistic, entry.detectors)]
        blocks[_EVENTS] = _fill(_EVENTS_T, p, counts)
        if unscored is not entry.unscored:  # rarely moves: its text is kept (same object)
            entry.unscored = unscored
            blocks[_UNSCORED] = (_UNSCORED_T.slow % unscored).encode().replace(_PREFIX, p)
        blocks[_LAST_TS] = _fill(_LAST_TS_T, p, (last_ts,))
        blocks[_STATISTIC] = _fill(entry.templates.statistic, p, statistics)
        varying = entry.varying
        if varying:
            now = [*map(_threshold, varying)]
            if now != entry.varying_thresholds:
                thresholds = entry.thresholds
                for i, value in zip(entry.varying_at, now, strict=True):
                    thresholds[i] = value
                entry.varying_thresholds = now
                blocks[_THRESHOLD] = _fill(entry.templates.threshold, p, thresholds)

    @staticmethod
    def _summaries(
        fresh: list[tuple[_Entry, int, float, int, float]],
        rewards: list[list[float]],
        lengths: list[list[float]],
    ) -> None:
        for (entry, reward_n, reward_sum, length_n, length_sum), reward_q, length_q in zip(
            fresh, rewards, lengths, strict=True
        ):
            p = entry.prefix
            blocks = entry.blocks
            blocks[_REWARD] = _fill(_REWARD_T, p, (*reward_q, reward_n, reward_sum))
            blocks[_LENGTH] = _fill(_LENGTH_T, p, (*length_q, length_n, length_sum))

    def _alerts(self) -> str:
        lines: list[str] = []
        tracker = self.pipeline.tracker
        name = "rollout_monitor_alarms_total"
        lines.append(f"# HELP {name} Alarms raised by detectors (one per detected change).")
        lines.append(f"# TYPE {name} counter")
        for (run, env, detector, severity), n in list(tracker.alarms_total.items()):
            labels = f'run="{_escape(run)}",env="{_escape(env)}"'
            lines.append(
                f'{name}{{{labels},detector="{detector}",severity="{severity}"}} {_num(n)}'
            )
        name = "rollout_monitor_alert_active"
        lines.append(f"# HELP {name} 1 while the alert of that detector is firing.")
        lines.append(f"# TYPE {name} gauge")
        for a in tracker.active():
            labels = f'run="{_escape(a.run)}",env="{_escape(a.env)}"'
            lines.append(f'{name}{{{labels},detector="{a.detector}",severity="{a.severity}"}} 1.0')
        lines.append("")
        return "\n".join(lines)
