"""LeNet-5: Gradient-Based Learning Applied to Document Recognition (Proc. IEEE 1998).

Everything about the paper is in its spec; its four layers that torch lacks are in ``lenet_layers``
(imported only when a model is built).
"""

from importlib.resources import files

from papers.hookspecs import hookimpl
from papers.ops import Op, input_channels, input_features

_LAYERS = "papers_plugins.classification.lenet_layers"


@hookimpl
def papers_specs() -> list:
    return [files("papers_specs") / "classification" / "lenet.yaml"]


@hookimpl
def papers_ops() -> list:
    return [
        Op(
            "lenet_scaled_tanh",
            f"{_LAYERS}:ScaledTanh",
            doc="A·tanh(S·a), A = 1.7159, S = 2/3 (LeCun et al. 1998, Appendix A).",
        ),
        Op(
            "lenet_subsampling",
            f"{_LAYERS}:Subsampling",
            inferred={"channels": input_channels},
            doc="Sum of k×k inputs times a trainable coefficient plus a trainable bias, per map.",
        ),
        Op(
            "lenet_table_conv2d",
            f"{_LAYERS}:TableConv2d",
            inferred={"in_channels": input_channels},
            doc="Convolution where output map j reads only input maps `table[j]` (LeNet-5's C3).",
        ),
        Op(
            "lenet_rbf",
            f"{_LAYERS}:EuclideanRBF",
            inferred={"in_features": input_features},
            doc="Euclidean RBF output units with fixed ±1 codes: sum_j (x_j - w_ij)^2 per class.",
        ),
    ]
