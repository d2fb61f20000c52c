"""The expression language: what it computes, and everything it refuses."""

import pytest

from papers.errors import ExpressionError
from papers.expr import evaluate, substitute


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("width * 4", 256),
        ("2 if i == 0 else 1", 2),
        ("stages[s][1]", 5),
        ("len(stages)", 2),
        ("width // 3 + 1", 22),
        ("-width ** 2", -4096),
        ("max(stages[0]) - min(stages[1])", -1),
        ("i == 0 and width > 10", True),
        ("'layer' + str(i + 1)", "layer1"),
        ("range(3)", [0, 1, 2]),
        ("[width, width * 2][1]", 128),
        ("round(width / 3)", 21),
    ],
)
def test_evaluates_arithmetic_over_parameters(source, expected):
    scope = {"width": 64, "i": 0, "s": 1, "stages": [[1, 2], [3, 5]]}
    assert evaluate(source, scope) == expected


@pytest.mark.parametrize(
    "source",
    [
        "__import__('os')",
        "open('/etc/passwd')",
        "width.__class__",
        "(lambda: 1)()",
        "[x for x in range(3) for y in range(2)]",
        "[x for (x, y) in [[1, 2]]]",
        "exec('1')",
        "eval('1')",
        "getattr(width, 'real')",
        "{'a': 1}",
    ],
)
def test_refuses_anything_outside_the_whitelist(source):
    with pytest.raises(ExpressionError):
        evaluate(source, {"width": 1})


def test_unknown_name_is_reported_with_the_known_ones():
    with pytest.raises(ExpressionError, match=r"'depth'.*known: width"):
        evaluate("depth * 2", {"width": 1})


@pytest.mark.parametrize(
    "source", ["10 ** 100", "2 ** 2 ** 10", "[0] * 100000", "'a' * 100000", "range(10 ** 6)"]
)
def test_refuses_results_too_large_to_be_a_size(source):
    with pytest.raises(ExpressionError):
        evaluate(source, {})


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("['branch' + str(i) for i in range(3)]", ["branch0", "branch1", "branch2"]),
        ("[w * 2 for w in widths if w > 16]", [64, 128]),
        ("[[w, i] for i in range(2)]", [[32, 0], [32, 1]]),
    ],
)
def test_list_comprehensions_build_lists_from_parameters(source, expected):
    assert evaluate(source, {"widths": [16, 32, 64], "w": 32}) == expected


@pytest.mark.parametrize(
    "source",
    [
        "[[0] * 9000 for i in range(3)]",  # the result outgrows the size bound as it is built
        "[0 for x in range(10000) if [0 for y in range(10000)]]",  # small result, 10^8 steps
        "[i for i in 5]",
    ],
)
def test_comprehensions_are_bounded_in_size_and_steps(source):
    with pytest.raises(ExpressionError):
        evaluate(source, {})


def test_string_formatting_is_not_an_operator():
    with pytest.raises(ExpressionError):
        evaluate("'%999999999d' % 1", {})


def test_errors_in_evaluation_become_expression_errors():
    with pytest.raises(ExpressionError, match="by zero"):
        evaluate("1 // 0", {})
    with pytest.raises(ExpressionError):
        evaluate("stages[9]", {"stages": [1]})


def test_substitute_evaluates_whole_templates_and_interpolates_partial_ones():
    scope = {"i": 2, "w": 16}
    assert substitute("${w * 2}", scope) == 32
    assert substitute("layer${i + 1}", scope) == "layer3"
    assert substitute(["${w}", 3, "plain"], scope) == [16, 3, "plain"]
    assert substitute("no template", scope) == "no template"
