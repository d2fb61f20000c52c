"""Two small methods that prove the ``papers_methods`` hook, and two test papers that use them.

``narrow`` is a static rewrite (every convolution and hidden linear layer keeps a fraction of its
outputs); ``magnitude`` an apply step (the smallest-magnitude weights of each layer set to zero).
torch is imported only inside ``magnitude``'s apply step.
"""

from importlib.resources import files

from papers.hookspecs import hookimpl
from papers_methods_demo.methods import MAGNITUDE, NARROW


@hookimpl
def papers_methods() -> list:
    return [NARROW, MAGNITUDE]


@hookimpl
def papers_specs() -> list:
    folder = files("papers_methods_demo")
    return [folder / "narrow_demo.yaml", folder / "magnitude_demo.yaml"]
