"""Hostile specs: names that would run as code, and small files that would exhaust the machine.

torch.fx pastes names into the source of ``forward``; every name that reaches it is checked after
expansion, whatever produced it. Expressions and repeats are bounded before values are built; the
bombs run in a forked child under a memory limit, with a generous timeout only against hangs (how
long a refusal takes is a ``make bench`` row, not an assertion here).
"""

from __future__ import annotations

import json
import os
import resource
import select
import signal
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from papers.errors import ExpressionError, GraphError, PapersError
from papers.expr import MAX_SEQUENCE_LENGTH, evaluate
from papers.graph import MAX_NODES, MAX_STEPS, RESERVED, expand
from papers.ops import Catalogue
from papers.spec import validate_spec
from tests.conftest import minimal_spec, pip_install, write_package, write_spec

MARKER = "/tmp/papers-injection-ran"
# A name that, pasted into fx's `getattr(self, "...")`, would close the string and run a command.
INJECTION = "${'x\")\\rimport os\\ros.system(\\'touch " + MARKER + "\\')\\r#'}"


def tiny(**change: Any) -> dict[str, Any]:
    data = minimal_spec()
    data["graphs"]["net"].update(change)
    return data


def with_first_name(name: str) -> dict[str, Any]:
    data = minimal_spec()
    data["graphs"]["net"]["nodes"][0]["name"] = name
    return data


NAME_CASES = {
    "injection": (with_first_name(INJECTION), "letters, digits and underscores"),
    "quote": (with_first_name("${'a\"b'}"), "letters, digits and underscores"),
    "training": (with_first_name("training"), "reserved"),
    "forward": (with_first_name("forward"), "reserved"),
    "nested-forward": (with_first_name("head.forward"), "reserved"),
    "keyword": (with_first_name("${'lambda'}"), "reserved"),
    "hyphen": (with_first_name("${'a-b'}"), "letters, digits and underscores"),
    "underscore": (with_first_name("${'_modules'}"), "letters, digits and underscores"),
    "input-name": (tiny(inputs={'a"b': [3, 16, 16]}), "letters, digits and underscores"),
    "feature-name": (
        tiny(
            nodes=[
                {"name": "conv", "op": "conv2d", "args": {"out_channels": 4, "kernel_size": 3}},
                {"name": "relu", "op": "relu", "feature": "${'a\")'}"},
            ]
        ),
        "letters, digits and underscores",
    ),
}


@pytest.fixture(autouse=True)
def _no_marker():
    Path(MARKER).unlink(missing_ok=True)
    yield
    assert not Path(MARKER).exists(), "spec text ran as Python"


@pytest.mark.parametrize("case", sorted(NAME_CASES))
def test_names_that_cannot_be_module_paths_are_refused_in_validate_and_build(
    run, tmp_path, case, monkeypatch
):
    data, message = NAME_CASES[case]
    path = write_spec(tmp_path / "hostile.yaml", data)
    monkeypatch.chdir(tmp_path)
    result = run("validate", str(path))
    assert result.exit_code == 2, result.stdout
    assert len(result.stderr.strip().splitlines()) == 1 and message in result.stderr
    assert str(path) in result.stderr and "graphs.net" in result.stderr
    with pytest.raises(PapersError, match=message):
        expand(validate_spec(data), "net", {}, Catalogue())


def test_reserved_names_are_every_public_attribute_of_a_built_model():
    from torch import fx

    model = fx.GraphModule({}, fx.Graph())
    public = {name for name in set(dir(model)) | set(vars(model)) if not name.startswith("_")}
    assert public <= RESERVED


def test_numbered_and_dotted_names_still_build():
    data = with_first_name("stem.conv1")
    flat = expand(validate_spec(data), "net", {}, Catalogue())
    assert flat.nodes[0].name == "stem.conv1"


def test_the_injection_through_a_plugin_package_runs_nothing(tmp_path):
    """A third-party plugin that only returns a YAML file: build refuses it, nothing runs."""
    import subprocess
    import sys

    import yaml

    data = with_first_name(INJECTION)
    data["id"], data["variants"][0]["id"] = "hostile", "hostile8"
    code = (
        "from importlib.resources import files\n\nfrom papers.hookspecs import hookimpl\n\n\n"
        "@hookimpl\ndef papers_specs():\n    return [files('hostile_plugin') / 'hostile.yaml']\n"
    )
    source = write_package(
        tmp_path / "src",
        "hostile_plugin",
        "hostile-plugin",
        code,
        data={"hostile.yaml": yaml.safe_dump(data)},
    )
    target = pip_install(source, tmp_path / "site-packages")
    environment = {k: v for k, v in os.environ.items() if not k.startswith("PAPERS_")}
    environment.update(PYTHONPATH=str(target), PAPERS_CACHE_DIR=str(tmp_path / "cache"))
    for command in (["build", "hostile8"], ["build", "hostile8", "--out", str(tmp_path / "w.safetensors")]):
        result = subprocess.run(
            [sys.executable, "-m", "papers", *command],
            capture_output=True,
            text=True,
            env=environment,
            cwd=tmp_path,
        )
        assert result.returncode == 2, result.stderr
        assert "Traceback" not in result.stderr
        assert "letters, digits and underscores" in result.stderr
    assert not (tmp_path / "w.safetensors").exists()


# -- bombs -------------------------------------------------------------------------------------

MEMORY_HEADROOM = 512 * 1024 * 1024


def _in_limited_child(function, *args: Any, timeout: float = 120.0) -> str:
    """Run ``function(*args)`` in a forked child whose address space may grow by 512 MiB at most;
    return the error class it raised (or "ok", or "killed" by the limit, or "hung")."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child
        os.close(read)
        outcome = "ok"
        try:
            with open("/proc/self/statm") as statm:
                pages = int(statm.read().split()[0])
            limit = pages * os.sysconf("SC_PAGE_SIZE") + MEMORY_HEADROOM
            resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
            function(*args)
        except MemoryError:
            outcome = "MemoryError"
        except BaseException as error:
            outcome = type(error).__name__
        os.write(write, outcome.encode())
        os._exit(0)
    os.close(write)
    ready, _, _ = select.select([read], [], [], timeout)
    if not ready:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        os.close(read)
        return "hung"
    outcome = os.read(read, 100).decode() or "killed"
    os.close(read)
    os.waitpid(pid, 0)
    return outcome


def _evaluate(source: str) -> None:
    evaluate(source, {"n": 10_000})


def _expand(data: dict[str, Any]) -> None:
    expand(validate_spec(data), "net", {}, Catalogue())


@pytest.mark.parametrize(
    "source",
    [
        "str([[[1] * 10000] * 10000] * 10000)",
        "len(sum([[1] * 10000] * 10000, []))",
        "[[1] * n] * n",
        "len(str([range(n)] * n))",
        "[[[0] * 100] * 100] * 100",
        "'ab' * 6000",
        "[range(n)] + [range(n)]",
        "max([[1] * 9000, [1] * 9000])",
    ],
)
def test_expression_bombs_are_refused_before_their_values_are_built(source):
    assert _in_limited_child(_evaluate, source) == "ExpressionError"


def _list_bomb(depth: int, width: int) -> str:
    source = "1"
    for _ in range(depth):
        source = f"[{source}] * {width}"
    return source


@given(
    depth=st.integers(1, 4),
    width=st.integers(2, 10_000),
    wrap=st.sampled_from(["{0}", "str({0})", "len({0})", "len(str({0}))", "{0} + {0}", "max({0}, {0})"]),
)
def test_nested_repetitions_are_bounded_by_their_total_size(depth, width, wrap):
    source = wrap.format(_list_bomb(depth, width))
    total = width**depth * (2 if "+" in wrap else 1)
    if total <= MAX_SEQUENCE_LENGTH // 50:
        evaluate(source, {})  # small values are fine whatever their shape
    elif total > MAX_SEQUENCE_LENGTH:
        assert _in_limited_child(_evaluate, source) == "ExpressionError"


def _nested_repeats(counts: list[int], when: str | None) -> dict[str, Any]:
    body: list[dict[str, Any]] = [{"op": "relu", **({"when": when} if when else {})}]
    for depth, count in enumerate(reversed(counts)):
        body = [{"repeat": count, "as": f"v{depth}", "body": body}]
    return tiny(nodes=body)


@settings(max_examples=20)  # each example may walk up to MAX_STEPS nodes (half a second)
@given(
    counts=st.lists(st.integers(50, 10_000), min_size=2, max_size=4),
    when=st.sampled_from([None, "False", "1 == 2"]),
)
def test_repeat_bombs_are_refused_before_they_expand(counts, when):
    total = 1
    for count in counts:
        total *= count
    outcome = _in_limited_child(_expand, _nested_repeats(counts, when))
    if total > MAX_STEPS or (when is None and total > MAX_NODES):
        assert outcome == "GraphError"
    else:
        assert outcome in ("ok", "GraphError")  # finished either way: neither hung nor out of memory


def test_many_single_node_blocks_are_refused_by_the_node_limit():
    data = tiny(
        nodes=[
            {
                "repeat": 300,
                "as": "i",
                "body": [{"repeat": 300, "as": "j", "body": [{"block": "b", "name": "b${i}_${j}"}]}],
            }
        ]
    )
    data["blocks"] = {"b": {"nodes": [{"op": "relu"}]}}
    assert len(json.dumps(data)) < 2_000
    assert _in_limited_child(_expand, data) == "GraphError"
    with pytest.raises(GraphError, match=f"more than {MAX_NODES} nodes"):
        _expand(data)


def test_sum_adds_numbers_only():
    assert evaluate("sum([1, 2, 3])", {}) == 6
    with pytest.raises(ExpressionError, match="list of numbers"):
        evaluate("sum([[1], [2]])", {})
