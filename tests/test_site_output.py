"""What `papers site build --out` and `papers build --out` write over: never what they did not write.

A site build renders into a scratch folder inside ``--out`` and renames docs/ and site/ into place at
the end, under an exclusive lock on the folder's marker file (``.papers-site``): a second build of the
folder while one writes is refused (one line, exit 2), a folder holding anything but a previous build
is refused unless ``--force``, and a file is refused. ``papers build --out`` refuses an existing file
unless ``--force``. Every refusal is one line naming the path, exit 2, and writes nothing.
"""

from __future__ import annotations

import fcntl
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from papers.errors import PapersError
from papers.files import write_atomic
from papers.site import ASSETS, MARKER, SiteData, build_site, check_output, site_sources


def snapshot(root: Path) -> dict[str, bytes | None]:
    """Every path under ``root`` (itself included) with a file's bytes, ``None`` for a folder."""
    if not root.exists():
        return {}
    if root.is_file():
        return {".": root.read_bytes()}
    found: dict[str, bytes | None] = {".": None}
    for path in sorted(root.rglob("*")):
        found[path.relative_to(root).as_posix()] = path.read_bytes() if path.is_file() else None
    return found


def one_line_refusal(result, *needles: str) -> None:
    assert result.exit_code == 2, (result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("papers: error: ")
    for needle in needles:
        assert needle in lines[0], lines[0]
    assert "Traceback" not in result.stderr + result.stdout


def site_build(out: Path, *extra: str, cwd: Path, cache: str | None = None) -> subprocess.Popen:
    """``papers site build --out OUT`` in a process of its own, measuring into the session's cache."""
    environment = {**os.environ, "PAPERS_STRICT_PLUGINS": "1", "NO_MKDOCS_2_WARNING": "1"}
    if cache is not None:
        environment["PAPERS_CACHE_DIR"] = cache
    return subprocess.Popen(
        [sys.executable, "-m", "papers", "site", "build", "--out", str(out), *extra],
        cwd=cwd,
        env=environment,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def finished(process: subprocess.Popen) -> tuple[int, str]:
    _, stderr = process.communicate(timeout=600)
    return process.returncode, stderr


def assert_complete_build(out: Path) -> None:
    assert {path.name for path in out.iterdir()} >= {MARKER, "docs", "site", "mkdocs.yml"}
    assert not [path.name for path in out.iterdir() if path.name.startswith(MARKER + ".tmp-")]
    modules = site_sources() / "node_modules"
    for shipped, origin in ASSETS.items():  # the JavaScript, whole
        assert (out / "site" / shipped).read_bytes() == (modules / origin).read_bytes(), shipped
    assert (out / "site" / "index.html").is_file() and (out / "docs" / "index.md").is_file()
    assert (out / "site" / "classification" / "vgg" / "index.html").is_file()


# --- refusals: one line, exit 2, nothing written -----------------------------------------------------


def test_site_build_into_an_existing_file_is_one_line_naming_it(run, tmp_path):
    target = tmp_path / "notes.txt"
    target.write_text("mine\n")
    before = snapshot(tmp_path)
    one_line_refusal(run("site", "build", "--out", str(target)), str(target), "is a file")
    one_line_refusal(run("site", "build", "--out", str(target / "sub")), str(target / "sub"), "is a file")
    one_line_refusal(run("site", "build", "--out", str(target), "--force"), str(target))
    assert snapshot(tmp_path) == before


def test_site_build_refuses_a_folder_that_is_not_a_previous_build(run, tmp_path):
    out = tmp_path / "mine"
    (out / "docs").mkdir(parents=True)
    (out / "docs" / "thesis.md").write_text("years of work\n")
    (out / "notes.txt").write_text("mine\n")
    before = snapshot(tmp_path)
    one_line_refusal(
        run("site", "build", "--out", str(out)), str(out), "not a previous site build", "--force"
    )
    assert snapshot(tmp_path) == before


def test_a_second_build_of_a_folder_while_one_writes_is_refused(run, tmp_path):
    """The lock: a build holds ``flock`` on the marker file; another build of the folder refuses
    at once (it does not wait), before it measures or writes anything."""
    out = tmp_path / "site"
    out.mkdir()
    (out / MARKER).write_text("a build\n")
    handle = os.open(out / MARKER, os.O_RDWR)
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        before = snapshot(tmp_path)
        one_line_refusal(run("site", "build", "--out", str(out)), str(out), "another `papers site build`")
        one_line_refusal(run("site", "build", "--out", str(out), "--force"), "another")
        assert snapshot(tmp_path) == before
    finally:
        os.close(handle)


def test_which_folders_a_site_build_may_replace(tmp_path):
    check_output(tmp_path / "new" / "deeper")  # made by the build
    (tmp_path / "empty").mkdir()
    check_output(tmp_path / "empty")
    built = tmp_path / "built"
    for name in ("docs", "site"):
        (built / name).mkdir(parents=True)
    (built / "mkdocs.yml").write_text("{}")
    (built / MARKER).write_text("")
    (built / (MARKER + ".tmp-abc")).mkdir()  # left by a build that was killed
    check_output(built)
    (built / "notes.txt").write_text("mine")
    with pytest.raises(PapersError, match=r"it holds notes\.txt"):
        check_output(built)
    check_output(built, force=True)
    # a build made before the marker file existed: docs/, site/ and its own mkdocs.yml
    legacy = tmp_path / "legacy"
    (legacy / "docs").mkdir(parents=True)
    config = f'{{"INHERIT": "/x/mkdocs.yml", "docs_dir": "{legacy / "docs"}"}}'
    (legacy / "mkdocs.yml").write_text(config)
    check_output(legacy)
    (legacy / "mkdocs.yml").write_text("site_name: mine\n")
    with pytest.raises(PapersError, match="not a previous site build"):
        check_output(legacy)


def _fail_collect(results=None):
    raise PapersError("the registry failed")


def test_a_failed_build_leaves_no_trace_in_a_new_or_empty_folder(tmp_path, monkeypatch):
    monkeypatch.setattr("papers.site.collect", _fail_collect)
    with pytest.raises(PapersError, match="the registry failed"):
        build_site(tmp_path / "new" / "out")
    assert list(tmp_path.iterdir()) == [], "the folders it made are gone"
    (tmp_path / "empty").mkdir()
    with pytest.raises(PapersError, match="the registry failed"):
        build_site(tmp_path / "empty")
    assert list((tmp_path / "empty").iterdir()) == []


def test_a_failed_build_leaves_the_previous_one_as_it_was(tmp_path, monkeypatch):
    out = tmp_path / "out"
    for name in ("docs", "site"):
        (out / name).mkdir(parents=True)
        (out / name / "index.html").write_text(f"previous {name}\n")
    (out / "mkdocs.yml").write_text("{}\n")
    (out / MARKER).write_text("a build\n")
    before = snapshot(tmp_path)
    monkeypatch.setattr("papers.site.collect", lambda results=None: SiteData(papers=[], topics={}, charts={}))
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "0")  # no `git log` (the one other command a build runs)
    monkeypatch.setattr(
        "papers.site.subprocess.run", lambda *args, **kwargs: subprocess.CompletedProcess(args, 1)
    )
    with pytest.raises(PapersError, match="mkdocs build --strict failed"):
        build_site(out)  # rendered the pages into a scratch folder, then mkdocs failed
    assert snapshot(tmp_path) == before, "no scratch folder left, nothing replaced"


# --- builds ----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def concurrent(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[tuple[int, str]]]:
    """Two builds of one new folder started together."""
    root = tmp_path_factory.mktemp("concurrent")
    cache = str(tmp_path_factory.getbasetemp() / "cache")  # the other tests' (conftest's _environment)
    out = root / "out"
    processes = [site_build(out, cwd=root, cache=cache) for _ in range(2)]
    return out, [finished(process) for process in processes]


def test_two_concurrent_builds_of_one_folder_leave_one_complete_build(concurrent):
    out, outcomes = concurrent
    assert sorted(code for code, _ in outcomes)[0] == 0, outcomes
    for code, stderr in outcomes:
        assert "Traceback" not in stderr
        if code != 0:
            assert code == 2
            errors = [line for line in stderr.splitlines() if line.startswith("papers: ")]
            assert errors == [f"papers: error: {out}: {errors[0].split(': ', 3)[-1]}"]
            assert "another `papers site build` is writing into this folder" in errors[0]
    assert_complete_build(out)


def test_a_previous_build_is_replaced_whole(concurrent):
    out, _ = concurrent
    (out / "docs" / "gone.md").write_text("a paper no longer in the registry\n")
    (out / "site" / "gone").mkdir()
    (out / "site" / "gone" / "index.html").write_text("old\n")
    code, stderr = finished(site_build(out, cwd=out.parent))
    assert code == 0, stderr[-3000:]
    assert_complete_build(out)
    assert not (out / "docs" / "gone.md").exists() and not (out / "site" / "gone").exists()
    assert sorted(path.name for path in out.iterdir()) == sorted([MARKER, "docs", "mkdocs.yml", "site"])


def _fake_mkdocs(command, **kwargs):
    """Stands in for ``mkdocs build``: the site/ folder its configuration names, with one page."""
    config = json.loads(Path(command[command.index("-f") + 1]).read_text())
    Path(config["site_dir"]).mkdir()
    Path(config["site_dir"], "index.html").write_text("new site\n")
    return subprocess.CompletedProcess(command, 0)


def test_force_replaces_docs_and_site_of_another_folder_and_keeps_the_rest(run, tmp_path, monkeypatch):
    out = tmp_path / "mine"
    for name in ("docs", "site"):
        (out / name).mkdir(parents=True)
        (out / name / "stale.md").write_text("stale\n")
    (out / "notes.txt").write_text("mine\n")
    monkeypatch.setattr("papers.site.collect", lambda results=None: SiteData(papers=[], topics={}, charts={}))
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "0")  # no `git log` (the one other command a build runs)
    monkeypatch.setattr("papers.site.subprocess.run", _fake_mkdocs)
    build_site(out, force=True)
    assert sorted(path.name for path in out.iterdir()) == [MARKER, "docs", "mkdocs.yml", "notes.txt", "site"]
    assert (out / "site" / "index.html").read_text() == "new site\n"
    assert (out / "docs" / "index.md").is_file() and (out / "docs" / "assets" / "vendor").is_dir()
    assert not (out / "docs" / "stale.md").exists() and not (out / "site" / "stale.md").exists()
    assert (out / "notes.txt").read_text() == "mine\n"
    config = json.loads((out / "mkdocs.yml").read_text())
    assert config["docs_dir"] == str(out / "docs") and config["site_dir"] == str(out / "site")
    # still not only a site build: a build without --force is refused again
    one_line_refusal(run("site", "build", "--out", str(out)), "it holds notes.txt")


# --- papers build --out -----------------------------------------------------------------------------


def test_build_out_refuses_an_existing_file_unless_forced(run, tmp_path):
    weights = tmp_path / "lenet5.safetensors"
    weights.write_bytes(b"my trained weights")
    one_line_refusal(run("build", "lenet5", "--out", str(weights)), str(weights), "--force")
    assert weights.read_bytes() == b"my trained weights"
    assert [path.name for path in tmp_path.iterdir()] == [weights.name]
    folder = tmp_path / "folder.safetensors"
    folder.mkdir()
    one_line_refusal(run("build", "lenet5", "--out", str(folder)), str(folder), "is a folder")
    assert list(folder.iterdir()) == []
    result = run("build", "lenet5", "--out", str(weights), "--force")
    assert result.exit_code == 0, result.stderr
    assert weights.read_bytes() != b"my trained weights"
    assert sorted(path.name for path in tmp_path.iterdir()) == [folder.name, weights.name]


def test_an_atomic_write_that_must_not_overwrite_never_does(tmp_path):
    target = tmp_path / "w.safetensors"
    target.write_bytes(b"first")
    with pytest.raises(FileExistsError):
        write_atomic(target, b"second", overwrite=False)
    assert target.read_bytes() == b"first"
    assert [path.name for path in tmp_path.iterdir()] == [target.name], "no temporary file left"
    write_atomic(tmp_path / "new", b"new", overwrite=False)
    assert (tmp_path / "new").read_bytes() == b"new"
