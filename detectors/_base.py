"""Shared parts of the detectors: parameter checks, repr/clone, the failure-mode base class."""

from __future__ import annotations

import inspect
from typing import TYPE_CHECKING, Any, ClassVar

from detectors.alarm import Alarm, Severity
from detectors.protocol import EventLike

if TYPE_CHECKING:
    from detectors.rate_bound import RateBound


def check_param(ok: bool, name: str, expected: str, value: object) -> None:
    """Raise ``ValueError`` naming the parameter and its valid values unless ``ok``."""
    if not ok:
        raise ValueError(f"{name} must be {expected}, got {value!r}")


def percent(share: float) -> str:
    """A share as a percentage for alarm summaries: one decimal below 10%.

    >>> percent(0.052), percent(0.31)
    ('5.2%', '31%')
    """
    return f"{share:.1%}" if share < 0.1 else f"{share:.0%}"


def state_names(cls: type) -> list[str]:
    """The instance attributes of ``cls``: its ``__slots__`` and those of its bases, or, for a
    class compiled with mypyc (which keeps no ``__slots__``), the fields it lists in
    ``__mypyc_attrs__`` (inherited ones included)."""
    compiled: tuple[str, ...] | None = getattr(cls, "__mypyc_attrs__", None)
    if compiled is not None:
        return list(compiled)
    return [name for klass in cls.__mro__ for name in getattr(klass, "__slots__", ())]


#: Per class, its instance attributes in the order their values are pickled (sorted by name:
#: the same in the compiled and the pure-Python build).
_PICKLED_NAMES: dict[type, tuple[str, ...]] = {}


def _pickled_names(cls: type) -> tuple[str, ...]:
    names = _PICKLED_NAMES.get(cls)
    if names is None:
        names = _PICKLED_NAMES[cls] = tuple(sorted(state_names(cls)))
    return names


class Pickled:
    """Pickles its attributes' values, as a list in the order of their sorted names, whether
    the class runs compiled or not.

    A checkpoint written by the pure-Python detectors therefore loads into the compiled ones
    and back (mypyc's own state is a plain dict, which Python's default restore of a slotted
    object refuses). The names are not written: a checkpoint holds many thousands of these
    objects, and writing each one's names took a third of the time (the checkpoint's format
    version changes whenever the attributes do). An object with an attribute not set is
    pickled as Python pickles a slotted class, ``(None, {attribute: value})``; that layout,
    which older checkpoints hold, is read too. Compiled, unpickling calls ``__init__()``
    before restoring the state (a mypyc class is created through its constructor), so every
    subclass's constructor can be called without arguments.
    """

    __slots__ = ()

    def __getstate__(self) -> list[Any] | tuple[None, dict[str, Any]]:
        names = _pickled_names(type(self))
        try:
            return [getattr(self, name) for name in names]
        except AttributeError:
            return None, {name: getattr(self, name) for name in names if hasattr(self, name)}

    def __setstate__(self, state: list[Any] | tuple[None, dict[str, Any]] | dict[str, Any]) -> None:
        if isinstance(state, list):
            for name, value in zip(_pickled_names(type(self)), state, strict=True):
                setattr(self, name, value)
            return
        for name, value in (state[1] if isinstance(state, tuple) else state).items():
            setattr(self, name, value)


class _Base(Pickled):
    """Constructor arguments are stored under their own names; ``repr`` and ``clone`` use them."""

    __slots__ = ()

    def _get_params(self) -> dict[str, Any]:
        names = inspect.signature(type(self)).parameters
        return {name: getattr(self, name) for name in names}

    def clone(self) -> Any:
        """A new instance with the same parameters and fresh state."""
        return type(self)(**self._get_params())

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self._get_params().items())
        return f"{type(self).__name__}({args})"


class _FailureModeDetector(_Base):
    """A detector of one failure mode: events in, at most one :class:`Alarm` per update.

    Subclasses set ``detector_id`` and ``severity`` (the default severity of their alarms)
    and implement ``update`` and the read-only properties ``active``, ``statistic`` and
    ``threshold`` (see :class:`detectors.protocol.FailureModeDetector`). ``update`` clears
    ``_alarm`` first, so that ``alarm`` belongs to the update that raised it.
    ``budgeted`` says whether the constructor takes a false-alarm budget ``arl0`` (the bank
    shares its budget among those detectors only). ``requires`` names an event field without
    which ``update`` does nothing but clear ``_alarm``: the bank then skips the update for
    events where it is ``None`` (:meth:`detectors.bank.DetectorBank.update_batch`).
    ``fixed_threshold`` says that ``threshold`` is fixed at construction: no update (nor a
    reset after a detection) ever changes it. The exporter of ``/metrics`` then reads it once
    per detector instead of on every scrape (``monitor.exposition``); a detector whose
    threshold may move (a critical value re-estimated from the data, as ``batch_ks``'s) keeps
    the default ``False``, and a test feeds each class that sets it a long stream and checks
    that its threshold stays equal.
    """

    __slots__ = ("_alarm",)

    detector_id: ClassVar[str]
    severity: ClassVar[Severity]
    budgeted: ClassVar[bool] = True
    requires: ClassVar[str | None] = None
    fixed_threshold: ClassVar[bool] = False

    _alarm: Alarm | None

    def update(self, event: EventLike) -> None:
        raise NotImplementedError

    @property
    def alarm(self) -> Alarm | None:
        """The alarm raised by the latest update, else ``None``."""
        return self._alarm

    @property
    def active(self) -> bool:
        """Whether the condition behind the latest alarm still holds (used to resolve alerts)."""
        raise NotImplementedError

    @property
    def statistic(self) -> float:
        """The current test statistic."""
        raise NotImplementedError

    @property
    def threshold(self) -> float:
        """The bound the statistic is compared against."""
        raise NotImplementedError


class _RateDetector(_FailureModeDetector):
    """A failure-mode detector decided by one :class:`~detectors.rate_bound.RateBound`.

    Subclasses set ``_rate`` and ``_threshold``; the exported statistic is the rate test's
    lower bound, and the condition holds while that bound is above the threshold.
    """

    __slots__ = ()

    _rate: RateBound
    _threshold: float

    @property
    def rate(self) -> RateBound:
        """The underlying rate test."""
        return self._rate

    @property
    def threshold(self) -> float:
        """Share above which the lower bound alarms (the constructor argument)."""
        return self._threshold

    @property
    def active(self) -> bool:
        return self._rate.active

    @property
    def statistic(self) -> float:
        return self._rate.statistic
