"""Attention transfer (Zagoruyko and Komodakis, ICLR 2017, arXiv 1612.03928): a student that learns
where its teacher looks.

For an activation A of C channels, the activation-based attention map is F(A) = Σ_c |A_c|^p over the
channels (p = 2, Section 3.1). At each paired layer j (for residual networks, each group's output)
the maps of student and teacher are flattened and divided by their ℓ2 norms, and the student
minimises its cross-entropy plus β/2 Σ_j ‖Q_S^j/‖Q_S^j‖₂ − Q_T^j/‖Q_T^j‖₂‖_p with p = 2 (Eq. 2),
averaged over the batch. Paired maps must have the same height and width (the paper pairs layers of
the same resolution); channels may differ, since the map sums them away. The registry's loss reads
the paper's equation as printed: β is the variant's setting, one value for every layer.

Hand-written: the map and the loss are a few lines of torch; see
:mod:`papers_plugins.compression.distillation` for why not torchdistill.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from pydantic import Field, model_validator

from papers.errors import SpecError
from papers.graph import FlatGraph
from papers.methods import Method, MethodContext
from papers.recipe import Criterion
from papers_plugins.compression.distillation import (
    Distiller,
    TrainingSettings,
    check_teacher,
    distil_into,
    distiller_of,
    taught_by_teacher,
)

if TYPE_CHECKING:
    import torch
    from torch import nn


class AttentionSettings(TrainingSettings):
    """The settings of ``attention_transfer``."""

    layers: list[str] = Field(
        min_length=1,
        description="The student's layers whose attention maps are matched: nodes, groups or feature stages.",
    )
    teacher_layers: list[str] | None = Field(
        None, description="The teacher's layers paired with `layers`, in order; none: the same names."
    )
    beta: float = Field(gt=0, description="β of Eq. 2: the weight of the attention loss (β/2 per layer).")
    p: float = Field(2.0, gt=0, description="The power of |A| summed over channels (the paper's p = 2).")

    @model_validator(mode="after")
    def _paired(self) -> AttentionSettings:
        if self.teacher_layers is not None and len(self.teacher_layers) != len(self.layers):
            raise ValueError(
                f"teacher_layers pairs {len(self.teacher_layers)} layers with the student's "
                f"{len(self.layers)}"
            )
        return self

    def pairs(self) -> list[tuple[str, str]]:
        return list(zip(self.layers, self.teacher_layers or self.layers, strict=True))


def attention_map(activation: torch.Tensor, p: float = 2.0) -> torch.Tensor:
    """F(A) = Σ_c |A_c|^p, flattened: [N, C, H, W] → [N, H·W]."""
    return activation.abs().pow(p).sum(1).flatten(1)


def attention_loss(student: torch.Tensor, teacher: torch.Tensor, p: float = 2.0) -> torch.Tensor:
    """‖Q_S/‖Q_S‖₂ − Q_T/‖Q_T‖₂‖₂ for one pair of activations, averaged over the batch."""
    import torch.nn.functional as F

    q_student = F.normalize(attention_map(student, p), dim=1)
    q_teacher = F.normalize(attention_map(teacher, p), dim=1)
    return (q_student - q_teacher).norm(dim=1).mean()


def _node(flat: FlatGraph, name: str) -> str:
    if name in flat.features:
        return flat.features[name]
    return flat.aliases.get(name, name)


def resolved_pairs(
    student: FlatGraph, teacher: FlatGraph, settings: AttentionSettings
) -> list[tuple[str, str]]:
    """The settings' pairs as node names of the two graphs."""
    return [(_node(student, s), _node(teacher, t)) for s, t in settings.pairs()]


def check_pairs(flat: FlatGraph, settings: AttentionSettings) -> FlatGraph:
    """The rewrite: the graph unchanged, once the teacher fits and every pair of layers exists and
    gives maps of the same size (:class:`SpecError` otherwise)."""
    student, teacher = check_teacher(flat, settings)
    for index, (s, t) in enumerate(resolved_pairs(student.flat, teacher.flat, settings)):
        shapes = []
        for name, given, net, who in (
            (s, settings.layers[index], student, "the student"),
            (t, settings.pairs()[index][1], teacher, f"the teacher {settings.teacher!r}"),
        ):
            if name not in net.nodes:
                raise SpecError(
                    f"settings.layers[{index}]: {who} has no node, group or feature stage {given!r}"
                )
            shape = net.nodes[name]
            if len(shape) != 4:
                raise SpecError(
                    f"settings.layers[{index}]: {given!r} of {who} gives {shape[1:]}, not a map of channels; "
                    "attention is taken on convolutional activations"
                )
            shapes.append(shape[2:])
        if shapes[0] != shapes[1]:
            raise SpecError(
                f"settings.layers[{index}]: the student's {settings.layers[index]!r} gives "
                f"{shapes[0][0]}×{shapes[0][1]} maps and the teacher's {settings.pairs()[index][1]!r} "
                f"{shapes[1][0]}×{shapes[1][1]}; paired attention maps must have the same size"
            )
    return flat


def _attention(model: Any, config: Any) -> Callable[[Any, Any], Any]:
    distiller: Distiller = distiller_of(model, "attention_transfer")

    def loss(output: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        import torch.nn.functional as F

        s, out = distiller.settings, distiller.outputs
        transfer = sum(attention_loss(out["student"][a], out["teacher"][b], s.p) for a, b in s.resolved)
        return F.cross_entropy(output, labels) + s.beta / 2 * transfer

    return loss


ATTENTION = Criterion(
    "attention_transfer",
    "Zagoruyko and Komodakis (2017): cross-entropy plus β/2 × Σ over paired layers of the ℓ2 distance "
    "between the ℓ2-normalised attention maps Σ_c |A_c|² of student and teacher; needs an attention "
    "transfer method variant.",
    build=_attention,
)


class _Resolved:
    """The settings with their pairs as node names, as the criterion reads them."""

    def __init__(self, settings: AttentionSettings, resolved: list[tuple[str, str]]):
        self._settings, self.resolved = settings, resolved

    def __getattr__(self, name: str) -> Any:
        return getattr(self._settings, name)


def transfer_attention(
    student: nn.Module,
    teacher: nn.Module,
    student_flat: FlatGraph,
    teacher_flat: FlatGraph,
    settings: AttentionSettings,
    batches: Callable[[], Any],
    device: Any = "cpu",
) -> None:
    """Train ``student`` in place with cross-entropy and attention transfer from ``teacher``."""
    pairs = resolved_pairs(student_flat, teacher_flat, settings)
    distil_into(
        student, teacher, student_flat, teacher_flat, _Resolved(settings, pairs), ATTENTION, batches,
        student_taps=[s for s, _ in pairs], teacher_taps=[t for _, t in pairs], device=device,
    )  # fmt: skip


def apply_attention(model: Any, settings: AttentionSettings, context: MethodContext) -> Any:
    """``attention_transfer``'s apply step: the student trained on ``--data`` with attention transfer."""
    return taught_by_teacher(model, settings, context, transfer_attention)


def attention_distil(
    student: nn.Module, teacher: nn.Module, settings: Any, batches: Any, flats: tuple[FlatGraph, FlatGraph]
) -> None:
    """The proxy's distillation step for ``attention_transfer``."""
    transfer_attention(student, teacher, *flats, settings, batches)


ATTENTION_TRANSFER = Method(
    name="attention_transfer",
    settings=AttentionSettings,
    description="Attention transfer (Zagoruyko and Komodakis 2017): the student (the variant's base) "
    "trained with cross-entropy plus β/2 × the ℓ2 distances between its and the teacher's normalised "
    "activation attention maps (Σ_c |A_c|²) at paired layers of the same resolution.",
    rewrite=check_pairs,
    apply=apply_attention,
)
