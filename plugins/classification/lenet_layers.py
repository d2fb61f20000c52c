"""LeNet-5's own layers (LeCun et al., Proc. IEEE 1998, Section II.B and Appendix A).

None of them is in torch: the scaled tanh squashing function, the trainable subsampling of S2/S4,
the partially connected convolution of C3 (Table I) and the Euclidean RBF output units.
Initialisation follows Appendix A: uniform in [-2.4/F, 2.4/F], F the fan-in of the unit.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn


def _fan_in_uniform_(tensor: torch.Tensor, fan_in: float) -> None:
    bound = 2.4 / fan_in
    with torch.no_grad():
        tensor.uniform_(-bound, bound)


class ScaledTanh(nn.Module):
    """f(a) = A tanh(S a), with A = 1.7159 and S = 2/3 (Section II.B, Appendix A)."""

    def __init__(self, amplitude: float = 1.7159, slope: float = 2.0 / 3.0):
        super().__init__()
        self.amplitude = float(amplitude)
        self.slope = float(slope)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.amplitude * torch.tanh(self.slope * x)

    def extra_repr(self) -> str:
        return f"amplitude={self.amplitude}, slope={self.slope:.6g}"


class Subsampling(nn.Module):
    """S2/S4: the k×k inputs of a unit are added, multiplied by one trainable coefficient per map,
    and a trainable bias per map is added (the squashing follows as a separate node)."""

    def __init__(self, channels: int, kernel_size: int = 2):
        super().__init__()
        self.channels = int(channels)
        self.kernel_size = int(kernel_size)
        self.weight = nn.Parameter(torch.empty(self.channels))
        self.bias = nn.Parameter(torch.empty(self.channels))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        fan_in = self.kernel_size**2
        _fan_in_uniform_(self.weight, fan_in)
        _fan_in_uniform_(self.bias, fan_in)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        k = self.kernel_size
        summed = F.avg_pool2d(x, k) * float(k * k)  # the sum of the k×k inputs
        return summed * self.weight.view(1, -1, 1, 1) + self.bias.view(1, -1, 1, 1)

    def extra_repr(self) -> str:
        return f"{self.channels}, kernel_size={self.kernel_size}"


class TableConv2d(nn.Module):
    """A convolution in which output map j reads only the input maps ``table[j]`` (C3, Table I).

    One k×k kernel per connection (``weight`` has one row per (output, input) pair, in the order of
    the table) and one bias per output map, so the parameters are exactly the paper's. The forward
    pass convolves each connection's input map with its kernel (a grouped convolution, so multiply-
    adds are counted per connection, not as a dense convolution) and sums them into their output maps.
    The table is the spec's data (``c3_table`` in ``lenet.yaml``), given as the op's argument.
    """

    def __init__(
        self,
        in_channels: int,
        table: Sequence[Sequence[int]],
        kernel_size: int = 5,
        bias: bool = True,
    ):
        super().__init__()
        rows = [tuple(int(i) for i in row) for row in table]
        if not rows or any(not row for row in rows):
            raise ValueError("every output map needs at least one input map in `table`")
        if any(i < 0 or i >= in_channels for row in rows for i in row):
            raise ValueError(f"`table` names an input map outside 0..{in_channels - 1}")
        if any(len(set(row)) != len(row) for row in rows):
            raise ValueError("an output map reads the same input map twice in `table`")
        self.in_channels = int(in_channels)
        self.out_channels = len(rows)
        self.kernel_size = int(kernel_size)
        self.table = tuple(rows)
        self.sources = [i for row in rows for i in row]  # input map of each connection
        self.targets = [j for j, row in enumerate(rows) for _ in row]  # output map of each connection
        k = self.kernel_size
        self.weight = nn.Parameter(torch.empty(len(self.sources), 1, k, k))
        self.bias = nn.Parameter(torch.empty(self.out_channels)) if bias else None
        self.reset_parameters()

    @property
    def connections(self) -> int:
        return len(self.sources)

    def reset_parameters(self) -> None:
        k2 = self.kernel_size**2
        with torch.no_grad():
            start = 0
            for j, row in enumerate(self.table):
                fan_in = k2 * len(row)
                _fan_in_uniform_(self.weight[start : start + len(row)], fan_in)
                if self.bias is not None:
                    _fan_in_uniform_(self.bias[j : j + 1], fan_in)
                start += len(row)

    def dense_weight(self) -> torch.Tensor:
        """The equivalent (out, in, k, k) kernel of an ordinary convolution, zero where the table
        has no connection."""
        k = self.kernel_size
        dense = self.weight.new_zeros(self.out_channels, self.in_channels, k, k)
        dense[self.targets, self.sources] = self.weight[:, 0]
        return dense

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        sources = torch.tensor(self.sources, device=x.device)
        targets = torch.tensor(self.targets, device=x.device)
        per_connection = F.conv2d(x.index_select(1, sources), self.weight, groups=self.connections)
        n, _, h, w = per_connection.shape
        out = per_connection.new_zeros(n, self.out_channels, h, w).index_add_(1, targets, per_connection)
        if self.bias is not None:
            out = out + self.bias.view(1, -1, 1, 1)
        return out

    def extra_repr(self) -> str:
        return (
            f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
            f"connections={self.connections}, bias={self.bias is not None}"
        )


class EuclideanRBF(nn.Module):
    """Output units y_i = sum_j (x_j - w_ij)^2 with fixed parameter vectors (Section II.B).

    The paper fixes the 84-dimensional codes to ±1 stylised 7×12 bitmaps of the characters; those
    bitmaps are not reproduced here: the codes are ±1 drawn once from a fixed seed (a buffer, not a
    trainable parameter). The output is a penalty: the predicted class is the smallest.
    """

    def __init__(self, in_features: int, out_features: int = 10, seed: int = 0):
        super().__init__()
        self.in_features = int(in_features)
        self.out_features = int(out_features)
        self.seed = int(seed)
        self.register_buffer("centers", torch.empty(self.out_features, self.in_features))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        generator = torch.Generator(device="cpu").manual_seed(self.seed)
        shape = (self.out_features, self.in_features)
        codes = torch.randint(0, 2, shape, generator=generator, device="cpu")
        with torch.no_grad():
            self.centers.copy_(codes.to(self.centers.dtype) * 2 - 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x.unsqueeze(-2) - self.centers).pow(2).sum(-1)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}"
