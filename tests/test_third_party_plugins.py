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

from tests.conftest import built_on, pip_install

PACKAGES = Path(__file__).parent / "plugin_packages"


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> dict[str, Path]:
    """Each package installed into a folder of its own."""
    folders = {}
    for name in ("example", "broken", "badspec", "duplicate", "impostor", "hostile"):
        target = pip_install(PACKAGES / name, tmp_path_factory.mktemp(name))
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


# -- a plugin cannot take a built-in's place -----------------------------------------------------

VGG16_PARAMS = 138_357_544
TAKEN = "plugin vgg (papers-impostor) skipped: the plugin name 'vgg' is taken by the built-in vgg (papers)"


def test_a_plugin_named_like_a_builtin_is_refused_and_the_builtin_kept(papers):
    only_the_namesake = {"plugins": ("impostor",), "PAPERS_DISABLE_PLUGINS": "impostor_late"}
    shown = papers("show", "vgg", "--json", **only_the_namesake)
    assert shown.returncode == 0 and json.loads(shown.stdout)["name"] == "VGGNet"
    assert shown.stderr.splitlines() == [f"papers: {TAKEN}"], "reported once, naming both distributions"
    built = papers("build", "vgg16", "--json", **only_the_namesake)
    assert json.loads(built.stdout)["params"] == VGG16_PARAMS, "the built-in VGG-16, not the impostor's"
    plugins = json.loads(papers("plugins", "--json", **only_the_namesake).stdout)
    [builtin] = [p for p in plugins if p["name"] == "vgg" and p["distribution"] == "papers"]
    assert builtin["error"] is None and builtin["contributes"] == {"specs": ["vgg"]}
    [impostor] = [p for p in plugins if p["distribution"] == "papers-impostor"]
    assert impostor["name"] == "vgg" and "taken by the built-in vgg (papers)" in impostor["error"]
    strict = papers("list", PAPERS_STRICT_PLUGINS="1", **only_the_namesake)
    assert strict.returncode == 2
    assert strict.stderr.splitlines() == [f"papers: error: {TAKEN.replace(' skipped', '')}"]


def test_disabling_a_name_two_plugins_share_lets_neither_in(papers):
    both = papers(
        "list",
        "--json",
        plugins=("impostor",),
        PAPERS_DISABLE_PLUGINS=",".join(("vgg", "impostor_late", *built_on("vgg"))),
    )
    assert both.returncode == 0 and both.stderr == ""
    ids = [p["id"] for p in json.loads(both.stdout)]
    assert "vgg" not in ids and "resnet" in ids, "a bare name disables every plugin of that name"
    builtin_only = papers(
        "list",
        "--json",
        plugins=("impostor",),
        PAPERS_DISABLE_PLUGINS=",".join(("papers:vgg", "impostor_late", *built_on("vgg"))),
    )
    assert "vgg" not in [p["id"] for p in json.loads(builtin_only.stdout)]
    assert builtin_only.stderr.splitlines() == [f"papers: {TAKEN}"], "a disabled built-in keeps its name"
    impostor_only = papers(
        "show", "vgg", "--json", plugins=("impostor",), PAPERS_DISABLE_PLUGINS="papers_impostor:vgg"
    )
    assert json.loads(impostor_only.stdout)["name"] == "VGGNet"
    assert "is taken" not in impostor_only.stderr, "distribution:name disables that one plugin"


def test_hook_order_cannot_put_a_plugin_before_the_builtins(papers):
    """``impostor_late`` marks its hook trylast, which puts it first in pluggy's list of hooks."""
    result = papers(
        "show", "vgg", "--json", plugins=("impostor",), PAPERS_DISABLE_PLUGINS="papers-impostor:vgg"
    )
    assert result.returncode == 0 and json.loads(result.stdout)["name"] == "VGGNet"
    assert (
        "paper id 'vgg' is claimed by both vgg (papers) and impostor_late (papers-impostor)" in result.stderr
    )
    built = papers(
        "build", "vgg16", "--json", plugins=("impostor",), PAPERS_DISABLE_PLUGINS="papers-impostor:vgg"
    )
    assert json.loads(built.stdout)["params"] == VGG16_PARAMS


# -- a plugin cannot take the process down --------------------------------------------------------

HOSTILE = {
    "exit_on_import": "skipped: import failed: SystemExit: 0",
    "exit_in_hook": "skipped: papers_specs() failed: SystemExit: 3",
    "base_exception": "skipped: papers_ops() failed: Escape: out of the registry",
    "bad_bytes": "not-a-file.yaml: read_bytes() returned int, not bytes",
    "constructed": "<Spec object>: id: String should match pattern",
}


@pytest.mark.parametrize("plugin", list(HOSTILE))
def test_a_plugin_that_exits_or_returns_unvalidated_objects_is_reported_and_skipped(papers, plugin):
    only = {"plugins": ("hostile",), "PAPERS_DISABLE_PLUGINS": ",".join(set(HOSTILE) - {plugin})}
    result = papers("list", "--json", **only)
    assert result.returncode == 0, result.stderr
    listed = json.loads(result.stdout)
    ids = [p["id"] for p in listed]
    classification = [p for p in listed if "classification" in p["topics"]]
    assert "vgg" in ids and len(classification) == 14 and "../../x" not in ids
    [line] = result.stderr.splitlines()
    assert line.startswith(f"papers: plugin {plugin} (papers-hostile)") and HOSTILE[plugin] in line
    strict = papers("list", "--json", PAPERS_STRICT_PLUGINS="1", **only)
    assert strict.returncode == 2 and strict.stdout == ""
    [line] = strict.stderr.splitlines()
    assert line.startswith(f"papers: error: plugin {plugin} (papers-hostile): ")
    assert HOSTILE[plugin].removeprefix("skipped: ") in line


def test_a_plugin_exiting_with_status_0_fails_check_all_in_strict_mode(papers):
    """It used to end ``papers check --all`` with status 0 and no output: CI passed, nothing checked."""
    only = {"plugins": ("hostile",), "PAPERS_DISABLE_PLUGINS": ",".join(set(HOSTILE) - {"exit_on_import"})}
    result = papers("check", "--all", PAPERS_STRICT_PLUGINS="1", **only)
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        "papers: error: plugin exit_on_import (papers-hostile): import failed: SystemExit: 0"
    ]


def test_every_hostile_plugin_at_once_leaves_the_registry_working(papers):
    result = papers("list", "--json", plugins=("hostile", "example"))
    assert result.returncode == 0
    assert {p["id"] for p in json.loads(result.stdout)} >= {"vgg", "efficient-backprop"}
    lines = result.stderr.splitlines()
    assert len(lines) == len(HOSTILE), "each reported once"
    for plugin, message in HOSTILE.items():
        assert any(f"plugin {plugin} (papers-hostile)" in line and message in line for line in lines), plugin
