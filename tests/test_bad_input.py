"""The bad-input matrix: every case through the CLI and the Python API.

Each gives one message naming the file (and the field, where there is one), exit status 2 and no
traceback from the CLI, only the project's own error type from the API, and writes nothing.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

import papers
from papers.errors import PapersError
from tests.conftest import minimal_spec


def spec_with(change) -> bytes:
    data = minimal_spec()
    change(data)
    return yaml.safe_dump(data, sort_keys=False).encode()


def nodes(*new_nodes) -> bytes:
    return spec_with(lambda d: d["graphs"]["net"].update(nodes=list(new_nodes)))


CONV = {"name": "conv", "op": "conv2d", "args": {"out_channels": 4, "kernel_size": 3}}
ALIAS_BOMB = (
    "a: &a [x, x, x, x, x, x, x, x, x]\n"
    + "".join(
        f"{chr(98 + i)}: &{chr(98 + i)} [" + ", ".join([f"*{chr(97 + i)}"] * 9) + "]\n" for i in range(8)
    )
).encode()

CASES: dict[str, tuple[bytes, str, str | None]] = {
    # name: (file content, expected message part, expected field path or None)
    "malformed-yaml": (b"id: vgg\n  bad: [indent\n", "not valid YAML", None),
    "unsafe-tag": (b"!!python/object/apply:os.system ['touch hacked']\n", "not valid YAML", None),
    "alias-bomb": (ALIAS_BOMB, "alias bomb", None),
    "deep-nesting": (b"a:\n" + b"- " * 5000 + b"x\n", "not valid YAML", None),
    "5MB-string": (b"id: " + b"x" * (5 * 1024 * 1024) + b"\n", "larger than", None),
    "binary-garbage": (bytes(range(256)) * 8, "not UTF-8", None),
    "nul-bytes": (b"id: x\x00\x00\n", "NUL", None),
    "empty-file": (b"", "empty", None),
    "top-level-list": (b"- id: vgg\n", "a list", None),
    "top-level-scalar": (b"just text\n", "a str", None),
    "unknown-field": (
        spec_with(lambda d: d["citation"].update(jounral="x")),
        "unknown field",
        "citation.jounral",
    ),
    "string-for-number": (
        spec_with(lambda d: d["citation"].update(year="2015")),
        "valid integer",
        "citation.year",
    ),
    "unknown-op": (nodes({"op": "conv9d"}), "unknown op 'conv9d'", "graphs.net.nodes[0].op"),
    "dangling-reference": (
        nodes(CONV, {"op": "relu", "in": "nowhere"}),
        "'nowhere' names no node",
        "graphs.net.nodes[1].in",
    ),
    "cycle": (
        nodes({"name": "a", "op": "relu", "in": "b"}, {"name": "b", "op": "relu", "in": "a"}),
        "cycle",
        "graphs.net.nodes[0]",
    ),
    "shape-mismatch": (
        nodes(CONV, {"name": "sum", "op": "add", "in": ["conv", "image"]}),
        "node 'sum' (add) fails on input",
        "graphs.net.nodes[1]",
    ),
    "expression-names-a-non-parameter": (
        nodes({"op": "conv2d", "args": {"out_channels": "${os}", "kernel_size": 3}}),
        "names 'os'",
        "graphs.net.nodes[0].args.out_channels",
    ),
    "expression-calls-outside-whitelist": (
        nodes({"op": "conv2d", "args": {"out_channels": "${__import__('os').getpid()}", "kernel_size": 3}}),
        "outside the allowed functions",
        "graphs.net.nodes[0].args.out_channels",
    ),
    "absurd-repeat": (
        nodes({"repeat": 10**9, "body": [{"op": "relu"}]}),
        "repeat count",
        "graphs.net.nodes[0].repeat",
    ),
    "absurd-size": (
        nodes({"op": "conv2d", "args": {"out_channels": 10**9, "kernel_size": 11}}),
        "parameters",
        "graphs.net.nodes[0]",
    ),
    "absurd-input": (
        spec_with(lambda d: d["graphs"]["net"].update(inputs={"image": [3, 10**9, 10**9]})),
        "input dimensions",
        "graphs.net.inputs.image",
    ),
}


@pytest.fixture(params=sorted(CASES))
def bad_file(request, tmp_path) -> tuple[Path, str, str | None]:
    content, message, field = CASES[request.param]
    path = tmp_path / "bad.yaml"
    path.write_bytes(content)
    return path, message, field


def contents(folder: Path) -> dict[str, bytes]:
    return {str(p): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_cli_refuses_with_one_line_and_exit_2(run, bad_file, tmp_path, monkeypatch):
    path, message, field = bad_file
    monkeypatch.chdir(tmp_path)
    before = contents(tmp_path)
    result = run("validate", str(path))
    assert result.exit_code == 2
    assert result.stdout == ""
    assert len(result.stderr.strip().splitlines()) == 1
    assert "Traceback" not in result.stderr
    assert str(path) in result.stderr and message in result.stderr
    if field is not None:
        assert f": {field}:" in result.stderr
    assert contents(tmp_path) == before, "nothing written"


def test_api_raises_only_the_projects_error_naming_file_and_field(bad_file):
    path, message, field = bad_file
    with pytest.raises(PapersError) as caught:
        papers.validate_file(path)
    assert caught.value.file == str(path)
    assert message in caught.value.message
    assert caught.value.field == field


def test_the_matrix_starts_from_a_valid_spec(tmp_path):
    path = tmp_path / "good.yaml"
    path.write_bytes(spec_with(lambda d: None))
    assert papers.validate_file(path).id == "tiny"
