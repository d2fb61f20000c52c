"""The registry's index: ``papers list`` answers from it when nothing changed, validates when anything did.

Each scenario runs ``papers`` in a fresh process with a plugin distribution of its own on the path
(a package and its ``.dist-info``, as pip would leave them) and a cache folder of its own.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml

from tests.conftest import minimal_spec

PROBE = textwrap.dedent(
    """
    import json, sys
    import papers.cli
    sys.argv = ["papers", *sys.argv[1:]]
    try:
        papers.cli.main()
    except SystemExit as exit:
        code = exit.code
    heavy = sorted(m for m in ("pydantic", "papers.spec", "torch") if m in sys.modules)
    print(json.dumps({"exit": code, "imported": heavy}), file=sys.stderr)
    """
)


@pytest.fixture
def distribution(tmp_path: Path) -> Path:
    """A plugin distribution `papers-indexed` whose one spec lives in its package folder."""
    package = tmp_path / "site" / "indexed_plugin"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text(
        "from pathlib import Path\n\nfrom papers.hookspecs import hookimpl\n\n\n@hookimpl\n"
        "def papers_specs():\n    return [Path(__file__).parent / 'tiny.yaml']\n"
    )
    info = tmp_path / "site" / "papers_indexed-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: papers-indexed\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text("[papers]\nindexed = indexed_plugin\n")
    write(package, name="Tiny")
    return package


def write(package: Path, **change) -> None:
    data = minimal_spec()
    data.update(change)
    (package / "tiny.yaml").write_text(yaml.safe_dump(data, sort_keys=False))


def papers_list(tmp_path: Path, *args: str) -> tuple[subprocess.CompletedProcess, dict]:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("PAPERS_")}
    environment.update(PYTHONPATH=str(tmp_path / "site"), PAPERS_CACHE_DIR=str(tmp_path / "cache"))
    result = subprocess.run(
        [sys.executable, "-c", PROBE, "list", "--json", *args],
        capture_output=True,
        text=True,
        env=environment,
        cwd=tmp_path,
    )
    probe = json.loads(result.stderr.strip().splitlines()[-1])
    return result, probe


def names(result: subprocess.CompletedProcess) -> dict[str, str]:
    return {row["id"]: row["name"] for row in json.loads(result.stdout)}


def test_a_second_list_answers_from_the_index_without_the_spec_models_or_torch(tmp_path, distribution):
    first, probe = papers_list(tmp_path)
    assert probe == {"exit": 0, "imported": ["papers.spec", "pydantic"]}  # validated, no torch
    second, probe = papers_list(tmp_path)
    assert probe == {"exit": 0, "imported": []}
    assert second.stdout == first.stdout and names(second)["tiny"] == "Tiny" and "vgg" in names(second)
    classification, _ = papers_list(tmp_path, "--topic", "classification")
    assert "tiny" in names(classification) and "vgg" in names(classification)
    compression, _ = papers_list(tmp_path, "--topic", "compression")
    assert "vgg" not in names(compression)


def test_a_changed_spec_is_validated_again(tmp_path, distribution):
    papers_list(tmp_path)
    write(distribution, name="Renamed")
    result, probe = papers_list(tmp_path)
    assert names(result)["tiny"] == "Renamed" and "papers.spec" in probe["imported"]
    write(distribution, name="")  # invalid: refused by validation, never answered from an index
    result, probe = papers_list(tmp_path)
    assert "tiny" not in names(result)
    assert "indexed (papers-indexed)" in result.stderr and "name" in result.stderr
    again, _ = papers_list(tmp_path)
    assert again.stderr.count("indexed (papers-indexed)") == 1, "the refusal is reported every time"


def test_a_changed_plugin_module_is_discovered_again(tmp_path, distribution):
    papers_list(tmp_path)
    init = distribution / "__init__.py"
    init.write_text(init.read_text() + "\n# edited in place, as an editable install is\n")
    _, probe = papers_list(tmp_path)
    assert "papers.spec" in probe["imported"]


def test_without_a_cache_every_list_validates(tmp_path, distribution):
    environment = dict(os.environ, PAPERS_NO_CACHE="1")
    for _ in range(2):
        result = subprocess.run(
            [sys.executable, "-c", PROBE, "list"],
            capture_output=True,
            text=True,
            env={**environment, "PYTHONPATH": str(tmp_path / "site")},
        )
        assert "papers.spec" in json.loads(result.stderr.strip().splitlines()[-1])["imported"]
    assert not (tmp_path / "cache").exists()


def test_a_registry_discovered_in_this_process_answers_list_not_the_index(demo, run):
    """A registry changed in-process (tests, notebooks) is the one listed, whatever the index holds."""
    from papers import index
    from papers.registry import Registry

    index.store(Registry.discover())  # the installed plugins' index, as `papers list` leaves it
    assert index.cached_rows() is not None
    listed = json.loads(run("list", "--json").stdout)
    assert "narrow-demo" in {row["id"] for row in listed}
