"""``ssmd validate --config-dir DIR [--env NAME]``: check configuration without connecting."""

from __future__ import annotations

import sys
from pathlib import Path

from ..config import load
from ..errors import ConfigError


def validate(config_dir: Path, env: str | None) -> int:
    names = [env] if env else sorted(p.stem for p in (config_dir / "environments").glob("*.yaml"))
    if not names:
        print(f"ssmd validate: {config_dir}/environments: no environment files", file=sys.stderr)
        return 2
    failed = 0
    for name in names:
        try:
            cfg = load(config_dir, name)
        except ConfigError as exc:
            failed += 1
            for problem in exc.problems:
                print(f"config error: {problem}", file=sys.stderr)
            continue
        version = cfg.feed.active_version()
        print(
            f"ok: {name} → feed {cfg.feed.name} ({cfg.feed.connector_kind}, {version.endpoint}), "
            f"archive in {cfg.environment.storage.path}"
        )
    return 2 if failed else 0
