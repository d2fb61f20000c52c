"""The one family of errors that leaves loading, building and checking a spec."""

from __future__ import annotations


class PapersError(Exception):
    """Base of every error the project raises on bad input.

    ``file`` is the spec file (or other input) at fault and ``field`` the path of the field inside
    it (``variants[2].id``); the CLI prints them on one line and exits with status 2.
    """

    def __init__(self, message: str, *, file: str | None = None, field: str | None = None):
        super().__init__(message)
        self.message = message
        self.file = file
        self.field = field

    def located(self, *, file: str | None = None, field: str | None = None) -> PapersError:
        """Return a copy of this error with a file and a field path filled in where missing."""
        joined = self.field
        if field:
            joined = f"{field}.{self.field}" if self.field else field
        return type(self)(self.message, file=self.file or file, field=joined)

    def __str__(self) -> str:
        where = ": ".join(part for part in (self.file, self.field) if part)
        return f"{where}: {self.message}" if where else self.message


class SpecError(PapersError):
    """A spec file that cannot be read or does not validate."""


class GraphError(SpecError):
    """An architecture graph that cannot be expanded or built (bad reference, cycle, shape)."""


class ExpressionError(GraphError):
    """An arithmetic expression outside the whitelist, or one that fails to evaluate."""


class PluginError(PapersError):
    """A plugin that fails to load, or contributes something invalid or conflicting."""


class UnknownIdError(PapersError):
    """An id that names no paper or variant in the registry."""
