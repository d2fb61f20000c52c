"""Shared fixtures: a fresh registry per test that changes plugins, the CLI runner, spec helpers."""

from __future__ import annotations

import copy
import os
import tempfile
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner

from papers.cli import cli
from papers.registry import reset_registry

REPO = Path(__file__).resolve().parent.parent


def benchmark(name: str) -> Any:
    """The script ``benchmarks/NAME.py`` imported as a module (benchmarks/ is not a package)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(name, REPO / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


VGG_SPEC = REPO / "specs" / "classification" / "vgg.yaml"


def built_on(plugin: str) -> tuple[str, ...]:
    """The installed plugins whose specs build on ``plugin``'s papers (a method variant's ``base``, a
    paper in ``uses``), directly or through another: a test that disables ``plugin`` disables them
    too, as strict discovery refuses a variant whose base is gone. Read from a registry of its own."""
    from papers.plugins import PluginManager
    from papers.registry import Registry

    manager = PluginManager()
    manager.load_entry_points()
    entries = Registry(manager).list()
    gone = {plugin}
    while True:
        papers_gone = {e.spec.id for e in entries if e.plugin in gone}
        variants_gone = {v.id for e in entries if e.plugin in gone for v in e.spec.variants}
        more = {
            e.plugin
            for e in entries
            if e.plugin not in gone
            and (set(e.spec.uses) & papers_gone or {v.base for v in e.spec.variants} & variants_gone)
        }
        if not more:
            return tuple(sorted(gone - {plugin}))
        gone |= more


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--slow", action="store_true", help="run the long property-test profiles")


def pytest_configure(config: pytest.Config) -> None:
    from hypothesis import settings

    # Modules that read the registry at collection time must not write the user's cache either.
    os.environ.setdefault("PAPERS_CACHE_DIR", tempfile.mkdtemp(prefix="papers-test-cache-"))

    settings.register_profile("ci", max_examples=100, deadline=None)
    settings.register_profile("slow", max_examples=2000, deadline=None)
    settings.load_profile("slow" if config.getoption("--slow") else "ci")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.getoption("--slow"):
        return
    skip = pytest.mark.skip(reason="needs --slow")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def _environment(monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory) -> None:
    monkeypatch.setenv("PAPERS_STRICT_PLUGINS", os.environ.get("PAPERS_STRICT_PLUGINS", "1"))
    monkeypatch.setenv("PAPERS_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "cache"))


@pytest.fixture
def fresh_registry():
    """Rediscover plugins before and after the test."""
    reset_registry()
    yield
    reset_registry()


@pytest.fixture(scope="session")
def _demo_registry():
    from papers.registry import Registry
    from tests.test_methods import demo_manager

    return Registry(demo_manager())


@pytest.fixture
def demo(_demo_registry, monkeypatch):
    """The registry of the built-ins and the methods demo package (tests/plugin_packages/methods_demo),
    as the current registry."""
    import papers.registry

    monkeypatch.setattr(papers.registry, "_current", _demo_registry)
    return _demo_registry


@pytest.fixture
def one_thread():
    """torch on one thread for the test: several test runs share two cores, where two threads make
    a small forward pass many times slower."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def dry_run(run, variant: str, *args: str) -> dict[str, Any]:
    """``papers train VARIANT --dry-run``'s resolved recipe."""
    import json

    result = run("train", variant, "--dry-run", *args)
    assert result.exit_code == 0, result.stderr
    return json.loads(result.stdout)


def cited(paper: str) -> str:
    """The prose of a spec's recipes (paper-level and per group: loss and notes), where the paper's
    numbers are quoted."""
    import papers

    spec = papers.get_spec(paper)
    recipes = [spec.hyperparameters] + [r.hyperparameters for r in spec.recipes]
    return " ".join(" ".join(f"{h.loss or ''} {h.notes or ''}" for h in recipes).split())


class Result:
    def __init__(self, exit_code: int, stdout: str, stderr: str):
        self.exit_code, self.stdout, self.stderr = exit_code, stdout, stderr


@pytest.fixture
def run():
    """Run the CLI in-process: ``run("list", "--json")`` -> exit code, stdout, stderr."""

    def invoke(*args: str) -> Result:
        result = CliRunner().invoke(cli, list(args), catch_exceptions=False)
        return Result(result.exit_code, result.stdout, result.stderr)

    return invoke


def pip_install(source: Path, target: Path) -> Path:
    """Install the package at ``source`` into the folder ``target`` (for PYTHONPATH), as a user's pip
    would install a plugin distribution; no dependencies, nothing downloaded."""
    import subprocess
    import sys

    pip = [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation"]
    subprocess.run([*pip, "--target", str(target), str(source)], check=True, capture_output=True)
    return target


def write_package(
    folder: Path,
    module: str,
    distribution: str,
    code: str,
    *,
    entry: str = "",
    data: dict[str, str] | None = None,
) -> Path:
    """A one-module plugin distribution's sources: ``module/__init__.py`` holding ``code``, the files
    of ``data`` beside it (package data), and a pyproject registering it as the papers plugin
    ``entry`` (default: the module's name)."""
    import textwrap

    (folder / module).mkdir(parents=True)
    (folder / module / "__init__.py").write_text(code)
    for name, text in (data or {}).items():
        (folder / module / name).write_text(text)
    (folder / "pyproject.toml").write_text(
        textwrap.dedent(
            f"""
            [build-system]
            requires = ["setuptools>=61"]
            build-backend = "setuptools.build_meta"
            [project]
            name = "{distribution}"
            version = "1.0"
            [project.entry-points.papers]
            {entry or module} = "{module}"
            [tool.setuptools.package-data]
            {module} = ["*.yaml"]
            """
        )
    )
    return folder


def minimal_spec(**graph: Any) -> dict[str, Any]:
    """A small valid spec (a tiny CNN) as plain data, with the graph overridable."""
    spec = {
        "id": "tiny",
        "name": "Tiny",
        "topics": ["classification"],
        "citation": {
            "title": "A Tiny Network",
            "authors": ["A. Author"],
            "year": 2020,
            "venue": "Test",
            "kind": "conference",
        },
        "summary": "A network for tests.",
        "graphs": {
            "net": {
                "params": {"width": 8, "num_classes": 10},
                "inputs": {"image": [3, 16, 16]},
                "nodes": [
                    {"name": "conv", "op": "conv2d", "args": {"out_channels": "${width}", "kernel_size": 3}},
                    {"name": "relu", "op": "relu"},
                    {"name": "pool", "op": "adaptive_avgpool2d", "args": {"output_size": 1}},
                    {"name": "flat", "op": "flatten", "args": {"start_dim": 1}},
                    {"name": "fc", "op": "linear", "args": {"out_features": "${num_classes}"}},
                ],
                "classifier": ["fc"],
            }
        },
        "variants": [{"id": "tiny8", "name": "Tiny-8", "graph": "net"}],
        "results": [],
    }
    spec["graphs"]["net"].update(graph)
    return copy.deepcopy(spec)


def write_spec(path: Path, data: Any) -> Path:
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path
