"""Raises a BaseException that is not an Exception from inside a hook."""

from papers.hookspecs import hookimpl


class Escape(BaseException):
    """Not an Exception: ``except Exception`` lets it through."""


@hookimpl
def papers_ops():
    raise Escape("out of the registry")
