"""The alert rules: syntax and every rule's unit tests, with promtool (Debian's ``prometheus``)."""

from __future__ import annotations

import subprocess

import yaml

from .tools import DEPLOY, needs, tool

PROMTOOL = tool("promtool")
pytestmark = needs("promtool")
RULES = DEPLOY / "prometheus" / "alerts.yml"


def test_rules_are_valid() -> None:
    assert PROMTOOL is not None
    out = subprocess.run([PROMTOOL, "check", "rules", str(RULES)], capture_output=True, text=True, check=False)
    assert out.returncode == 0, out.stdout + out.stderr


def test_every_rule_has_promtool_tests_that_pass_and_a_runbook_entry() -> None:
    assert PROMTOOL is not None
    tests = DEPLOY / "prometheus" / "alerts.test.yml"
    out = subprocess.run(
        [PROMTOOL, "test", "rules", tests.name], cwd=tests.parent, capture_output=True, text=True, check=False
    )
    assert out.returncode == 0, out.stdout + out.stderr
    alerts = [r["alert"] for g in yaml.safe_load(RULES.read_text())["groups"] for r in g["rules"]]
    tested = {
        t["alertname"]
        for case in yaml.safe_load(tests.read_text())["tests"]
        for t in case["alert_rule_test"]
        if any(a.get("exp_labels") for a in t.get("exp_alerts", []))
    }
    assert sorted(set(alerts) - tested) == [], "alerts without a test that makes them fire"
    readme = (DEPLOY.parent / "README.md").read_text()
    assert [a for a in alerts if f"#### `{a}`" not in readme] == [], "alerts without a runbook entry in README.md"
