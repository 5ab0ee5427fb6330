"""``ssmd verify PATH``: check every sealed segment against its manifest.

For each ``<feed>.manifest.json``: the file exists, its size and SHA-256 match, every line parses
as an archive line, and the line count, first/last ``ts`` and counts by type match. Segment files
the manifest does not list are problems too. Lists the day's recorded gaps. Exit 1 on any problem.
"""

from __future__ import annotations

import hashlib
import json
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import msgspec

from ..archive import compression_of, read_lines


def verify(path: Path) -> int:
    if not path.exists():
        print(f"ssmd verify: {path}: no such file or directory", file=sys.stderr)
        return 2
    manifests = sorted(path.glob("*.manifest.json")) + sorted(path.glob("*/*.manifest.json"))
    if not manifests:
        print(f"ssmd verify: {path}: no manifest found (is storage.rotation set?)", file=sys.stderr)
        return 1
    problems = 0
    for mpath in manifests:
        manifest = json.loads(mpath.read_text())
        feed = manifest.get("feed", mpath.name.removesuffix(".manifest.json"))
        listed = set()
        for entry in manifest.get("segments", []):
            listed.add(entry["name"])
            issues = _check(mpath.parent / entry["name"], entry)
            status = "ok" if not issues else "FAILED: " + "; ".join(issues)
            print(f"{mpath.parent.name}/{entry['name']}: {entry['lines']} lines, {entry['bytes']} bytes: {status}")
            problems += bool(issues)
        for p in sorted(mpath.parent.iterdir()):
            if p.name.startswith(f"{feed}-") and compression_of(p) is not None and p.name not in listed:
                print(f"{mpath.parent.name}/{p.name}: FAILED: not in the manifest")
                problems += 1
            if p.name.startswith(f".{feed}-") and p.name.endswith(".open"):
                print(f"{mpath.parent.name}/{p.name}: open (being written, or left by a crash: sealed at next start)")
        for gap in manifest.get("gaps", []):
            print(
                f"{mpath.parent.name}: gap at {gap['ts']} on {gap['shard']} sid {gap['sid']} ({gap['channel']}): "
                f"expected seq {gap['expected']}, got {gap['got']}"
            )
        if manifest.get("disconnects"):
            print(f"{mpath.parent.name}: {manifest['disconnects']} unplanned disconnect(s) (see {feed}.events.jsonl)")
    print(f"{problems} problem(s)")
    return 1 if problems else 0


def _check(path: Path, entry: dict[str, Any]) -> list[str]:
    if not path.exists():
        return ["file missing"]
    issues = []
    raw = path.read_bytes()
    if len(raw) != entry["bytes"]:
        issues.append(f"size {len(raw)} != {entry['bytes']}")
    if hashlib.sha256(raw).hexdigest() != entry["sha256"]:
        issues.append("SHA-256 mismatch")
    lines = 0
    first = last = None
    types: Counter[str] = Counter()
    try:
        for line in read_lines(path):
            obj = msgspec.json.decode(line)
            if not isinstance(obj, dict) or "ts" not in obj or "data" not in obj:
                issues.append(f"line {lines + 1} is not an archive line")
                break
            lines += 1
            first = first or obj["ts"]
            last = obj["ts"]
            data = obj["data"]
            if isinstance(data, dict) and isinstance(data.get("type"), str) and "enc" not in obj:
                types[data["type"]] += 1
    except msgspec.DecodeError as exc:
        issues.append(f"line {lines + 1} does not parse: {exc}")
    except Exception as exc:  # a corrupt compressed stream raises library-specific errors
        issues.append(f"cannot read: {exc}")
    if lines != entry["lines"]:
        issues.append(f"{lines} lines, manifest says {entry['lines']}")
    if (first, last) != (entry["first_ts"], entry["last_ts"]):
        issues.append("first/last ts differ from the manifest")
    if entry.get("types") and dict(types) != entry["types"]:  # (generic feeds record no types)
        issues.append("counts by type differ from the manifest")
    return issues
