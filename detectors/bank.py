"""The detectors of one segment (run_id x env_id), sharing one false-alarm budget."""

from __future__ import annotations

import functools
import inspect
import math
import operator
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Final

from detectors._base import _Base, _FailureModeDetector, check_param
from detectors.alarm import Alarm
from detectors.component_imbalance import ComponentImbalance
from detectors.error_rate import ErrorRate
from detectors.feature_drift import FeatureDrift
from detectors.group_invariant import GroupInvariant
from detectors.invalid_reward import InvalidReward
from detectors.length_anomaly import LengthAnomaly
from detectors.masked_failure import MaskedFailure
from detectors.policy_staleness import PolicyStaleness
from detectors.protocol import EventLike
from detectors.reward_distribution import RewardDistribution
from detectors.reward_hacking import RewardHacking
from detectors.reward_shift import RewardShift
from detectors.tool_failure_rate import ToolFailureRate
from detectors.truncation_rate import TruncationRate
from detectors.verifier_flakiness import VerifierFlakiness
from detectors.zero_variance_groups import ZeroVarianceGroups

__all__ = ["DEFAULT_ENABLED", "DETECTORS", "BankConfig", "DetectorBank"]

#: Failure-mode detector classes by detector id (the ``detector`` label of alerts), in the
#: order of the failure-mode catalogue. ``silence`` is a Prometheus rule, not a detector.
DETECTORS: dict[str, type[_FailureModeDetector]] = {
    cls.detector_id: cls
    for cls in (
        ErrorRate,
        MaskedFailure,
        InvalidReward,
        RewardShift,
        RewardDistribution,
        LengthAnomaly,
        TruncationRate,
        ZeroVarianceGroups,
        GroupInvariant,
        RewardHacking,
        ComponentImbalance,
        PolicyStaleness,
        VerifierFlakiness,
        ToolFailureRate,
        FeatureDrift,
    )
}
DEFAULT_ENABLED: tuple[str, ...] = tuple(DETECTORS)

_NO_ALARMS: tuple[Alarm, ...] = ()
#: Fewer events than this go through :meth:`DetectorBank.update` one by one: setting up each
#: detector's pass of :meth:`DetectorBank.update_batch` costs about 0.4 µs, more than it
#: saves on one or two events (a segment's share of a micro-batch when there are many
#: segments). Timed on one warm bank (µs per event): per event 13.1; batches of 1: 17.4,
#: of 2: 14.9, of 5: 13.4, of 20: 11.7.
BATCH_FROM: Final = 4


@functools.cache
def _required_getters(enabled: tuple[str, ...]) -> tuple[Callable[[Any], Any] | None, ...]:
    """A getter of the field each detector of ``enabled`` requires, or None (by position)."""
    fields = [DETECTORS[i].requires for i in enabled]
    return tuple(None if f is None else operator.attrgetter(f) for f in fields)


@dataclass(frozen=True)
class BankConfig:
    """What a segment's :class:`DetectorBank` runs, and its false-alarm budget.

    Parameters
    ----------
    arl0
        False-alarm budget of the whole bank: expected events between false alarms of any of
        its detectors, per segment. It is shared family-wise (Bonferroni): each of the ``n``
        enabled detectors that has a budget gets ``arl0 * n``, so their false-alarm rates sum
        to at most ``1 / arl0``. Exact invariants (``masked_failure``, ``group_invariant``)
        spend no budget.
    enabled
        Detector ids to run, from :data:`DETECTORS`.
    overrides
        Constructor keyword arguments per detector id; an ``arl0`` given here replaces the
        detector's share of the budget.

    Examples
    --------
    >>> config = BankConfig(enabled=("error_rate", "reward_shift"),
    ...                     overrides={"error_rate": {"window": 1000}})
    >>> config.detector_arl0
    2000000.0
    >>> BankConfig(enabled=("error_rate", "nope"))  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: enabled must be detector ids from ('error_rate', ...) without repeats, got \
('error_rate', 'nope')
    """

    arl0: float = 1_000_000
    enabled: tuple[str, ...] = DEFAULT_ENABLED
    overrides: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        check_param(
            self.arl0 > 1 and math.isfinite(self.arl0), "arl0", "a finite number > 1", self.arl0
        )
        # None (an unset setting) means the default set.
        enabled = DEFAULT_ENABLED if self.enabled is None else tuple(self.enabled)
        check_param(
            all(i in DETECTORS for i in enabled) and len(set(enabled)) == len(enabled),
            "enabled",
            f"detector ids from {tuple(DETECTORS)} without repeats",
            enabled,
        )
        overrides = {key: dict(kwargs) for key, kwargs in self.overrides.items()}
        for key, kwargs in overrides.items():
            check_param(key in enabled, "overrides", f"keyed by enabled ids {enabled}", key)
            allowed = inspect.signature(DETECTORS[key]).parameters
            unknown = sorted(set(kwargs) - set(allowed))
            check_param(
                not unknown, f"overrides[{key!r}]", f"parameters of {tuple(allowed)}", unknown
            )
        object.__setattr__(self, "enabled", enabled)
        object.__setattr__(self, "overrides", overrides)
        self.build()  # bad override values fail here, not when the first event arrives

    def __getstate__(self) -> dict[str, Any]:
        return {"arl0": self.arl0, "enabled": self.enabled, "overrides": self.overrides}

    def __setstate__(self, state: dict[str, Any]) -> None:
        """The fields, as Python restores a dataclass instance (compiled, the class has no
        ``__dict__`` to update and refuses ``setattr``, being frozen)."""
        for name, value in state.items():
            object.__setattr__(self, name, value)

    @property
    def detector_arl0(self) -> float:
        """The budget each detector with a budget gets: ``arl0`` times their number."""
        n = sum(1 for i in self.enabled if DETECTORS[i].budgeted)
        return float(self.arl0 * max(n, 1))

    def build(self) -> dict[str, _FailureModeDetector]:
        """Fresh detectors, by id, in ``enabled`` order."""
        share = self.detector_arl0
        detectors: dict[str, _FailureModeDetector] = {}
        for detector_id in self.enabled:
            cls = DETECTORS[detector_id]
            kwargs: dict[str, Any] = {"arl0": share} if cls.budgeted else {}
            kwargs.update(self.overrides.get(detector_id, {}))
            try:
                detectors[detector_id] = cls(**kwargs)
            except TypeError as exc:  # a value of the wrong type (compiled: at the call)
                raise ValueError(f"{detector_id} parameters {kwargs}: {exc}") from None
        return detectors


class DetectorBank(_Base):
    """Every enabled failure-mode detector of one segment, updated together.

    ``update`` returns the alarms raised by that event, almost always none: then it returns
    a shared empty tuple, so the common path allocates nothing. The bank pickles (checkpoints)
    with the state of all its detectors.

    Parameters
    ----------
    config
        What to run and the budget; the defaults run all detectors at ``arl0 = 1e6``.

    Examples
    --------
    A segment whose verifier starts failing a third of the episodes at episode 2000:

    >>> import random
    >>> from types import SimpleNamespace
    >>> from detectors.bank import BankConfig, DetectorBank
    >>> from detectors.protocol import EVENT_FIELDS
    >>> rng = random.Random(1)
    >>> def episode(i):
    ...     failed = rng.random() < (0.3 if i >= 2000 else 0.01)
    ...     fields = dict.fromkeys(EVENT_FIELDS)  # every field unset, then the ones sent
    ...     fields.update(
    ...         ts=float(i), status="failed" if failed else "completed", phase="train",
    ...         error=SimpleNamespace(type="Timeout", where="verifier") if failed else None,
    ...         reward=None if failed else float(rng.random() < 0.5), stop_reason="stop",
    ...         completion_tokens=700 + rng.randrange(200), max_completion_tokens=4096)
    ...     return SimpleNamespace(**fields)
    >>> bank = DetectorBank(BankConfig())
    >>> for i in range(4000):
    ...     for alarm in bank.update(episode(i)):
    ...         print(i, alarm.detector, alarm.severity)
    2166 error_rate page
    >>> len(bank.detectors), bank.config.detector_arl0
    (15, 13000000.0)
    """

    __slots__ = ("_by_id", "_detectors", "config")

    def __init__(self, config: BankConfig | None = None) -> None:
        self.config = config if config is not None else BankConfig()
        self._reset()

    def _reset(self) -> None:
        self._by_id = self.config.build()
        self._detectors = tuple(self._by_id.values())

    def update(self, event: EventLike) -> tuple[Alarm, ...]:
        """Update every detector with one event; the alarms it raised, in ``enabled`` order."""
        alarms = _NO_ALARMS
        for detector in self._detectors:
            detector.update(event)
            alarm = detector._alarm
            if alarm is not None:
                alarms = (*alarms, alarm)
        return alarms

    def update_batch(
        self, events: Sequence[EventLike]
    ) -> tuple[list[tuple[int, Alarm]], dict[int, Exception]]:
        """Update every detector with ``events``, in order; same end state as :meth:`update`
        on each event in turn.

        The detectors of a bank share no state, so each one takes the whole sequence before
        the next starts: the loop over events runs over one detector's state at a time,
        instead of switching between 15 detectors per event. Returns the alarms as
        ``(position in events, alarm)`` in the order per-event updates raise them (by
        event, then in ``enabled`` order), and the events a detector failed on
        (``position -> exception``). As with :meth:`update`, an event a detector fails on
        is not shown to the detectors after it and its alarms are dropped. Fewer than
        :data:`BATCH_FROM` events (with many segments, a segment's share of a micro-batch)
        are updated one by one instead, with the same results.

        >>> from types import SimpleNamespace
        >>> from detectors.protocol import EVENT_FIELDS
        >>> events = [SimpleNamespace(**{**dict.fromkeys(EVENT_FIELDS), "ts": float(i),
        ...           "run_id": "r", "env_id": "e", "phase": "train", "stop_reason": "stop",
        ...           "status": "completed", "reward": 0.0 if i == 3 else 1.0,
        ...           "error": SimpleNamespace(type="E", where="verifier") if i == 3 else None})
        ...           for i in range(5)]
        >>> found, failed = DetectorBank().update_batch(events)
        >>> [(i, a.detector) for i, a in found], failed
        ([(3, 'masked_failure')], {})
        """
        if len(events) < BATCH_FROM:
            return self._update_each(events)
        # a list: compiled, its items are read without a generic call
        evs: list[EventLike] = events if isinstance(events, list) else list(events)
        found: list[tuple[int, int, Alarm]] = []
        failed: dict[int, Exception] = {}
        every = list(range(len(evs)))  # compiled, a list[int] is iterated natively
        getters = _required_getters(self.config.enabled)
        for order, (detector, required) in enumerate(zip(self._detectors, getters, strict=True)):
            if failed:
                every = [i for i in every if i not in failed]
            positions = every
            if required is not None:
                # Events without the field change nothing but the alarm, which the update
                # after them clears, or this does when the last event lacks the field.
                positions = [i for i in every if required(evs[i]) is not None]
                if len(positions) < len(every) and (not positions or positions[-1] != every[-1]):
                    detector._alarm = None
            for i in positions:
                try:
                    # Compiled, a call through the class's method table (no argument
                    # parsing); a bound method held in a local would be a generic call.
                    detector.update(evs[i])
                except Exception as exc:  # the caller counts and logs it
                    failed[i] = exc
                    continue
                alarm = detector._alarm
                if alarm is not None:
                    found.append((i, order, alarm))
        if failed:
            found = [f for f in found if f[0] not in failed]
        if len(found) > 1:
            found.sort(key=lambda f: (f[0], f[1]))
        return [(i, alarm) for i, _, alarm in found], failed

    def _update_each(
        self, events: Sequence[EventLike]
    ) -> tuple[list[tuple[int, Alarm]], dict[int, Exception]]:
        """:meth:`update_batch` for a few events: :meth:`update` on each in turn, which
        gives the same state, alarms and failures (a detector that fails on an event stops
        that event, as in the batch)."""
        found: list[tuple[int, Alarm]] = []
        failed: dict[int, Exception] = {}
        for i, event in enumerate(events):
            try:
                alarms = self.update(event)
            except Exception as exc:  # the caller counts and logs it
                failed[i] = exc
                continue
            for alarm in alarms:
                found.append((i, alarm))
        return found, failed

    @property
    def detectors(self) -> Mapping[str, _FailureModeDetector]:
        """The detectors by id (read-only view), e.g. to export statistic and threshold."""
        return MappingProxyType(self._by_id)
