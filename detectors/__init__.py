"""Online detectors of RL environment failure modes, river-shaped.

Statistical building blocks take scalars (:class:`MeanShiftCUSUM`, :class:`RateBound`,
:class:`InvariantCounter`); failure-mode detectors take rollout events and raise
:class:`Alarm` objects; :class:`DetectorBank` runs the detectors of one segment. ``DETECTORS``
maps each detector id to its class.
"""

from detectors.alarm import SEVERITIES, Alarm, Severity
from detectors.bank import DEFAULT_ENABLED, DETECTORS, BankConfig, DetectorBank
from detectors.cusum import MeanShiftCUSUM, cusum_threshold
from detectors.error_rate import ErrorRate
from detectors.invariant import InvariantCounter
from detectors.length_anomaly import LengthAnomaly
from detectors.masked_failure import MaskedFailure
from detectors.protocol import EventLike, FailureModeDetector
from detectors.rate_bound import RateBound, wilson_lower_bound
from detectors.reward_shift import RewardShift
from detectors.truncation_rate import TruncationRate

__all__ = [
    "DEFAULT_ENABLED",
    "DETECTORS",
    "SEVERITIES",
    "Alarm",
    "BankConfig",
    "DetectorBank",
    "ErrorRate",
    "EventLike",
    "FailureModeDetector",
    "InvariantCounter",
    "LengthAnomaly",
    "MaskedFailure",
    "MeanShiftCUSUM",
    "RateBound",
    "RewardShift",
    "Severity",
    "TruncationRate",
    "cusum_threshold",
    "wilson_lower_bound",
]
