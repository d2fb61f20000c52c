"""The wheel: built from the repo, installed into a fresh virtual environment, run from elsewhere."""

from __future__ import annotations

import json
import os
import site
import subprocess
import sys
import sysconfig
import venv
import zipfile
from pathlib import Path

import pytest

from tests.conftest import REPO

pytestmark = pytest.mark.wheel


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "-w", str(out), str(REPO)], check=True
    )
    return next(out.glob("papers-*.whl"))


def test_wheel_holds_every_spec_and_plugin(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    specs = {
        f"papers_specs/{p.relative_to(REPO / 'specs').as_posix()}" for p in (REPO / "specs").rglob("*.yaml")
    }
    assert specs and specs <= names
    plugins = {
        f"papers_plugins/{p.relative_to(REPO / 'plugins').as_posix()}"
        for p in (REPO / "plugins").rglob("*.py")
    }
    assert plugins <= names
    assert any(n.endswith("entry_points.txt") for n in names)


def test_wheel_holds_what_the_site_build_needs_and_no_node_modules(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    sources = REPO / "site"
    wanted = {"mkdocs.yml", "package.json", "package-lock.json", "__init__.py"}
    wanted |= {p.relative_to(sources).as_posix() for p in (sources / "templates").glob("*.j2")}
    wanted |= {p.relative_to(sources).as_posix() for p in (sources / "assets").rglob("*") if p.is_file()}
    assert any(name.startswith("templates/") for name in wanted)
    assert {f"papers_site/{name}" for name in wanted} <= names
    assert not any("node_modules" in name for name in names)


def test_wheel_works_in_a_fresh_environment_from_another_directory(wheel, tmp_path):
    env = tmp_path / "env"
    venv.create(env, with_pip=False)
    python = env / "bin" / "python"
    subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", "--quiet", "--no-deps", str(wheel)],
        check=True,
    )
    # Dependencies (torch, pydantic, ...) come from this environment's site-packages, appended by a .pth
    # line, which adds the folder without running its .pth files (so no editable install leaks in).
    target = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    ours = {sysconfig.get_paths()["purelib"], *site.getsitepackages()}
    Path(target, "dependencies.pth").write_text("\n".join(sorted(ours)) + "\n")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    environment = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}

    def output(*command: str) -> str:
        done = subprocess.run(
            command, cwd=elsewhere, env=environment, capture_output=True, text=True, check=True
        )
        return done.stdout

    def papers(*args: str) -> str:
        return output(str(env / "bin" / "papers"), *args)

    location = output(str(python), "-c", "import papers; print(papers.__file__)")
    assert location.startswith(str(env)), "the installed wheel is imported, not the source tree"
    assert "vgg" in [p["id"] for p in json.loads(papers("list", "--json"))]
    assert json.loads(papers("build", "vgg11", "--json"))["params"] == 132_863_336
