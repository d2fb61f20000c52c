"""The task layer of segmenters: a graph's class maps as torchvision's segmentation models return them.

The graph computes class logits at its own output stride (and, with an auxiliary classifier, a
second map); the spec's ``segmentation`` section names those outputs and how they are resized.
``model(images)`` gives ``{"out": logits at the input's size, "aux": ...}`` as torchvision's
``_SimpleSegmentationModel`` does.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn
from torch.nn import functional as F

from papers.spec import Segmentation


class Segmenter(nn.Module):
    """A graph (image batch → class maps) whose maps are resized to the input's size.

    The graph's layers are this module's own children, so its ``state_dict`` has the graph's names.
    """

    def __init__(self, network: nn.Module, task: Segmentation, *, aux_loss: bool | None = None):
        super().__init__()
        for name, child in network.named_children():
            self.add_module(name, child)
        object.__setattr__(self, "network", network)
        self.task = task
        self.aux = task.aux is not None if aux_loss is None else aux_loss and task.aux is not None

    def forward(self, images: Tensor) -> dict[str, Tensor]:
        outputs = _named(self.network(images))
        size = images.shape[-2:]
        corners = self.task.align_corners if self.task.mode == "bilinear" else None
        result = {
            "out": F.interpolate(
                outputs[self.task.out], size=size, mode=self.task.mode, align_corners=corners
            )
        }
        if self.aux and self.task.aux is not None:
            result["aux"] = F.interpolate(
                outputs[self.task.aux], size=size, mode=self.task.mode, align_corners=corners
            )
        return result


def _named(outputs: Any) -> dict[str, Tensor]:
    if isinstance(outputs, Tensor):
        return {"output": outputs}
    if isinstance(outputs, tuple) and hasattr(outputs, "_fields"):
        return dict(zip(outputs._fields, outputs, strict=True))
    return dict(outputs)
