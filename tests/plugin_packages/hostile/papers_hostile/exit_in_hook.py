"""Ends the process from inside a hook."""

import sys

from papers.hookspecs import hookimpl


@hookimpl
def papers_specs():
    sys.exit(3)
