"""Online detectors of RL environment failure modes, river-shaped.

Statistical building blocks take scalars (:class:`MeanShiftCUSUM`, :class:`BernoulliCUSUM`,
:class:`RateBound`, :class:`InvariantCounter`, :class:`BatchKS`; :class:`GroupAssembler`
assembles groups of episodes); failure-mode detectors take rollout events and raise
:class:`Alarm` objects; :class:`DetectorBank` runs the detectors of one segment. ``DETECTORS``
maps each detector id to its class.

``COMPILED`` says whether the modules run compiled with mypyc (``deploy/compile_detectors.py``,
run by ``make install``); without a build they run as Python, with the same results.
"""

from detectors.compiled import check as _check_build

#: Whether the detector modules are the mypyc build (checked against their sources first).
COMPILED = _check_build()

from detectors.alarm import SEVERITIES, Alarm, Severity
from detectors.bank import DEFAULT_ENABLED, DETECTORS, BankConfig, DetectorBank
from detectors.batch_ks import BatchKS
from detectors.bernoulli_cusum import BernoulliCUSUM
from detectors.component_imbalance import ComponentImbalance
from detectors.cusum import MeanShiftCUSUM, cusum_threshold
from detectors.error_rate import ErrorRate
from detectors.feature_drift import FeatureDrift
from detectors.group_invariant import GroupInvariant
from detectors.groups import Group, GroupAssembler
from detectors.invalid_reward import InvalidReward
from detectors.invariant import InvariantCounter
from detectors.length_anomaly import LengthAnomaly
from detectors.masked_failure import MaskedFailure
from detectors.policy_staleness import PolicyStaleness
from detectors.protocol import EVENT_FIELDS, EventLike, FailureModeDetector
from detectors.rate_bound import RateBound, wilson_lower_bound
from detectors.reward_distribution import RewardDistribution
from detectors.reward_hacking import RewardHacking
from detectors.reward_shift import RewardShift
from detectors.tool_failure_rate import ToolFailureRate
from detectors.truncation_rate import TruncationRate
from detectors.verifier_flakiness import VerifierFlakiness
from detectors.zero_variance_groups import ZeroVarianceGroups

__all__ = [
    "COMPILED",
    "DEFAULT_ENABLED",
    "DETECTORS",
    "EVENT_FIELDS",
    "SEVERITIES",
    "Alarm",
    "BankConfig",
    "BatchKS",
    "BernoulliCUSUM",
    "ComponentImbalance",
    "DetectorBank",
    "ErrorRate",
    "EventLike",
    "FailureModeDetector",
    "FeatureDrift",
    "Group",
    "GroupAssembler",
    "GroupInvariant",
    "InvalidReward",
    "InvariantCounter",
    "LengthAnomaly",
    "MaskedFailure",
    "MeanShiftCUSUM",
    "PolicyStaleness",
    "RateBound",
    "RewardDistribution",
    "RewardHacking",
    "RewardShift",
    "Severity",
    "ToolFailureRate",
    "TruncationRate",
    "VerifierFlakiness",
    "ZeroVarianceGroups",
    "cusum_threshold",
    "wilson_lower_bound",
]
