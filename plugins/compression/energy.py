"""The energy model of Yang, Chen and Sze, "Designing Energy-Efficient Convolutional Neural Networks
using Energy-Aware Pruning" (CVPR 2017, arXiv 1611.05128): a layer's energy is its computation (the
multiply-accumulates that are not skipped) plus its data movement, every access to a level of the
memory hierarchy weighted by that level's cost relative to one MAC.

The costs are Eyeriss's (Chen, Emer and Sze, ISCA 2016, its table of normalised energy costs in a
65 nm process), which the paper's estimation methodology builds on: one MAC 1, a register-file (RF)
access 1, a transfer between processing elements in the array 2, a global-buffer (GB) access 6, a
DRAM access 200. Neither that table nor the paper's Section 3 was readable in the stored pages; the
values were confirmed in two stored secondary sources that agree (MIT's course notes on sparsity,
which quote them for the paper's scoring, and an Eyeriss-style estimator's constants). Weights that
are zero are skipped (neither fetched nor multiplied), as are MACs on a zero input where the input's
density is known (the abstract: the methodology models data sparsity).

Where the stored text of the paper was not readable here (the access counts come, in the paper, from
Eyeriss's row-stationary mapping optimised per layer), the counts below are the registry's choice,
modelled on the row-stationary pattern and stated so that they can be checked by hand. A layer has
M output channels, C input channels per group, an R×S kernel, an H×W input and an E×F output; its
weights W = M·C·R·S (one group's worth per output channel), inputs I = G·C·H·W, outputs O = M·E·F,
MACs = M·C·R·S·E·F; ρw and ρi are the weights' and the inputs' densities (1: dense):

- computation: MACs·ρw·ρi effectual MACs;
- RF: per effectual MAC one weight read, one input read, and the partial sum read and written (4);
- array: a filter row passes along the E output rows (W·ρw·E), an input row is shared by the R
  filter rows that read it on each of its passes (I·ρi·R·⌈M/p⌉), and a partial sum moves across the
  R filter rows of a PE column on each pass over the channels (O·(R−1)·⌈C/q⌉);
- GB: each weight once (W·ρw), the inputs once per pass of p filters (I·ρi·⌈M/p⌉), the partial sums
  read and written between passes of q channels and written at the end (O·(2·⌈C/q⌉ − 1));
- DRAM: each non-zero weight and input read once (W·ρw + I·ρi), each output written once (O).

Energies are per image. With a batch of N images, each weight is fetched from DRAM and the GB once
per batch, so those two counts are divided by N (``Dataflow.batch``, 1 by default: at batch 1 the
fully connected layers' weight fetches dominate AlexNet's estimate).

p = 16 filters and q = 4 channels per pass are the registry's defaults (:class:`Dataflow`), as are
16-bit data throughout (the paper also models reduced bit widths; every value here costs one access)
and the omission of the sparse weights' index overhead.

Hand-written: the paper's tool (energyestimation.mit.edu) is a web service, not a library; the model
is a few lines of arithmetic, kept free of torch so that ``papers check`` measures it from shapes.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from math import ceil, prod

COSTS: Mapping[str, float] = {"mac": 1.0, "rf": 1.0, "array": 2.0, "gb": 6.0, "dram": 200.0}
"""Energy per operation or access, relative to one MAC (Eyeriss, ISCA 2016)."""
LEVELS = ("rf", "array", "gb", "dram")


@dataclass(frozen=True)
class Dataflow:
    """How many filters and input channels one pass over the array processes (the registry's choice)."""

    filters_per_pass: int = 16
    channels_per_pass: int = 4
    batch: int = 1
    """Images that share one fetch of the weights from DRAM and the GB."""


@dataclass(frozen=True)
class LayerShape:
    """A convolution or linear layer's shape (a linear layer: 1×1 kernel on a 1×1 input)."""

    name: str
    out_channels: int
    in_channels: int
    """Per group."""
    kernel: tuple[int, int] = (1, 1)
    input_size: tuple[int, int] = (1, 1)
    output_size: tuple[int, int] = (1, 1)
    groups: int = 1

    @property
    def weights(self) -> int:
        return self.out_channels * self.in_channels * prod(self.kernel)

    @property
    def inputs(self) -> int:
        return self.groups * self.in_channels * prod(self.input_size)

    @property
    def outputs(self) -> int:
        return self.out_channels * prod(self.output_size)

    @property
    def macs(self) -> int:
        return self.weights * prod(self.output_size)


@dataclass(frozen=True)
class LayerEnergy:
    """A layer's estimated energy (relative to one MAC): its computation and its accesses per level
    and per kind of data (``weights``, ``inputs``, ``psums``)."""

    name: str
    computation: float
    accesses: Mapping[str, Mapping[str, float]] = field(default_factory=dict)
    """Accesses by level, then by kind of data."""

    @property
    def data(self) -> float:
        """The data movement's energy: every level's accesses times its cost."""
        return sum(COSTS[level] * sum(kinds.values()) for level, kinds in self.accesses.items())

    @property
    def total(self) -> float:
        return COSTS["mac"] * self.computation + self.data


def layer_energy(
    shape: LayerShape,
    weight_density: float = 1.0,
    input_density: float = 1.0,
    dataflow: Dataflow = Dataflow(),
) -> LayerEnergy:
    """The energy of ``shape`` with the given densities of its weights and inputs (see the module)."""
    for what, value in (("weight_density", weight_density), ("input_density", input_density)):
        if not 0.0 <= value <= 1.0:
            raise ValueError(f"{what} must lie in [0, 1], not {value}")
    rw, ri = weight_density, input_density
    r = shape.kernel[0]
    effectual = shape.macs * rw * ri
    filter_passes = ceil(shape.out_channels / dataflow.filters_per_pass)
    channel_passes = ceil(shape.in_channels / dataflow.channels_per_pass)
    weights, inputs, outputs = shape.weights * rw, shape.inputs * ri, shape.outputs
    fetched = weights / dataflow.batch  # per image
    accesses = {
        "rf": {"weights": effectual, "inputs": effectual, "psums": 2 * effectual},
        "array": {
            "weights": weights * shape.output_size[0],
            "inputs": inputs * r * filter_passes,
            "psums": outputs * (r - 1) * channel_passes,
        },
        "gb": {
            "weights": fetched,
            "inputs": inputs * filter_passes,
            "psums": outputs * (2 * channel_passes - 1),
        },
        "dram": {"weights": fetched, "inputs": inputs, "psums": outputs},
    }
    return LayerEnergy(shape.name, effectual, accesses)


def network_energy(
    shapes: list[LayerShape],
    weight_density: Mapping[str, float] | None = None,
    input_density: Mapping[str, float] | None = None,
    dataflow: Dataflow = Dataflow(),
) -> dict[str, LayerEnergy]:
    """Each layer's energy, by name; a layer missing from a density mapping is dense."""
    weight_density = weight_density or {}
    input_density = input_density or {}
    return {
        shape.name: layer_energy(
            shape, weight_density.get(shape.name, 1.0), input_density.get(shape.name, 1.0), dataflow
        )
        for shape in shapes
    }


def by_energy(energies: Mapping[str, LayerEnergy]) -> list[str]:
    """Layer names, the most energy first (the paper prunes in this order); ties keep the given order."""
    return sorted(energies, key=lambda name: -energies[name].total)
