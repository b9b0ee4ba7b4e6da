"""Workload and fault manifests: TOML files that bring your own workload program or fault to a
campaign, read into the same ``Workload`` and ``Fault`` values as the built-in ones.

The only I/O in the catalog: reading a manifest and checking that its program exists. Every
mistake is a ConfigError naming the manifest, the key and the fix. See docs/workloads.md.
"""

from __future__ import annotations

import hashlib
import re
import tomllib
from pathlib import Path
from typing import Any

from ..errors import ConfigError

SCHEMA = 1
RESERVED = {"xdh-workload", "xdh-replay", "xdh-sync-probe"}     # guests/: installed in every domU image
NAME = re.compile(r"^[a-z0-9][a-z0-9-]{0,39}$")
PACKAGE = re.compile(r"^[a-z0-9][a-z0-9+.-]+$")


def is_manifest(name: str) -> bool:
    """A workload or fault given as a file rather than a built-in name."""
    return name.endswith(".toml") or "/" in name


def read(path_text: str, kind: str, known: set[str]) -> tuple[Path, dict[str, Any]]:
    """The manifest's absolute path and its table, checked for its schema and unknown keys."""
    path = Path(path_text).expanduser().resolve()
    hint = f"pass the path of a {kind} manifest (see docs/workloads.md)"
    try:
        data = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{kind} manifest {path_text} not found", hint=hint) from None
    except IsADirectoryError:
        raise ConfigError(f"{kind} manifest {path_text} is a directory", hint=hint) from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{kind} manifest {path_text} is not valid TOML: {exc}", hint="fix the file") from None
    where = f"{kind} manifest {path}"
    if data.get("schema") != SCHEMA:
        raise ConfigError(f"{where}: schema {data.get('schema')!r} is not supported", hint=f"set schema = {SCHEMA}")
    unknown = sorted(set(data) - known - {"schema"})
    if unknown:
        raise ConfigError(f"{where}: unknown keys {unknown}", hint="allowed: " + ", ".join(sorted(known)))
    name = data.get("name")
    if not isinstance(name, str) or not NAME.match(name):
        raise ConfigError(f"{where}: name {name!r} is not a short lowercase name", hint="use [a-z0-9-], e.g. my-db")
    if not isinstance(data.get("summary", ""), str):
        raise ConfigError(f"{where}: summary must be a string")
    return path, data


def strings(where: str, data: dict[str, Any], key: str, pattern: re.Pattern[str] | None = None) -> tuple[str, ...]:
    value = data.get(key, [])
    if not isinstance(value, list) or not all(isinstance(x, str) for x in value):
        raise ConfigError(f"{where}: {key} must be a list of strings")
    bad = [x for x in value if pattern and not pattern.match(x)]
    if bad:
        raise ConfigError(f"{where}: {key} has bad entries {bad}", hint="use Debian package names")
    return tuple(value)


def flag(where: str, data: dict[str, Any], key: str, default: bool) -> bool:
    value = data.get(key, default)
    if not isinstance(value, bool):
        raise ConfigError(f"{where}: {key} must be true or false",
                          hint=f"write {key} = true or {key} = false, a TOML boolean without quotes")
    return value


def choice(where: str, data: dict[str, Any], key: str, allowed: tuple[str, ...], default: str | None = None) -> str:
    value = data.get(key, default)
    if value not in allowed:
        raise ConfigError(f"{where}: {key} {value!r} is not one of {', '.join(allowed)}",
                          hint=f"set {key} = \"{allowed[0]}\"")
    return str(value)


def program(where: str, base: Path, data: dict[str, Any]) -> Path:
    """The program file named by the manifest (relative to it), which must be executable."""
    rel = data.get("program")
    if not isinstance(rel, str) or not rel:
        raise ConfigError(f"{where}: no program", hint="set program = \"my-workload\" (a path beside the manifest)")
    path = (base.parent / rel).resolve()
    if not path.is_file():
        raise ConfigError(f"{where}: program {path} not found", hint="fix program = ... (relative to the manifest)")
    if not path.stat().st_mode & 0o111:
        raise ConfigError(f"{where}: program {path} is not executable", hint=f"chmod +x {path}")
    if path.name in RESERVED:
        raise ConfigError(f"{where}: program name {path.name} is one of xdh's own guest programs",
                          hint="rename the program")
    return path


def params(where: str, data: dict[str, Any]) -> tuple[tuple[str, str], ...]:
    """``[params]``: each becomes ``--key-name value`` on the program's command line."""
    table = data.get("params", {})
    if not isinstance(table, dict):
        raise ConfigError(f"{where}: params must be a table ([params])")
    taken = sorted(set(table) & {"seed", "dir", "device"})
    if taken:
        raise ConfigError(f"{where}: parameter {taken[0]} is xdh's own (--seed, --dir, --device)",
                          hint="rename it")
    out = []
    for key, value in table.items():
        if not NAME.match(key.replace("_", "-")) or isinstance(value, dict | list) or value is None:
            raise ConfigError(f"{where}: parameter {key} = {value!r} must be a name with a scalar value")
        out.append((key, str(value).lower() if isinstance(value, bool) else str(value)))
    return tuple(out)


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()
