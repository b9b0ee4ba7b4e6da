"""A non-editable install works: the recipes, guest programs and example workloads travel in the
wheel as data files, an installed xdh finds them (and computes the same image digests as the
checkout, so it uses the same cached images), ``--version`` says where it runs from, and the
wheel carries the licence."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _data_files() -> dict[str, list[str]]:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["data-files"]


SHIPPED = ("images", "guests", "examples")


def test_every_recipe_guest_and_example_file_is_a_data_file():
    listed = {f: dest for dest, files in _data_files().items() for f in files}
    tree = sorted(str(p.relative_to(ROOT)) for d in SHIPPED for p in (ROOT / d).rglob("*")
                  if p.is_file() and "__pycache__" not in p.parts)
    assert sorted(listed) == tree, "pyproject.toml [tool.setuptools.data-files] must list images/, guests/, examples/"
    assert all(dest == f"share/xdh/{Path(f).parent}" for f, dest in listed.items())


def test_the_licence_is_declared_and_exists():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["license"] == "MIT" and project["license-files"] == ["LICENSE"]
    assert "MIT License" in (ROOT / "LICENSE").read_text()


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """xdh built as a wheel and installed, not editable, into a fresh venv (its dependencies come
    from the project's venv, read after its own site-packages)."""
    tmp = tmp_path_factory.mktemp("wheel")
    src = tmp / "src"      # a copy: building in the checkout would leave build/ there
    src.mkdir()
    for part in ("pyproject.toml", "README.md", "LICENSE", "harness", *SHIPPED):
        if (ROOT / part).is_dir():
            shutil.copytree(ROOT / part, src / part, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(ROOT / part, src / part)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w",
                    str(tmp / "dist"), str(src)], check=True, timeout=300, cwd=src)
    venv = tmp / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    wheel = next((tmp / "dist").glob("xdh-*.whl"))
    # the new venv's own pip: this environment's pip would uninstall the editable xdh it holds
    subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "-q", "--no-deps", "--no-index",
                    str(wheel)], check=True, timeout=300)
    return venv


def _run(venv: Path, code: str) -> str:
    deps = next(p for p in sys.path if p.endswith("site-packages"))
    own = next((venv / "lib").glob("python3*/site-packages"))
    env = {**os.environ, "PYTHONPATH": f"{own}:{deps}"}
    return subprocess.run([str(venv / "bin" / "python"), "-c", code], cwd=venv, env=env, capture_output=True,
                          text=True, timeout=120, check=True).stdout


def test_an_installed_xdh_finds_its_recipes_with_the_same_digests(installed):
    from harness.images.recipe import Recipe
    out = _run(installed, "import harness.paths as p, harness.images.recipe as r, sys; "
                          "print(p.PROJECT_ROOT); print(r.Recipe.load('domu').digest('k')); "
                          "print(r.Recipe.load('dom0').digest('k')); print(p.source())")
    root, domu, dom0, source = out.splitlines()
    assert root == str(installed / "share" / "xdh") and source.startswith("installed")
    assert (domu, dom0) == (Recipe.load("domu").digest("k"), Recipe.load("dom0").digest("k"))
    # file modes kept (the digest has them)
    assert os.access(installed / "share" / "xdh" / "guests" / "xdh-replay", os.X_OK)


def test_an_installed_xdh_finds_its_examples_and_carries_its_licence(installed):
    out = _run(installed, "import harness.paths as p; print(p.EXAMPLES_DIR)")
    examples = Path(out.strip())
    assert examples == installed / "share" / "xdh" / "examples"
    for f in (ROOT / "examples").rglob("*"):
        if f.is_file() and "__pycache__" not in f.parts:
            shipped = examples / f.relative_to(ROOT / "examples")
            assert shipped.read_bytes() == f.read_bytes()
            assert os.access(shipped, os.X_OK) == os.access(f, os.X_OK)     # the programs stay executable
    licence = next((installed / "lib").glob("python3*/site-packages/xdh-*.dist-info/licenses/LICENSE"))
    assert licence.read_text() == (ROOT / "LICENSE").read_text()
