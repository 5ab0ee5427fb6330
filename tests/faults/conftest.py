"""Fault tests leave nothing running behind them, whether they pass or fail."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import pytest

from .harness import RUNNING


@pytest.fixture(autouse=True)
def _no_recorder_left_behind() -> Iterator[None]:
    yield
    while RUNNING:
        proc = RUNNING.pop()
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
