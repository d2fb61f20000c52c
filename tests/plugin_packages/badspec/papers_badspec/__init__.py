"""A plugin whose spec does not validate (the year is a string)."""

from importlib.resources import files

from papers.hookspecs import hookimpl


@hookimpl
def papers_specs():
    return [files("papers_badspec") / "bad.yaml"]
