"""The whole detector bank on realistic simulated streams: quiet when clean, and every
injected fault fires the detector of its failure mode, on the faulted environment.

The streams come from ``monitor.simulate`` (three environments with their own reward
models, GRPO groups, a slow learning curve, heavy-tailed lengths, natural failures and
truncations) and are decoded with ``monitor.events.decode_event``, as the daemon does.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from detectors import BankConfig, DetectorBank
from monitor.events import InvalidEvent, RolloutEvent, decode_event
from monitor.simulate import Fault, SimulationConfig, generate

EVENTS = 60_000
START = 24_000

#: (fault kind, environment, detector id that must fire), three faults per stream.
FAULTED_STREAMS = (
    (
        ("zero_variance", "math-v2", "zero_variance_groups"),
        ("reward_hack", "tool-use", "reward_hacking"),
        ("truncation", "code-sandbox", "truncation_rate"),
    ),
    (
        ("length_collapse", "math-v2", "length_anomaly"),
        ("masked_failure", "code-sandbox", "masked_failure"),
        ("error_burst", "tool-use", "error_rate"),
    ),
    (
        ("reward_drop", "math-v2", "reward_shift"),
        ("reward_hack", "code-sandbox", "reward_hacking"),
        ("zero_variance", "tool-use", "zero_variance_groups"),
    ),
)


def events(config: SimulationConfig) -> Iterator[RolloutEvent]:
    for message in generate(config):
        try:
            yield decode_event(message)
        except InvalidEvent:
            continue


def alarms(config: SimulationConfig) -> tuple[tuple[int, str, str, str], ...]:
    """(index, env, detector, severity) of every alarm of a stream, one bank per segment."""
    banks: dict[tuple[str, str], DetectorBank] = {}
    config_ = BankConfig()
    found = []
    for i, event in enumerate(events(config)):
        key = (event.run_id, event.env_id)
        bank = banks.get(key)
        if bank is None:
            bank = banks[key] = DetectorBank(config_)
        for alarm in bank.update(event):
            found.append((i, event.env_id, alarm.detector, alarm.severity))
    return tuple(found)


@pytest.mark.parametrize("seed", [0, 1])
def test_a_clean_stream_raises_no_page_and_no_warning(seed: int) -> None:
    found = alarms(SimulationConfig(seed=seed, events=EVENTS))
    assert [a for a in found if a[3] != "info"] == []


@pytest.mark.parametrize("faults", FAULTED_STREAMS, ids=lambda f: "+".join(k for k, _, _ in f))
def test_each_fault_fires_its_detector_on_its_environment(
    faults: tuple[tuple[str, str, str], ...],
) -> None:
    config = SimulationConfig(
        seed=7, events=EVENTS, faults=tuple(Fault(kind, env, START) for kind, env, _ in faults)
    )
    found = alarms(config)
    assert [a for a in found if a[0] < START and a[3] != "info"] == []
    for kind, env, detector in faults:
        fired = [i for i, e, d, _ in found if e == env and d == detector]
        assert fired, (kind, env, detector, found)
        assert START <= fired[0] < START + 10_000, (kind, fired[0])
