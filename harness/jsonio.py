"""JSON files on disk: every one carries ``"schema": SCHEMA`` and is written the same way.

``report.rundir`` names the files of a run directory; the stack writes its own ``stack.json``
through here too, so that one format holds everywhere.
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path
from typing import Any

from .errors import ConfigError

SCHEMA = 2     # 2: violations, cut plans and enums stored as structured records (1 is still read)


def known_fields(cls: type, d: dict[str, Any]) -> dict[str, Any]:
    """The keys of ``d`` that are fields of dataclass ``cls``: a record written by a newer or older
    xdh reads back with what this one knows."""
    names = {f.name for f in dataclasses.fields(cls)}
    return {k: v for k, v in d.items() if k in names}


def write_json(path: Path, data: dict[str, Any]) -> None:
    """Write ``data`` with the schema version first; atomically (a reader never sees half a file)."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps({"schema": SCHEMA, **data}, indent=2, default=str) + "\n")
    tmp.replace(path)


def read_json(path: Path) -> dict[str, Any]:
    """Read a file written by ``write_json`` (or by an xdh from before schemas: version 0)."""
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{path} does not exist", hint="pass a directory written by xdh") from None
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{path} is not readable JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path} does not hold a JSON object")
    if data.get("schema", 0) > SCHEMA:
        raise ConfigError(f"{path} has schema {data['schema']}, newer than this xdh ({SCHEMA})",
                          hint="use the xdh that wrote it")
    return data


def utc_stamp() -> str:
    """When a record was made, as every record says it: ``2026-12-06T07:27:49Z``."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def without_paths(v: Any) -> Any:
    """``v`` without any "path" key at any depth: files known by content (a hash), not by where
    they sit (a snapshot key, the versions two runners must share)."""
    if isinstance(v, list):
        return [without_paths(x) for x in v]
    return {k: without_paths(x) for k, x in v.items() if k != "path"} if isinstance(v, dict) else v


def differences(a: Any, b: Any, path: str = "") -> list[tuple[str, Any, Any]]:
    """Where two JSON values differ: (dotted path, a's value, b's value), leaves only; a key one
    side lacks is None there."""
    if isinstance(a, dict) and isinstance(b, dict):
        return [d for k in sorted(set(a) | set(b))
                for d in differences(a.get(k), b.get(k), f"{path}.{k}" if path else k)]
    return [] if a == b else [(path, a, b)]
