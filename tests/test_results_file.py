"""Results files: several writers at once lose nothing, values are range-checked, and `papers eval
--out` refuses a bad file before it evaluates and shows its measurement before it writes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from pydantic import ValidationError

from papers.errors import PapersError
from papers.results import Measured, ResultsFile, read_results, write_results

LABELS = {"dataset": "ImageNet (ILSVRC-2012)", "split": "val", "protocol": "single_crop"}

WRITER = """
import sys, time
from pathlib import Path
from papers.results import Measured, write_results
path, name, count, go = sys.argv[1], sys.argv[2], int(sys.argv[3]), Path(sys.argv[4])
while not go.exists():
    time.sleep(0.001)
for i in range(count):
    write_results(path, [Measured(variant=f"{name}-{i}", metric="top1_accuracy", value=float(i), images=10)])
"""


def test_four_processes_writing_one_file_keep_every_result(tmp_path):
    path, go = tmp_path / "results.json", tmp_path / "go"
    write_results(path, [Measured(variant="before", metric="top5_accuracy", value=90.0)])
    environment = {**os.environ, "OMP_NUM_THREADS": "1"}
    writers = [
        subprocess.Popen([sys.executable, "-c", WRITER, str(path), f"p{n}", "30", str(go)], env=environment)
        for n in range(4)
    ]
    time.sleep(0.5)  # let them import, so that they all start writing at once
    go.touch()
    assert [w.wait(timeout=120) for w in writers] == [0, 0, 0, 0]
    variants = [m.variant for m in read_results(path).results]
    assert len(variants) == 121 and len(set(variants)) == 121
    assert {f"p{n}-{i}" for n in range(4) for i in range(30)} | {"before"} == set(variants)
    assert not list(tmp_path.glob(".results.json.tmp-*")), "no temporary left behind"


def test_a_result_with_the_same_labels_is_replaced_and_others_kept(tmp_path):
    path = tmp_path / "results.json"
    write_results(path, [Measured(variant="a", metric="top1_accuracy", value=50.0, **LABELS)])
    write_results(path, [Measured(variant="b", metric="top1_accuracy", value=60.0, **LABELS)])
    write_results(path, [Measured(variant="a", metric="top1_accuracy", value=70.0, **LABELS)])
    assert {(m.variant, m.value) for m in read_results(path).results} == {("a", 70.0), ("b", 60.0)}


def test_a_dead_writers_temporary_is_removed_and_a_live_ones_kept(tmp_path):
    path = tmp_path / "results.json"
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True)
    dead, live = (
        tmp_path / f".results.json.tmp-{int(gone.stdout)}",
        tmp_path / f".results.json.tmp-{os.getppid()}",
    )
    dead.write_text("half a file")
    live.write_text("being written")
    write_results(path, [Measured(variant="a", metric="top1_accuracy", value=50.0)])
    assert not dead.exists() and live.exists()


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"metric": "top1_accuracy", "value": -500.0}, "must lie in [0, 100], not -500"),
        ({"metric": "top5_error", "value": 100.5}, "must lie in [0, 100]"),
        ({"metric": "top1_error_change", "value": -101.0}, "must lie in [-100, 100]"),
        ({"metric": "top1_accuracy", "value": 50.0, "images": 0}, "greater than or equal to 1"),
        ({"metric": "params", "value": 5.0}, "not measured in percent"),
        ({"metric": "top1_accuracy", "value": 50.0, "variant": ""}, "at least 1 character"),
    ],
)
def test_values_are_range_checked(tmp_path, fields, message):
    data = {"variant": "resnet50", **fields}
    with pytest.raises(ValidationError, match=message.replace("[", r"\[")):
        Measured(**data)
    path = tmp_path / "results.json"
    path.write_text(json.dumps({"schema_version": 1, "results": [data]}))
    with pytest.raises(PapersError, match=r"results\[0\]\.") as caught:
        read_results(path)
    assert str(path) in str(caught.value) and message.split(" not")[0].split("[")[0] in str(caught.value)


def test_values_in_range_are_accepted():
    for metric, value in (("top1_accuracy", 0.0), ("top5_accuracy", 100.0), ("top1_error_change", -3.5)):
        Measured(variant="resnet50", metric=metric, value=value, images=1)


# -- `papers eval --out` ------------------------------------------------------------------------


@pytest.fixture
def weights(tmp_path: Path) -> Path:
    from safetensors.torch import save_file

    import papers

    path = tmp_path / "lenet5.safetensors"
    save_file(papers.build_model("lenet5").state_dict(), str(path))
    return path


def _eval(weights: Path, out: Path) -> list[str]:
    return ["eval", "lenet5", "--weights", str(weights), "--data", "builtin:digits", "--out", str(out)]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ('{"results": [{"variant": "x", "metric": "top1_accuracy", "value": -500}]}', "results[0].value"),
        ("not json", "Invalid JSON"),
        ('{"results": [], "extra": 1}', "extra: unknown field"),
    ],
)
def test_eval_refuses_a_bad_results_file_before_evaluating(
    run, weights, tmp_path, monkeypatch, content, message
):
    import papers.evaluate

    def never(*args, **kwargs):
        raise AssertionError("evaluated before the results file was checked")

    monkeypatch.setattr(papers.evaluate, "evaluate", never)
    bad = tmp_path / "bad.json"
    bad.write_text(content)
    result = run(*_eval(weights, bad))
    assert result.exit_code == 2, result.stderr
    assert result.stdout == ""
    assert result.stderr.count("\n") == 1 and f"{bad}: " in result.stderr and message in result.stderr
    assert bad.read_text() == content and not (tmp_path / ".bad.json.lock").exists(), "nothing written"


def test_eval_refuses_a_results_file_in_a_missing_folder_before_evaluating(
    run, weights, tmp_path, monkeypatch
):
    import papers.evaluate

    monkeypatch.setattr(papers.evaluate, "evaluate", lambda *a, **k: pytest.fail("evaluated"))
    result = run(*_eval(weights, tmp_path / "nowhere" / "results.json"))
    assert result.exit_code == 2 and "no such folder" in result.stderr and result.stderr.count("\n") == 1


def test_eval_shows_its_measurement_before_writing(run, weights, tmp_path, monkeypatch):
    import papers.results

    def broken(path, measured):
        raise PapersError("cannot write results: disk full", file=str(path))

    monkeypatch.setattr(papers.results, "write_results", broken)
    result = run(*_eval(weights, tmp_path / "results.json"))
    assert result.exit_code == 2
    assert "lenet5: top-1 " in result.stdout, "the accuracy is shown although the file could not be written"
    assert "disk full" in result.stderr


def test_eval_adds_to_a_results_file(run, weights, tmp_path):
    out = tmp_path / "results.json"
    out.write_text(
        ResultsFile(results=[Measured(variant="x", metric="top1_accuracy", value=1.0)]).model_dump_json()
    )
    result = run(*_eval(weights, out))
    assert result.exit_code == 0, result.stderr
    assert result.stdout.splitlines()[-1] == f"results: {out}"
    assert {m.variant for m in read_results(out).results} == {"x", "lenet5"}
