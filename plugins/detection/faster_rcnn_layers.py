"""The one layer of Faster R-CNN no library has as a module: the RPN's two-class scores as one logit.

The paper's cls layer gives 2k scores, a background and an object score per anchor, softmaxed in pairs
(Section 3.1); torchvision's RegionProposalNetwork takes k logits scored with a sigmoid. The two agree
exactly: softmax(b, o)[o] = sigmoid(o − b), and the two-class cross-entropy is the logistic loss of
o − b. Imported only when a model is built (the plugin module itself does not import torch).
"""

from __future__ import annotations

from torch import Tensor, nn


class ObjectLogit(nn.Module):
    """[N, 2k, H, W] scores, the k background scores first (as the authors' Caffe models lay them out),
    to [N, k, H, W] logits o − b."""

    def forward(self, scores: Tensor) -> Tensor:
        if scores.shape[1] % 2:
            raise ValueError(f"two scores per anchor expected, got {scores.shape[1]} channels")
        background, objects = scores.chunk(2, dim=1)
        return objects - background
