"""The bad-input matrix: every case through the CLI and the Python API.

Each gives one message naming the file (and the field, where there is one), exit status 2 and no
traceback from the CLI, only the project's own error type from the API, and writes nothing.
"""

from __future__ import annotations

from collections.abc import Callable
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


# -- training and evaluation: the same promise for data, weights and recipe overrides ----------


def _missing_data(tmp: Path) -> tuple[list[str], str]:
    missing = str(tmp / "nowhere")
    return ["train", "lenet5", "--data", missing, "--out", str(tmp / "run")], missing


def _empty_class_folder(tmp: Path) -> tuple[list[str], str]:
    (tmp / "data" / "train" / "cat").mkdir(parents=True)
    (tmp / "data" / "train" / "cat" / "0.png").write_bytes(b"\x89PNG")
    (tmp / "data" / "train" / "dog").mkdir()
    return ["train", "lenet5", "--data", str(tmp / "data"), "--out", str(tmp / "run")], str(
        tmp / "data" / "train" / "dog"
    )


def _undecodable_image(tmp: Path) -> tuple[list[str], str]:
    for name in ("cat", "dog"):
        (tmp / "data" / "train" / name).mkdir(parents=True)
        (tmp / "data" / "train" / name / "0.png").write_bytes(b"\x89PNG not really")
    return ["train", "lenet5", "--data", str(tmp / "data"), "--out", str(tmp / "run")], str(tmp / "data")


def _mismatched_weights(tmp: Path) -> tuple[list[str], str]:
    from safetensors.torch import save_file

    weights = tmp / "lenet5-4-classes.safetensors"
    save_file(papers.build_model("lenet5", num_classes=4).state_dict(), str(weights))
    return ["eval", "lenet5", "--weights", str(weights), "--data", "builtin:digits"], str(weights)


def _decompression_bomb(tmp: Path) -> tuple[list[str], str]:
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", 20000, 20000, 8, 0, 0, 0, 0)  # 4e8 pixels claimed in 60 bytes
    for name in ("cat", "dog"):
        (tmp / "data" / "train" / name).mkdir(parents=True)
        bomb = tmp / "data" / "train" / name / "0.png"
        bomb.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IEND", b""))
    return ["train", "lenet5", "--data", str(tmp / "data"), "--out", str(tmp / "run")], str(tmp / "data")


def _one_class(tmp: Path) -> tuple[list[str], str]:
    (tmp / "data" / "train" / "cat").mkdir(parents=True)
    (tmp / "data" / "train" / "cat" / "0.png").write_bytes(b"\x89PNG")
    return ["train", "lenet5", "--data", str(tmp / "data"), "--out", str(tmp / "run")], str(
        tmp / "data" / "train"
    )


def _huge_input_size(tmp: Path) -> tuple[list[str], str]:
    args = ["train", "vgg11", "--data", "builtin:digits", "--out", str(tmp / "run")]
    return [*args, "-r", "input_size=[20000, 20000]"], "-r input_size"


def _override(pair: str) -> Callable[[Path], tuple[list[str], str]]:
    def case(tmp: Path) -> tuple[list[str], str]:
        field = "-r " + pair.partition("=")[0]
        return ["train", "lenet5", "--data", "builtin:digits", "--out", str(tmp / "run"), "-r", pair], field

    return case


RUN_CASES: dict[str, tuple[Callable[[Path], tuple[list[str], str]], str]] = {
    # name: (setup returning the command line and the file or field named, expected message part)
    "missing-data-folder": (_missing_data, "no such data folder"),
    "empty-class-folder": (_empty_class_folder, "class folder holds no images"),
    "undecodable-image": (_undecodable_image, "cannot read the data"),
    "mismatched-weights": (_mismatched_weights, "shape mismatch: output.centers (4, 84) vs (10, 84)"),
    "override-of-the-wrong-type": (_override("optimizer.lr=fast"), "valid number"),
    "unknown-override-field": (_override("optimizer.learning_rate=0.1"), "unknown recipe field"),
    "unknown-top-level-override": (_override("lr=0.1"), "unknown recipe field 'lr'"),
    "decompression-bomb": (_decompression_bomb, "decompression bomb"),
    "one-class-data": (_one_class, "training a classifier needs at least two"),
    "batch-larger-than-memory": (_huge_input_size, "of this machine's"),
    "negative-crop-size": (
        _override("augmentation=[{name: random_crop, args: {size: -5}}]"),
        "size must be a positive integer",
    ),
    "flip-probability-above-one": (
        _override("augmentation=[{name: horizontal_flip, args: {p: 1.5}}]"),
        "p is a probability",
    ),
}


@pytest.mark.parametrize("case", sorted(RUN_CASES))
def test_train_and_eval_refuse_with_one_line_and_exit_2(run, tmp_path, monkeypatch, case):
    setup, message = RUN_CASES[case]
    monkeypatch.chdir(tmp_path)
    args, named = setup(tmp_path)
    before = contents(tmp_path)
    result = run(*args)
    assert result.exit_code == 2, result.stderr
    assert result.stdout == ""
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert result.stderr.startswith("papers: error: ") and "Traceback" not in result.stderr
    assert named in result.stderr and message in result.stderr, result.stderr
    assert contents(tmp_path) == before, "nothing written"
    assert not (tmp_path / "run").exists() and not (tmp_path / "runs").exists(), "no run folder left behind"


@pytest.mark.parametrize("case", sorted(RUN_CASES))
def test_train_and_eval_raise_only_the_projects_error(tmp_path, case):
    from papers.evaluate import evaluate
    from papers.recipe import override_pairs
    from papers.train import train

    setup, message = RUN_CASES[case]
    args, _ = setup(tmp_path)
    options = dict(zip(args[2::2], args[3::2], strict=False))
    with pytest.raises(PapersError, match=message.split(" (")[0].replace("(", r"\(")):
        if args[0] == "eval":
            evaluate(args[1], options["--weights"], options["--data"])
        else:
            overrides = override_pairs([options["-r"]]) if "-r" in options else None
            train(args[1], options["--data"], overrides=overrides, out=options["--out"])
    assert not (tmp_path / "run").exists()
