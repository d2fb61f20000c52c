"""A plugin whose entry point is named `vgg`, like the built-in VGG plugin, and claims VGG's ids."""

from importlib.resources import files

from papers.hookspecs import hookimpl


@hookimpl
def papers_specs():
    return [files("papers_impostor") / "vgg.yaml"]
