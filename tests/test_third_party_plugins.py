"""Third-party plugins, installed as real packages (``pip install --target``, used via PYTHONPATH).

Each scenario runs the CLI in a subprocess, so nothing leaks into this process, the project's
environment, or other tests.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGES = Path(__file__).parent / "plugin_packages"


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> dict[str, Path]:
    """Each package installed into a folder of its own."""
    folders = {}
    for name in ("example", "broken", "badspec", "duplicate"):
        target = tmp_path_factory.mktemp(name)
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "install",
                "--quiet",
                "--no-deps",
                "--no-build-isolation",
                "--target",
                str(target),
                str(PACKAGES / name),
            ],
            check=True,
            capture_output=True,
        )
        folders[name] = target
    return folders


@pytest.fixture
def papers(installed, tmp_path):
    """Run ``papers`` with the named plugin packages on PYTHONPATH; returns the completed process."""

    def run(*args: str, plugins: tuple[str, ...] = (), **env: str) -> subprocess.CompletedProcess:
        environment = {k: v for k, v in os.environ.items() if not k.startswith("PAPERS_")}
        environment.update(
            PYTHONPATH=os.pathsep.join(str(installed[p]) for p in plugins),
            PAPERS_CACHE_DIR=str(tmp_path / "cache"),
            **env,
        )
        return subprocess.run(
            [sys.executable, "-m", "papers", *args],
            capture_output=True,
            text=True,
            env=environment,
            cwd=tmp_path,
        )

    return run


def test_installed_plugin_is_listed_built_and_checked_with_nothing_to_configure(papers):
    listed = json.loads(papers("list", "--json", plugins=("example",)).stdout)
    example = next(p for p in listed if p["id"] == "efficient-backprop")
    assert example["variants"] == ["backprop_mlp"] and example["plugin"] == "example"
    built = papers("build", "backprop_mlp", "--json", plugins=("example",))
    assert built.returncode == 0, built.stderr
    layers = json.loads(built.stdout)["layers"]
    assert [layer["op"] for layer in layers] == ["linear", "scaled_tanh", "linear"]
    assert json.loads(built.stdout)["params"] == 64 * 32 + 32 + 32 * 10 + 10
    checked = papers("check", "efficient-backprop", "--json", plugins=("example",))
    assert checked.returncode == 0 and json.loads(checked.stdout) == []


def test_plugins_command_shows_distribution_version_hooks_and_contributions(papers):
    plugins = json.loads(papers("plugins", "--json", plugins=("example",)).stdout)
    example = next(p for p in plugins if p["name"] == "example")
    assert example["distribution"] == "papers-example" and example["version"] == "1.2.0"
    assert example["hooks"] == ["papers_ops", "papers_specs"]
    assert example["contributes"] == {"ops": ["scaled_tanh"], "specs": ["efficient-backprop"]}


def test_a_plugin_that_fails_to_import_is_reported_once_and_skipped(papers):
    result = papers("list", "--json", plugins=("broken", "example"))
    assert result.returncode == 0
    assert {p["id"] for p in json.loads(result.stdout)} >= {"vgg", "efficient-backprop"}
    assert len(result.stderr.splitlines()) == 1, "reported once"
    assert "this plugin is broken on purpose" in result.stderr
    plugins = json.loads(papers("plugins", "--json", plugins=("broken",)).stdout)
    broken = next(p for p in plugins if p["name"] == "broken")
    assert "RuntimeError: this plugin is broken on purpose" in broken["error"]


def test_an_invalid_spec_is_refused_with_its_file_and_field(papers):
    result = papers("list", "--json", plugins=("badspec",))
    assert result.returncode == 0
    assert "bad" not in [p["id"] for p in json.loads(result.stdout)]
    assert "bad.yaml: citation.year:" in result.stderr
    plugins = json.loads(papers("plugins", "--json", plugins=("badspec",)).stdout)
    refused = next(p for p in plugins if p["name"] == "badspec")["refused"]
    assert len(refused) == 1 and "citation.year" in refused[0]


def test_two_claims_on_one_id_name_both_plugins(papers):
    result = papers("show", "vgg", "--json", plugins=("duplicate",))
    assert result.returncode == 0
    assert json.loads(result.stdout)["name"] == "VGGNet", "the first claim (the built-in) keeps the id"
    assert "paper id 'vgg' is claimed by both vgg (papers) and duplicate (papers-duplicate)" in result.stderr


def test_strict_mode_re_raises_plugin_failures(papers):
    result = papers("list", plugins=("broken",), PAPERS_STRICT_PLUGINS="1")
    assert result.returncode != 0
    assert "this plugin is broken on purpose" in result.stderr
    result = papers("list", plugins=("badspec",), PAPERS_STRICT_PLUGINS="1")
    assert result.returncode == 2 and "citation.year" in result.stderr


def test_papers_plugins_chooses_distributions_and_disable_skips_them(papers):
    only_builtins = papers("list", "--json", plugins=("example",), PAPERS_PLUGINS="")
    assert "efficient-backprop" not in [p["id"] for p in json.loads(only_builtins.stdout)]
    chosen = papers("list", "--json", plugins=("example", "broken"), PAPERS_PLUGINS="papers-example")
    assert chosen.stderr == "" and "efficient-backprop" in [p["id"] for p in json.loads(chosen.stdout)]
    disabled = papers("list", "--json", plugins=("example",), PAPERS_DISABLE_PLUGINS="papers-example")
    assert "efficient-backprop" not in [p["id"] for p in json.loads(disabled.stdout)]


def test_plugin_discovery_does_not_import_torch(papers, installed, tmp_path):
    code = (
        "import sys; from papers.registry import get_registry; get_registry(); print('torch' in sys.modules)"
    )
    environment = {**os.environ, "PYTHONPATH": str(installed["example"]), "PAPERS_CACHE_DIR": str(tmp_path)}
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=environment, check=True
    )
    assert out.stdout.strip() == "False"
