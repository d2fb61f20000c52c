"""Returns a file-like object whose read_bytes() gives an int instead of bytes."""

from papers.hookspecs import hookimpl


class NotAFile:
    name = "not-a-file.yaml"

    def read_bytes(self):
        return 42


@hookimpl
def papers_specs():
    return [NotAFile()]
