"""FitNets (Romero et al., ICLR 2015, arXiv 1412.6550): a student guided by a teacher's hidden layer.

Training has two stages. First, the student's layers up to its *guided* layer learn to predict the
teacher's *hint* layer through a regressor r: the loss is ½‖u_h(x) − r(v_g(x))‖², u_h the hint and v_g
the guided layer's output (Section 2.2). Where both are convolutional the regressor is a convolution
whose kernel is the guided map's size less the hint's, plus one, in each direction, so that it maps
the guided map onto the hint's (the paper's choice, fewer weights than a fully connected regressor);
where both are fully connected it is a linear map. A guided map smaller than the hint's, or a
convolutional layer against a fully connected one, cannot be regressed so and is refused. Second, the
whole student is trained by knowledge distillation: H(y, P_S) + λ H(P_T^τ, P_S^τ), the cross-entropy
with the labels plus λ times that to the teacher's softmax at temperature τ (Section 2.1); the paper
anneals λ during training, the registry keeps it fixed at the variant's setting. The regressor is
discarded after the first stage: the student keeps the base's graph.

Hand-written: the regressor and the two losses (a convolution and a few lines of
``torch.nn.functional``); see :mod:`papers_plugins.compression.distillation` for why not torchdistill.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from pydantic import Field

from papers.errors import SpecError
from papers.graph import FlatGraph
from papers.methods import Method, MethodContext
from papers.recipe import Criterion
from papers_plugins.compression.distillation import (
    Distiller,
    Shapes,
    TrainingSettings,
    check_teacher,
    distil_into,
    distiller_of,
    taught_by_teacher,
)

if TYPE_CHECKING:
    import torch
    from torch import nn


class HintSettings(TrainingSettings):
    """The settings of ``fitnet_hints``."""

    hint: str = Field(
        min_length=1, description="The teacher's hint layer: a node or feature stage of its graph."
    )
    guided: str = Field(min_length=1, description="The student's guided layer: a node or feature stage.")
    hint_epochs: int = Field(10, ge=1, le=1000, description="Passes of the first stage (hints).")
    hint_lr: float = Field(1.0e-5, gt=0, description="SGD rate of the first stage.")
    temperature: float = Field(gt=0, description="τ of the second stage's soft targets.")
    weight: float = Field(
        gt=0,
        description="λ of the second stage: H(y, P_S) + λ H(P_T^τ, P_S^τ), fixed (the paper anneals it).",
    )


def _named(flat: FlatGraph, name: str) -> str:
    """The node a name stands for: a feature stage's, a group's last node, or the node itself."""
    if name in flat.features:
        return flat.features[name]
    return flat.aliases.get(name, name)


def regressor_shape(hint: list[int], guided: list[int]) -> tuple[int, int] | None:
    """The regressor's kernel (rows, columns) for maps ``guided`` → ``hint`` (channels, height, width,
    no batch); ``None`` for fully connected layers ([features] each). Raises :class:`ValueError`
    saying why the two cannot be regressed."""
    if len(hint) == len(guided) == 1:
        return None
    if len(hint) != 3 or len(guided) != 3:
        raise ValueError(
            f"the hint gives {hint} and the guided layer {guided}: a regressor maps a convolutional map "
            "onto a convolutional map (a convolution) or features onto features (a linear map)"
        )
    kernel = (guided[1] - hint[1] + 1, guided[2] - hint[2] + 1)
    if min(kernel) < 1:
        raise ValueError(
            f"the guided map {guided[1]}×{guided[2]} is smaller than the hint's {hint[1]}×{hint[2]}; a "
            "convolutional regressor only shrinks a map"
        )
    return kernel


def check_hints(flat: FlatGraph, settings: HintSettings) -> tuple[Shapes, Shapes, tuple[int, int] | None]:
    """The student's and teacher's shapes and the regressor's kernel, once the teacher fits the student
    and the hint and guided layers exist and can be regressed (:class:`SpecError` otherwise)."""
    student, teacher = check_teacher(flat, settings)
    shapes = []
    for field, name, net, who in (
        ("hint", settings.hint, teacher, f"the teacher {settings.teacher!r}"),
        ("guided", settings.guided, student, "the student"),
    ):
        node = _named(net.flat, name)
        if node not in net.nodes:
            known = ", ".join(list(net.flat.features) or [n.name for n in net.flat.nodes][:8])
            raise SpecError(f"settings.{field}: {who} has no node or feature stage {name!r} (e.g. {known})")
        shapes.append(net.nodes[node][1:])
    try:
        kernel = regressor_shape(*shapes)
    except ValueError as error:
        raise SpecError(f"settings.hint {settings.hint!r} cannot be regressed from settings.guided "
                        f"{settings.guided!r}: {error}") from None  # fmt: skip
    return student, teacher, kernel


def keep_graph(flat: FlatGraph, settings: HintSettings) -> FlatGraph:
    """The rewrite: the graph unchanged (the regressor lives only while training), once it fits."""
    check_hints(flat, settings)
    return flat


def make_regressor(hint: list[int], guided: list[int], device: Any = "cpu") -> nn.Module:
    """A convolution of the guided map onto the hint's, or a linear map of fully connected features."""
    from torch import nn

    kernel = regressor_shape(hint, guided)
    if kernel is None:
        return nn.Linear(guided[0], hint[0], device=device)
    return nn.Conv2d(guided[0], hint[0], kernel, device=device)


def hint_loss(hint: torch.Tensor, regressed: torch.Tensor) -> torch.Tensor:
    """½‖u_h − r(v_g)‖², summed over a hint's values, averaged over the batch (Section 2.2)."""
    return 0.5 * (hint - regressed).pow(2).flatten(1).sum(1).mean()


def fitnet_kd_loss(
    student: torch.Tensor, teacher: torch.Tensor, labels: torch.Tensor, temperature: float, weight: float
) -> torch.Tensor:
    """H(y, P_S) + λ H(P_T^τ, P_S^τ), the second term as the KL divergence (the same gradient)."""
    import torch.nn.functional as F

    soft = F.kl_div(
        F.log_softmax(student / temperature, -1),
        F.log_softmax(teacher / temperature, -1),
        log_target=True,
        reduction="batchmean",
    )
    return F.cross_entropy(student, labels) + weight * soft


def _hints(model: Any, config: Any) -> Callable[[Any, Any], Any]:
    distiller: Distiller = distiller_of(model, "fitnet_hints")
    s = distiller.settings
    regressor = distiller.modules["regressor"]

    def loss(output: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        hint = distiller.outputs["teacher"][s.hint]
        return hint_loss(hint, regressor(distiller.outputs["student"][s.guided]))

    return loss


def _fitnet_kd(model: Any, config: Any) -> Callable[[Any, Any], Any]:
    distiller: Distiller = distiller_of(model, "fitnet_kd")

    def loss(output: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        s = distiller.settings
        return fitnet_kd_loss(output, distiller.teacher_out, labels, s.temperature, s.weight)

    return loss


HINTS = Criterion(
    "fitnet_hints",
    "FitNets' first stage (Romero et al. 2015): ½‖hint − regressor(guided)‖², the student's guided layer "
    "regressed onto the teacher's hint layer; needs a FitNets method variant.",
    build=_hints,
)
FITNET_KD = Criterion(
    "fitnet_kd",
    "FitNets' second stage: cross-entropy with the labels plus λ × the cross-entropy to the teacher's "
    "softmax at temperature τ; needs a FitNets method variant.",
    build=_fitnet_kd,
)


def fitnet_train(
    student: nn.Module,
    teacher: nn.Module,
    student_flat: FlatGraph,
    teacher_flat: FlatGraph,
    settings: HintSettings,
    batches: Callable[[], Any],
    device: Any = "cpu",
) -> None:
    """Both stages on ``student`` in place: hints (student up to the guided layer and a new regressor),
    then distillation of the whole student."""
    guided_node, hint_node = _named(student_flat, settings.guided), _named(teacher_flat, settings.hint)
    student_shapes, teacher_shapes = _node_shapes(student_flat), _node_shapes(teacher_flat)
    regressor = make_regressor(teacher_shapes[hint_node][1:], student_shapes[guided_node][1:], device)
    stage = settings.model_copy(update={"hint": hint_node, "guided": guided_node, "lr": settings.hint_lr})
    distil_into(
        student, teacher, student_flat, teacher_flat, stage, HINTS, batches, student_taps=[guided_node],
        teacher_taps=[hint_node], modules={"regressor": regressor}, epochs=settings.hint_epochs,
        device=device,
    )  # fmt: skip
    distil_into(student, teacher, student_flat, teacher_flat, settings, FITNET_KD, batches, device=device)


def _node_shapes(flat: FlatGraph) -> dict[str, list[int]]:
    from papers.measure import measure_graph
    from papers.registry import get_registry

    return dict(measure_graph("fitnet", flat, get_registry().catalogue).node_shapes)


def apply_hints(model: Any, settings: HintSettings, context: MethodContext) -> Any:
    """``fitnet_hints``'s apply step: the student trained on ``--data`` in the paper's two stages."""
    return taught_by_teacher(model, settings, context, fitnet_train)


def fitnet_distil(
    student: nn.Module, teacher: nn.Module, settings: Any, batches: Any, flats: tuple[FlatGraph, FlatGraph]
) -> None:
    """The proxy's distillation step for ``fitnet_hints``."""
    fitnet_train(student, teacher, *flats, settings, batches)


FITNET_HINTS = Method(
    name="fitnet_hints",
    settings=HintSettings,
    description="FitNets (Romero et al. 2015): the student's guided layer first learns the teacher's hint "
    "layer through a regressor (a convolution whose kernel fits the guided map onto the hint's), then "
    "the whole student learns the labels and the teacher's soft targets at temperature τ, weighted by λ.",
    rewrite=keep_graph,
    apply=apply_hints,
)
