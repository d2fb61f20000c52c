"""Values as short plain text, shared by the command line and the site."""

from __future__ import annotations

from typing import Any

STATUS = {
    "pass": "✓",
    "fail": "✗",
    "not_measurable": "not measurable here",
    "inconsistent": "paper inconsistent",
}
"""How a check's status is shown."""


def plain(value: Any) -> str:
    """A value as short plain text: ``sgd(lr=0.01, momentum=0.9)``, ``[224, 224]``."""
    if isinstance(value, dict) and "name" in value:  # an optimizer, a schedule, an augmentation
        rest = {k: v for k, v in value.items() if k != "name" and v not in ({}, None)}
        settings = rest.pop("args", {}) | rest
        inner = ", ".join(f"{k}={plain(v)}" for k, v in settings.items())
        return f"{value['name']}({inner})" if inner else str(value["name"])
    if isinstance(value, dict):
        return "; ".join(f"{k}: {plain(v)}" for k, v in value.items())
    if isinstance(value, list):
        if value and all(isinstance(v, dict) for v in value):  # a list of augmentations
            return ", ".join(plain(v) for v in value)
        return "[" + ", ".join(plain(v) for v in value) + "]"
    return str(value)


def count(value: int, *, space: str = "") -> str:
    """A count with a metric suffix: ``1.23G``, ``61.10M`` (``space=" "``: ``1.23 G``)."""
    for scale, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if value >= scale:
            return f"{value / scale:.2f}{space}{suffix}"
    return str(value)
