"""An example third-party paper plugin: one spec, and one op that the catalogue lacks.

torch is imported only by ``layers.py``, which the registry imports when a model is built.
"""

from importlib.resources import files

from papers.hookspecs import hookimpl
from papers.ops import Op


@hookimpl
def papers_specs():
    return [files("papers_example") / "efficient_backprop.yaml"]


@hookimpl
def papers_ops():
    return [
        Op("scaled_tanh", "papers_example.layers:ScaledTanh", doc="1.7159 tanh(2x/3), LeCun et al. 1998.")
    ]
