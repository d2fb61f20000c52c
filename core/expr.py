"""A small arithmetic language for graph arguments, evaluated by walking a whitelisted AST.

Specs compute channel widths, strides and repeat counts from their parameters (``${width * 4}``,
``repeat: len(stages)``). Expressions are parsed with :mod:`ast` and evaluated node by node; only
literals, the names in scope, arithmetic, comparisons, conditionals, indexing and a few pure
functions are allowed. Nothing is ever passed to ``eval`` or ``exec``.
"""

from __future__ import annotations

import ast
import operator
import re
from collections.abc import Callable, Mapping
from functools import lru_cache
from typing import Any

from papers.errors import ExpressionError

MAX_EXPRESSION_LENGTH = 400
MAX_INT_BITS = 128
MAX_SEQUENCE_LENGTH = 10_000
MAX_STEPS = 200_000
"""Nodes of the syntax tree one evaluation may visit (a comprehension visits its body per item)."""
"""The most elements a value may hold, counted through nested lists (a string counts its characters):
sizes are checked before a repetition or concatenation builds its result, so no value ever exceeds it."""

_BINARY: dict[type, Callable[[Any, Any], Any]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
    ast.Pow: operator.pow,
}
_UNARY: dict[type, Callable[[Any], Any]] = {
    ast.USub: operator.neg,
    ast.UAdd: operator.pos,
    ast.Not: operator.not_,
}
_COMPARE: dict[type, Callable[[Any, Any], Any]] = {
    ast.Eq: operator.eq,
    ast.NotEq: operator.ne,
    ast.Lt: operator.lt,
    ast.LtE: operator.le,
    ast.Gt: operator.gt,
    ast.GtE: operator.ge,
    ast.In: lambda a, b: a in b,
    ast.NotIn: lambda a, b: a not in b,
}


def _sum(values: Any) -> Any:
    """``sum`` of numbers only: adding lists would build quadratic intermediate copies."""
    if not isinstance(values, (list, tuple)) or not all(
        isinstance(v, (int, float)) and not isinstance(v, bool) for v in values
    ):
        raise TypeError("sum() takes a list of numbers")
    return sum(values)


FUNCTIONS: dict[str, Callable[..., Any]] = {
    "len": len,
    "min": min,
    "max": max,
    "sum": _sum,
    "abs": abs,
    "int": int,
    "float": float,
    "round": round,
    "str": str,
    "range": lambda *a: list(range(*a)),
}

_TEMPLATE = re.compile(r"\$\{([^{}]*)\}")


def evaluate(source: str, scope: Mapping[str, Any]) -> Any:
    """Evaluate one expression with the names in ``scope``."""
    tree = _parse(source)
    try:
        return _check(_Evaluator(scope, source).visit(tree.body))
    except ExpressionError:
        raise
    except (ArithmeticError, TypeError, ValueError, IndexError, KeyError) as exc:
        raise ExpressionError(f"expression {source!r} failed: {exc}") from None


def substitute(value: Any, scope: Mapping[str, Any]) -> Any:
    """Resolve ``${...}`` in a value: a string that is one template becomes the expression's value,
    templates inside a longer string are interpolated, lists are resolved element by element."""
    if isinstance(value, str):
        whole = _TEMPLATE.fullmatch(value)
        if whole:
            return evaluate(whole.group(1), scope)
        if "${" in value:
            return _TEMPLATE.sub(lambda m: str(evaluate(m.group(1), scope)), value)
        return value
    if isinstance(value, list):
        return [substitute(item, scope) for item in value]
    return value


@lru_cache(maxsize=4096)
def _parse(source: str) -> ast.Expression:
    if len(source) > MAX_EXPRESSION_LENGTH:
        raise ExpressionError(f"expression is longer than {MAX_EXPRESSION_LENGTH} characters")
    try:
        return ast.parse(source.strip(), mode="eval")
    except SyntaxError as exc:
        raise ExpressionError(f"expression {source!r} is not valid: {exc.msg}") from None


def _check(value: Any) -> Any:
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, int) and value.bit_length() > MAX_INT_BITS:
        raise ExpressionError(f"integer result exceeds {MAX_INT_BITS} bits")
    if isinstance(value, (list, tuple, str)) and size(value) > MAX_SEQUENCE_LENGTH:
        raise ExpressionError(f"sequence result holds more than {MAX_SEQUENCE_LENGTH} elements")
    return value


def size(value: Any, limit: int = MAX_SEQUENCE_LENGTH) -> int:
    """Elements in ``value``, counted through nested lists (a string counts its characters).

    Counting stops once it passes ``limit``, so the cost is bounded whatever the value shares: a
    list holding one inner list 10,000 times counts as 10,000 times the inner list.
    """
    if isinstance(value, str):
        return len(value)
    if not isinstance(value, (list, tuple)):
        return 1
    total = len(value)
    for item in value:
        if total > limit:
            break
        if isinstance(item, (list, tuple, str)):
            total += size(item, limit - total)
    return total


def _too_large_power(base: Any, exponent: Any) -> bool:
    if not isinstance(exponent, (int, float)):
        return False
    return abs(exponent) > 64 or (isinstance(base, int) and abs(base).bit_length() * exponent > MAX_INT_BITS)


class _Evaluator:
    def __init__(self, scope: Mapping[str, Any], source: str):
        self.scope = scope
        self.source = source
        self.steps = 0

    def visit(self, node: ast.AST) -> Any:
        self.steps += 1
        if self.steps > MAX_STEPS:
            raise ExpressionError(f"expression {self.source!r} takes more than {MAX_STEPS:,} steps")
        method = getattr(self, f"visit_{type(node).__name__}", None)
        if method is None:
            raise ExpressionError(
                f"expression {self.source!r} uses {type(node).__name__}, which is not allowed"
            )
        return _check(method(node))

    def visit_Constant(self, node: ast.Constant) -> Any:
        if not isinstance(node.value, (int, float, str, bool, type(None))):
            raise ExpressionError(f"expression {self.source!r} has an unsupported literal")
        return node.value

    def visit_Name(self, node: ast.Name) -> Any:
        if node.id in ("True", "False", "None"):
            return {"True": True, "False": False, "None": None}[node.id]
        if node.id not in self.scope:
            known = ", ".join(sorted(self.scope)) or "none"
            raise ExpressionError(
                f"expression {self.source!r} names {node.id!r}, which is not a parameter (known: {known})"
            )
        return self.scope[node.id]

    def visit_BinOp(self, node: ast.BinOp) -> Any:
        op = _BINARY.get(type(node.op))
        if op is None:
            raise ExpressionError(f"operator {type(node.op).__name__} is not allowed")
        left, right = self.visit(node.left), self.visit(node.right)
        if isinstance(node.op, ast.Pow) and _too_large_power(left, right):
            raise ExpressionError(f"expression {self.source!r}: power too large")
        if isinstance(node.op, ast.Mod) and not isinstance(left, (int, float)):
            raise ExpressionError(f"expression {self.source!r}: % applies to numbers only")
        if isinstance(node.op, ast.Mult):  # bound a repetition before building it
            sequence, count = (left, right) if isinstance(left, (list, str)) else (right, left)
            repeated = isinstance(sequence, (list, str)) and isinstance(count, int)
            if repeated and count * max(1, size(sequence)) > MAX_SEQUENCE_LENGTH:
                raise ExpressionError(f"sequence result holds more than {MAX_SEQUENCE_LENGTH} elements")
        joined = isinstance(node.op, ast.Add) and all(isinstance(v, (list, str)) for v in (left, right))
        if joined and size(left) + size(right) > MAX_SEQUENCE_LENGTH:
            raise ExpressionError(f"sequence result holds more than {MAX_SEQUENCE_LENGTH} elements")
        return op(left, right)

    def visit_UnaryOp(self, node: ast.UnaryOp) -> Any:
        op = _UNARY.get(type(node.op))
        if op is None:
            raise ExpressionError(f"operator {type(node.op).__name__} is not allowed")
        return op(self.visit(node.operand))

    def visit_BoolOp(self, node: ast.BoolOp) -> Any:
        if isinstance(node.op, ast.And):
            result: Any = True
            for value in node.values:
                result = self.visit(value)
                if not result:
                    return result
            return result
        result = False
        for value in node.values:
            result = self.visit(value)
            if result:
                return result
        return result

    def visit_Compare(self, node: ast.Compare) -> Any:
        left = self.visit(node.left)
        for op, comparator in zip(node.ops, node.comparators, strict=True):
            right = self.visit(comparator)
            if not _COMPARE[type(op)](left, right):
                return False
            left = right
        return True

    def visit_IfExp(self, node: ast.IfExp) -> Any:
        return self.visit(node.body) if self.visit(node.test) else self.visit(node.orelse)

    def visit_Subscript(self, node: ast.Subscript) -> Any:
        container = self.visit(node.value)
        if not isinstance(container, (list, tuple, str)):
            raise ExpressionError(f"expression {self.source!r} indexes a {type(container).__name__}")
        return container[self.visit(node.slice)]

    def visit_Slice(self, node: ast.Slice) -> slice:
        parts = (node.lower, node.upper, node.step)
        return slice(*(None if part is None else self.visit(part) for part in parts))

    def visit_List(self, node: ast.List) -> list:
        return [self.visit(element) for element in node.elts]

    visit_Tuple = visit_List

    def visit_ListComp(self, node: ast.ListComp) -> list:
        """``[f(x) for x in xs if c(x)]``: one loop over a list, a name as its variable (ASPP's inputs:
        ``['branch' + str(i) for i in range(4)]``)."""
        if len(node.generators) != 1:
            raise ExpressionError(f"expression {self.source!r}: a list comprehension takes one `for`")
        loop = node.generators[0]
        if not isinstance(loop.target, ast.Name) or loop.is_async:
            raise ExpressionError(f"expression {self.source!r}: a comprehension's variable is one name")
        items = self.visit(loop.iter)
        if not isinstance(items, (list, tuple, str)):
            raise ExpressionError(f"expression {self.source!r}: a comprehension loops over a list")
        outer, result, total = self.scope, [], 0
        try:
            for item in items:
                self.scope = {**outer, loop.target.id: item}
                if all(self.visit(condition) for condition in loop.ifs):
                    value = self.visit(node.elt)
                    total += size(value)
                    if total > MAX_SEQUENCE_LENGTH:  # bounded as it is built
                        raise ExpressionError(
                            f"sequence result holds more than {MAX_SEQUENCE_LENGTH} elements"
                        )
                    result.append(value)
        finally:
            self.scope = outer
        return result

    def visit_Call(self, node: ast.Call) -> Any:
        if not isinstance(node.func, ast.Name) or node.func.id not in FUNCTIONS or node.keywords:
            allowed = ", ".join(sorted(FUNCTIONS))
            raise ExpressionError(
                f"expression {self.source!r} calls something outside the allowed functions ({allowed})"
            )
        args = [self.visit(arg) for arg in node.args]
        if node.func.id == "range" and len(range(*args)) > MAX_SEQUENCE_LENGTH:
            raise ExpressionError(f"range longer than {MAX_SEQUENCE_LENGTH}")
        return FUNCTIONS[node.func.id](*args)
