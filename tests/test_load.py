"""Reading spec files: the safe loader and its limits. Every failure is a SpecError naming the file."""

from __future__ import annotations

import pytest

from papers.errors import SpecError
from papers.load import MAX_CACHE_BYTES, dump_spec, load_spec_file, load_spec_text, read_yaml
from papers.spec import validate_spec
from tests.conftest import VGG_SPEC, minimal_spec, write_spec

ALIAS_BOMB = "\n".join(
    ["a: &a [x, x, x, x, x, x, x, x, x]"]
    + [
        f"{chr(98 + i)}: &{chr(98 + i)} [*{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, "
        f"*{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}]"
        for i in range(8)
    ]
)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("id: [unclosed", "not valid YAML"),
        ("!!python/object/apply:os.system ['echo hacked']", "not valid YAML"),
        ("a: !!python/name:os.system x", "not valid YAML"),
        (ALIAS_BOMB, "alias bomb"),
        ("a:\n" + "- " * 5000 + "x", "deeper|not valid"),
        ("[" * 5000 + "]" * 5000, "deeper|not valid YAML"),
        ("x: " + "a" * (5 * 1024 * 1024), "larger than"),
    ],
    ids=["malformed", "unsafe-tag", "unsafe-name", "alias-bomb", "deep-block", "deep-flow", "5MB-string"],
)
def test_hostile_yaml_is_refused_with_a_message(text, message):
    with pytest.raises(SpecError, match=message) as caught:
        read_yaml(text, file="bad.yaml")
    assert caught.value.file == "bad.yaml"


def test_deep_nesting_in_a_mapping_is_refused():
    text = "a: " + "{b: " * 200 + "1" + "}" * 200
    with pytest.raises(SpecError, match=r"deeper than|not valid"):
        read_yaml(text)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "empty"),
        (b"\x00\x01\x02\xff\xfe garbage", "NUL|UTF-8"),
        (b"\xc3\x28 not utf8", "UTF-8"),
        (b"- a\n- b\n", "mapping at the top level, this file is a list"),
        (b"42\n", "mapping at the top level, this file is a int"),
    ],
)
def test_files_that_are_not_a_spec_mapping_are_refused(tmp_path, content, message):
    path = tmp_path / "spec.yaml"
    path.write_bytes(content)
    with pytest.raises(SpecError, match=message) as caught:
        load_spec_file(path)
    assert caught.value.file == str(path)


def test_missing_file_is_a_spec_error(tmp_path):
    with pytest.raises(SpecError, match="cannot read"):
        load_spec_file(tmp_path / "nope.yaml")


def test_yaml_1_1_exponent_without_dot_is_refused_not_coerced(tmp_path):
    data = minimal_spec()
    text = write_spec(tmp_path / "s.yaml", data).read_text()
    text += "hyperparameters:\n  optimizer: {name: sgd, lr: 1e-2}\n"
    with pytest.raises(SpecError, match=r"hyperparameters\.optimizer\.lr"):
        load_spec_text(text, file="s.yaml")


def test_the_vgg_spec_round_trips_through_yaml():
    spec = load_spec_file(VGG_SPEC)
    assert load_spec_text(dump_spec(spec)) == spec


def test_validate_spec_reports_field_paths():
    data = minimal_spec()
    data["variants"][0]["id"] = "Bad Id"
    with pytest.raises(SpecError) as caught:
        validate_spec(data, file="x.yaml")
    assert caught.value.field == "variants[0].id"
    assert "x.yaml: variants[0].id:" in str(caught.value)


def test_parsed_specs_are_cached_and_the_cache_never_changes_the_result(tmp_path, monkeypatch):
    monkeypatch.setenv("PAPERS_CACHE_DIR", str(tmp_path))
    raw = VGG_SPEC.read_bytes()
    first = load_spec_text(raw)
    entries = list((tmp_path / "yaml").glob("*.json"))
    assert len(entries) == 1
    assert load_spec_text(raw) == first
    entries[0].write_text("{ broken")  # a damaged entry is ignored, not trusted
    assert load_spec_text(raw) == first


@pytest.mark.parametrize(
    "entry",
    [b'{"id": 3}', b"{}", b"[]", b"null", b'"vgg"'],
    ids=["wrong-type", "empty-object", "list", "null", "string"],
)
def test_a_cache_entry_that_is_json_but_no_spec_is_ignored_and_rewritten(tmp_path, monkeypatch, entry):
    monkeypatch.setenv("PAPERS_CACHE_DIR", str(tmp_path))
    raw = VGG_SPEC.read_bytes()
    first = load_spec_text(raw, file="vgg.yaml")
    [cached] = (tmp_path / "yaml").glob("*.json")
    good = cached.read_bytes()
    cached.write_bytes(entry)  # damaged, or written by someone else: the file is the truth
    assert load_spec_text(raw, file="vgg.yaml") == first
    assert cached.read_bytes() == good, "the entry is rewritten from the file"


def test_an_oversized_cache_entry_is_not_read(tmp_path, monkeypatch):
    monkeypatch.setenv("PAPERS_CACHE_DIR", str(tmp_path))
    raw = VGG_SPEC.read_bytes()
    first = load_spec_text(raw)
    [cached] = (tmp_path / "yaml").glob("*.json")
    good = cached.read_bytes()
    cached.write_bytes(good + b" " * MAX_CACHE_BYTES)  # valid JSON still, but no spec file gives it
    assert load_spec_text(raw) == first
    assert cached.read_bytes() == good, "ignored and rewritten, never read whole"


def test_bad_specs_write_nothing_to_the_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("PAPERS_CACHE_DIR", str(tmp_path))
    with pytest.raises(SpecError):
        load_spec_text(b"id: 3\n")
    assert not (tmp_path / "yaml").exists()


def test_documents_json_cannot_hold_are_not_cached(tmp_path, monkeypatch):
    monkeypatch.setenv("PAPERS_CACHE_DIR", str(tmp_path))
    data = minimal_spec()
    data["graphs"]["net"]["params"]["when"] = "2020-01-01"
    text = write_spec(tmp_path / "s.yaml", data).read_text().replace("'2020-01-01'", "2020-01-01")
    with pytest.raises(SpecError):  # YAML 1.1 reads an unquoted date as a date, which is no Value
        load_spec_text(text)
    assert not (tmp_path / "yaml").exists()
