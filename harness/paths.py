"""Where things live: the project tree (recipes, guest programs, examples) and the cache."""

from __future__ import annotations

import functools
import os
import sys
from pathlib import Path

CHECKOUT = Path(__file__).resolve().parent.parent
MARKER = Path("images") / "dom0" / "recipe.toml"


def _installed() -> Path:
    """Where pip put a wheel's data files (pyproject: data-files): read from the installed
    distribution's own record (right for venvs, --user and system installs alike)."""
    try:
        from importlib import metadata
        for f in metadata.distribution("xdh").files or []:
            if str(f).endswith(str(Path("share") / "xdh" / MARKER)):
                return Path(str(f.locate())).resolve().parents[len(MARKER.parts) - 1]
    except Exception:  # noqa: BLE001 - not installed as a distribution: the prefix's share/
        return Path(sys.prefix) / "share" / "xdh"
    return Path(sys.prefix) / "share" / "xdh"


INSTALLED = _installed()
# a checkout (or an editable install) reads its own tree; an installed wheel its data files
PROJECT_ROOT = CHECKOUT if (CHECKOUT / MARKER).is_file() else INSTALLED
IMAGES_DIR = PROJECT_ROOT / "images"
GUESTS_DIR = PROJECT_ROOT / "guests"
EXAMPLES_DIR = PROJECT_ROOT / "examples"    # example workload and fault manifests (docs/workloads.md)


@functools.lru_cache(maxsize=1)
def source() -> str:
    """Where xdh runs from, for ``--version`` and config.json: a checkout's commit (``+`` if it
    has uncommitted changes), or the installed data files."""
    if PROJECT_ROOT == INSTALLED:
        return "installed"
    import subprocess
    try:
        git = ["git", "--no-optional-locks", "-C", str(CHECKOUT)]    # never takes the checkout's index.lock
        head = subprocess.run([*git, "rev-parse", "--short=12", "HEAD"], capture_output=True,
                              text=True, timeout=10, check=True).stdout.strip()
        dirty = subprocess.run([*git, "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "a checkout"
    return f"commit {head}{'+' if dirty else ''}"


def cache_dir() -> Path:
    """Image cache: $XDH_CACHE, else $XDG_CACHE_HOME/xdh, else ~/.cache/xdh."""
    env = os.environ.get("XDH_CACHE")
    if env:
        return Path(env).expanduser().resolve()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg) if xdg else Path.home() / ".cache"
    return (base / "xdh").resolve()


def runs_dir() -> Path:
    """Default parent of run directories: $XDH_RUNS, else ./runs."""
    env = os.environ.get("XDH_RUNS")
    return Path(env).expanduser().resolve() if env else (Path.cwd() / "runs").resolve()
