"""Deep Residual Learning for Image Recognition (CVPR 2016).

Everything about the paper is in its spec; the one layer no library has, the parameter-free
option-A shortcut (identity, subsampled and zero-padded where the dimensions grow), is in
``resnet_layers``, imported only when a model is built.
"""

from importlib.resources import files

from papers.hookspecs import hookimpl
from papers.ops import Op, input_channels


@hookimpl
def papers_specs() -> list:
    return [files("papers_specs") / "classification" / "resnet.yaml"]


@hookimpl
def papers_ops() -> list:
    return [
        Op(
            "resnet_shortcut_a",
            "papers_plugins.classification.resnet_layers:ShortcutA",
            inferred={"in_channels": input_channels},
            doc="ResNet option-A shortcut: identity, subsampled by `stride`, zero channels appended "
            "up to `out_channels` (He et al. 2016, Section 3.3). No parameters.",
        )
    ]
