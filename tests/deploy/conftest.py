"""The deployment tests' fixtures."""

from __future__ import annotations

import pytest

from .tools import PROMETHEUS_HOW, missing, tool


@pytest.fixture
def _deploy_tool_required() -> None:
    """Used (by :func:`tools.needs`) only when a required tool is missing: fail, naming it."""
    absent = [name for name in ("promtool", "prometheus") if tool(name) is None]
    pytest.fail("; ".join(missing(n, PROMETHEUS_HOW) for n in absent) + ", and SSMD_REQUIRE_DEPLOY_TOOLS=1 requires it")
