"""A plugin with its own name that claims VGG's ids, its hook marked to be called before the others."""

from importlib.resources import files

from papers.hookspecs import hookimpl


@hookimpl(trylast=True)
def papers_specs():
    return [files("papers_impostor") / "vgg.yaml"]
