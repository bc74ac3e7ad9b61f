"""Prometheus rules: promtool checks and unit tests, and the conventions every alert follows.

promtool comes with Debian's prometheus package (deploy/install.sh).
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
RULES_DIR = REPO / "deploy" / "prometheus" / "rules"
RULE_TESTS_DIR = RULES_DIR / "tests"
ALERTS_DOC = REPO / "docs" / "alerts.md"
SEVERITIES = {"page", "warning", "info"}


@pytest.fixture(scope="module")
def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        pytest.fail(
            "promtool not found on PATH: install Prometheus (deploy/install.sh, or "
            "apt-get install prometheus) to check and unit-test the rules"
        )
    return path


def run(argv: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, cwd=REPO, capture_output=True, text=True, check=False)


def rule_files() -> list[Path]:
    """The files Prometheus loads: deploy/prometheus/prometheus.yml.template globs rules/*.yml."""
    return sorted(RULES_DIR.glob("*.yml"))


def alert_blocks() -> dict[str, str]:
    """Alert name -> the YAML text of its rule, cut at the next rule or group."""
    text = (RULES_DIR / "alerts.yml").read_text(encoding="utf-8")
    starts = [(m.start(), m.group(1)) for m in re.finditer(r"^\s*- alert: (\S+)$", text, re.M)]
    blocks = {}
    for i, (start, name) in enumerate(starts):
        end = starts[i + 1][0] if i + 1 < len(starts) else len(text)
        block = text[start:end]
        group = re.search(r"^\s*- name: ", block, re.M)
        blocks[name] = block[: group.start()] if group else block
    return blocks


def unit_test_evals() -> list[tuple[str, bool]]:
    """``(alertname, expects an alert)`` for every ``alert_rule_test`` entry of the tests."""
    evals = []
    for path in sorted(RULE_TESTS_DIR.glob("*.yml")):
        text = path.read_text(encoding="utf-8")
        for chunk in re.split(r"^\s*- eval_time: ", text, flags=re.M)[1:]:
            name = re.search(r"^\s*alertname: (\S+)$", chunk, re.M)
            if name is None:
                continue
            quiet = re.search(r"^\s*exp_alerts: \[\]$", chunk, re.M) is not None
            evals.append((name.group(1), not quiet))
    return evals


def github_anchors(markdown: str) -> set[str]:
    """Anchors GitHub gives the headings of a Markdown file, plus explicit ``id``s."""
    anchors = set(re.findall(r'<a (?:id|name)="([^"]+)"', markdown))
    for heading in re.findall(r"^#+\s+(.+?)\s*$", markdown, re.M):
        slug = re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-")
        anchors.add(slug)
    return anchors


def test_rule_files_are_valid(promtool: str) -> None:
    files = rule_files()
    assert {p.name for p in files} >= {"alerts.yml", "recording.yml"}
    result = run([promtool, "check", "rules", *map(str, files)])
    assert result.returncode == 0, result.stdout + result.stderr


def test_rule_unit_tests_pass(promtool: str) -> None:
    tests = sorted(RULE_TESTS_DIR.glob("*_test.yml"))
    assert tests, f"no *_test.yml in {RULE_TESTS_DIR}"
    result = run([promtool, "test", "rules", *map(str, tests)])
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_alert_is_tested_firing_and_quiet() -> None:
    evals = unit_test_evals()
    for name in alert_blocks():
        assert (name, True) in evals, f"{name}: no promtool test where it fires"
        assert (name, False) in evals, f"{name}: no promtool test where it stays quiet"


def test_every_recording_rule_is_tested() -> None:
    recorded = re.findall(
        r"^\s*- record: (\S+)$", (RULES_DIR / "recording.yml").read_text("utf-8"), re.M
    )
    tested = (RULE_TESTS_DIR / "recording_test.yml").read_text(encoding="utf-8")
    for name in recorded:
        assert f"- expr: {name}\n" in tested, f"{name} has no promql_expr_test"


def test_every_alert_has_severity_and_annotations() -> None:
    blocks = alert_blocks()
    assert len(blocks) >= 6
    for name, block in blocks.items():
        severity = re.search(r"^\s+severity: (.+)$", block, re.M)
        assert severity is not None, f"{name} has no severity label"
        value = severity.group(1).strip().strip('"')
        assert value in SEVERITIES or value == "{{ $labels.severity }}", f"{name}: {value}"
        for annotation in ("summary", "description", "runbook_url"):
            assert re.search(rf"^\s+{annotation}: \S", block, re.M), f"{name}: no {annotation}"


def test_runbook_urls_point_at_documented_anchors() -> None:
    alerts_doc = ALERTS_DOC.read_text(encoding="utf-8")
    anchors = github_anchors(alerts_doc)
    detectors_doc = REPO / "docs" / "detectors.md"
    for name, block in alert_blocks().items():
        match = re.search(r'^\s+runbook_url: "?(.+?)"?$', block, re.M)
        assert match is not None, name
        path, _, anchor = match.group(1).partition("#")
        if path == "docs/alerts.md":
            assert anchor in anchors, f"{name}: no #{anchor} in docs/alerts.md"
        else:
            assert path == "docs/detectors.md", f"{name}: runbook {match.group(1)}"
            if "{{" not in anchor and detectors_doc.exists():
                detector_anchors = github_anchors(detectors_doc.read_text(encoding="utf-8"))
                assert anchor in detector_anchors, f"{name}: no #{anchor} in docs/detectors.md"


def test_alerts_doc_has_a_section_per_alert() -> None:
    headings = re.findall(r"^## (\S+)$", ALERTS_DOC.read_text(encoding="utf-8"), re.M)
    assert set(alert_blocks()) <= set(headings)


def test_unit_tests_are_not_loaded_as_rules() -> None:
    # prometheus.yml.template loads rules/*.yml: a test file there would break Prometheus.
    assert not [p for p in rule_files() if p.name.endswith("_test.yml")]
    template = (REPO / "deploy" / "prometheus" / "prometheus.yml.template").read_text("utf-8")
    assert "deploy/prometheus/rules/*.yml" in template


def test_stack_prometheus_config_loads_the_rules(promtool: str, tmp_path: Path) -> None:
    template = (REPO / "deploy" / "prometheus" / "prometheus.yml.template").read_text("utf-8")
    ports = iter(range(19000, 19100))
    rendered = re.sub(
        r"\$\{([A-Z][A-Z0-9_]*)\}",
        lambda m: str(REPO) if m.group(1) == "REPO_DIR" else str(next(ports)),
        template,
    )
    config = tmp_path / "prometheus.yml"
    config.write_text(rendered, encoding="utf-8")
    result = run([promtool, "check", "config", str(config)])
    assert result.returncode == 0, result.stdout + result.stderr
    for path in rule_files():
        assert f"Checking {path}\n" in result.stdout, f"{path} not loaded:\n{result.stdout}"
