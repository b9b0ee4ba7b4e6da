"""Where things live: the project tree (recipes, guest programs) and the cache."""

from __future__ import annotations

import os
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent
IMAGES_DIR = PROJECT_ROOT / "images"
GUESTS_DIR = PROJECT_ROOT / "guests"


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
