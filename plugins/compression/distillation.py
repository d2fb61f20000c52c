"""Knowledge distillation: a student network trained on what a trained teacher network knows.

Three papers share this module: Hinton, Vinyals and Dean 2015 (soft targets at a temperature T, the
soft loss scaled by T², α between the soft and the hard loss), FitNets (Romero et al. 2015: a hint
layer of the teacher guides a layer of the student through a regressor, then soft targets), and
attention transfer (Zagoruyko and Komodakis 2017: the student matches the teacher's normalised
activation-based attention maps). A distillation method variant's ``base`` is the student; its
settings name the teacher (a variant of the registry), whose output classes and input must be the
student's (refused at ``papers build`` and ``check`` otherwise, before any weight exists).

Student and teacher are built from their expanded graphs cut at the logits and at the layers the
loss reads (``FlatGraph.cut``), so any node can be tapped, a residual sum as well as a layer, and the
student's weights keep their names. :class:`Distiller` runs both on a batch and keeps what they gave;
the losses are registry criteria (``papers_criteria``) built on a :class:`Distiller`, so what trains
the student is the criterion a recipe would name.

Hand-written, and why: each loss is a few lines of ``torch.nn.functional`` (``kl_div``,
``cross_entropy``, ``normalize``). torchdistill implements these papers inside its own training
framework (YAML configurations, its runners, models wrapped by module path with its io-dicts), which
would replace the registry's graphs and training rather than serve them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pydantic import Field

from papers.errors import PapersError, SpecError
from papers.graph import FlatGraph
from papers.methods import Method, MethodContext, Settings
from papers.recipe import Criterion, RecipeError

if TYPE_CHECKING:
    import torch
    from torch import nn


class TrainingSettings(Settings):
    """How the student (and, without ``teacher_weights``, the teacher) is trained on ``papers compress
    --data``: plain SGD, the registry's choices where a paper prints none."""

    teacher: str = Field(min_length=1, description="The teacher: a variant of the registry.")
    teacher_weights: str | None = Field(
        None,
        description="The teacher's trained weights (a checkpoint or safetensors file); none: the teacher "
        "is first trained on the data for `teacher_epochs`.",
    )
    teacher_epochs: int = Field(20, ge=1, le=1000)
    epochs: int = Field(20, ge=1, le=1000, description="Passes over the data while the student learns.")
    lr: float = Field(0.01, gt=0, description="SGD rate of the student (and of a teacher trained here).")
    momentum: float = Field(0.9, ge=0, lt=1)
    weight_decay: float = Field(0.0, ge=0)
    batch_size: int = Field(64, ge=1, le=65536)


class SoftTargetSettings(TrainingSettings):
    """The settings of ``knowledge_distillation`` (Hinton et al. 2015)."""

    temperature: float = Field(gt=0, description="T of the softmax both nets' soft targets are taken at.")
    alpha: float = Field(
        ge=0,
        le=1,
        description="Weight of the soft-target loss (scaled by T²); the hard-label cross-entropy at "
        "T = 1 takes 1 - alpha.",
    )


# -- the teacher and the student ----------------------------------------------------------------------


def logits_node(flat: FlatGraph) -> str:
    """The node a classifier's logits come from (its single output)."""
    if len(flat.outputs) != 1:
        raise SpecError(f"distillation needs a student with one output (logits), not {len(flat.outputs)}")
    return next(iter(flat.outputs.values()))


@dataclass(frozen=True)
class Shapes:
    """What a network gives and takes, from a meta-device pass (no weights)."""

    inputs: dict[str, list[int]]
    """Without the batch."""
    classes: int
    nodes: dict[str, list[int]]
    """Each node's output shape, batch of 1 included."""
    flat: FlatGraph


def shapes_of(flat: FlatGraph, label: str) -> Shapes:
    """``flat``'s input shapes, its number of classes and every node's output shape."""
    from papers.measure import measure_graph
    from papers.registry import get_registry

    measured = measure_graph(label, flat, get_registry().catalogue)
    output = measured.node_shapes[logits_node(flat)]
    inputs = {name: list(shape) for name, shape in flat.inputs.items()}
    return Shapes(inputs, output[-1], dict(measured.node_shapes), flat)


def teacher_shapes(teacher: str) -> Shapes:
    """The teacher variant's shapes; an unknown variant is refused naming ``settings.teacher``."""
    from papers.api import expand_variant

    try:
        flat = expand_variant(teacher)
    except PapersError as error:
        raise SpecError(f"settings.teacher: {error.message}") from None
    return shapes_of(flat, teacher)


def check_teacher(flat: FlatGraph, settings: TrainingSettings) -> tuple[Shapes, Shapes]:
    """The student's and the teacher's shapes, once the teacher takes the student's input and gives its
    classes (raises :class:`SpecError` otherwise)."""
    student, teacher = shapes_of(flat, "student"), teacher_shapes(settings.teacher)
    if teacher.classes != student.classes:
        raise SpecError(
            f"settings.teacher {settings.teacher!r} gives {teacher.classes} classes and the student "
            f"{student.classes}; a teacher's outputs must be the student's classes"
        )
    if list(teacher.inputs.values()) != list(student.inputs.values()):
        shown = [", ".join(map(str, net.inputs.values())) for net in (teacher, student)]
        raise SpecError(
            f"settings.teacher {settings.teacher!r} takes {shown[0]} and the student {shown[1]}; both must "
            "read the same images"
        )
    return student, teacher


def keep_graph(flat: FlatGraph, settings: TrainingSettings) -> FlatGraph:
    """The rewrite of a method that only trains: the graph unchanged, once the teacher fits it."""
    check_teacher(flat, settings)
    return flat


def tapped(flat: FlatGraph, taps: list[str], device: Any = "cpu") -> nn.Module:
    """``flat`` built to give a dict of the outputs of its logits node and of each node in ``taps``, by
    node name; its parameters are named as in the whole model's."""
    from papers.build import build
    from papers.registry import get_registry

    logits = logits_node(flat)
    return build(flat.cut([logits, *taps]), get_registry().catalogue, as_dict=True, device=device)


class Distiller:
    """A student and its teacher on the same batch. ``forward`` gives the student's logits and keeps
    both nets' outputs (``student``, ``teacher``: dicts of their logits and tapped nodes) for the
    loss. The teacher stays in evaluation mode and gets no gradient; ``modules`` (the regressors of
    FitNets) train with the student."""

    def __init__(
        self,
        student: nn.Module,
        teacher: nn.Module,
        student_flat: FlatGraph,
        teacher_flat: FlatGraph,
        settings: Any,
        modules: Mapping[str, nn.Module] | None = None,
    ):
        self.student, self.teacher, self.settings = student, teacher, settings
        self.student_logits, self.teacher_logits = logits_node(student_flat), logits_node(teacher_flat)
        self.modules = dict(modules or {})
        self.outputs: dict[str, Mapping[str, torch.Tensor]] = {}
        teacher.eval()
        for parameter in teacher.parameters():
            parameter.requires_grad_(False)

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        import torch

        with torch.no_grad():
            self.outputs["teacher"] = self.teacher(images)
        self.outputs["student"] = self.student(images)
        return self.outputs["student"][self.student_logits]

    def parameters(self) -> Iterator[torch.nn.Parameter]:
        """What the optimizer changes: the student's parameters, then each added module's."""
        yield from self.student.parameters()
        for module in self.modules.values():
            yield from module.parameters()

    def train(self, mode: bool = True) -> None:
        self.student.train(mode)
        for module in self.modules.values():
            module.train(mode)

    @property
    def teacher_out(self) -> torch.Tensor:
        return self.outputs["teacher"][self.teacher_logits]


def distiller_of(model: Any, criterion: str) -> Distiller:
    """``model`` as the :class:`Distiller` a distillation criterion reads; anything else is refused."""
    if not isinstance(model, Distiller):
        raise RecipeError(
            f"criterion {criterion} trains a student beside its teacher; it needs a distillation method "
            "variant, not a model alone",
            field="criterion",
        )
    return model


# -- the losses ---------------------------------------------------------------------------------------


def soft_target_loss(
    student: torch.Tensor, teacher: torch.Tensor, labels: torch.Tensor, temperature: float, alpha: float
) -> torch.Tensor:
    """Hinton et al.'s objective: ``alpha`` × T² × the cross-entropy between the teacher's and the
    student's softmax at temperature T, less the teacher's entropy (a constant: the KL divergence,
    whose gradient is the same), plus (1 − ``alpha``) × the cross-entropy with the labels at T = 1.
    T² keeps the soft gradients' scale as T changes (Section 2)."""
    import torch.nn.functional as F

    soft = F.kl_div(
        F.log_softmax(student / temperature, dim=-1),
        F.log_softmax(teacher / temperature, dim=-1),
        log_target=True,
        reduction="batchmean",
    )
    hard = F.cross_entropy(student, labels) if alpha < 1 else soft.new_zeros(())
    return alpha * temperature**2 * soft + (1 - alpha) * hard


def _soft_targets(model: Any, config: Any) -> Callable[[Any, Any], Any]:
    distiller = distiller_of(model, "soft_targets")

    def loss(output: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        s = distiller.settings
        return soft_target_loss(output, distiller.teacher_out, labels, s.temperature, s.alpha)

    return loss


SOFT_TARGETS = Criterion(
    "soft_targets",
    "Hinton et al. (2015): alpha × T² × KL(teacher ‖ student) at temperature T, plus (1 − alpha) × "
    "cross-entropy with the labels; needs a distillation method variant (a student beside its teacher).",
    build=_soft_targets,
)


# -- training -----------------------------------------------------------------------------------------


def sgd_epochs(
    model: Any,
    loss: Callable[[Any, Any], Any],
    batches: Callable[[], Any],
    epochs: int,
    settings: Any,
    device: Any = "cpu",
) -> None:
    """``epochs`` passes of SGD (``settings``: ``lr``, ``momentum``, ``weight_decay``) on ``model``'s
    parameters (a module or a :class:`Distiller`) with ``loss(output, labels)``."""
    import torch

    optimizer = torch.optim.SGD(
        list(model.parameters()),
        lr=settings.lr,
        momentum=settings.momentum,
        weight_decay=settings.weight_decay,
    )
    model.train()
    try:
        for _ in range(epochs):
            for images, labels in batches():
                images, labels = images.to(device), labels.to(device)
                optimizer.zero_grad(set_to_none=True)
                loss(model(images), labels).backward()
                optimizer.step()
    finally:
        model.train(False)


def cross_entropy(output: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    import torch.nn.functional as F

    return F.cross_entropy(output, labels)


def trained_teacher(settings: TrainingSettings, batches: Callable[[], Any], device: Any = "cpu") -> nn.Module:
    """The teacher variant with weights: read from ``teacher_weights``, else built from seed 0 and trained
    ``teacher_epochs`` passes over ``batches`` with cross-entropy."""
    import torch

    from papers.api import build_model

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        teacher = build_model(settings.teacher, device=device)
    if settings.teacher_weights is not None:
        from papers.evaluate import fit_weights, load_weights

        fit_weights(teacher, load_weights(settings.teacher_weights), file=settings.teacher_weights)
    else:
        sgd_epochs(teacher, cross_entropy, batches, settings.teacher_epochs, settings, device)
    return teacher.eval()


def distil_into(
    student: nn.Module,
    teacher: nn.Module,
    student_flat: FlatGraph,
    teacher_flat: FlatGraph,
    settings: Any,
    criterion: Criterion,
    batches: Callable[[], Any],
    *,
    student_taps: list[str] = (),  # type: ignore[assignment]
    teacher_taps: list[str] = (),  # type: ignore[assignment]
    modules: Mapping[str, nn.Module] | None = None,
    epochs: int | None = None,
    device: Any = "cpu",
) -> Distiller:
    """Train ``student`` in place with ``criterion`` beside ``teacher`` (both as built from their graphs),
    tapping the named nodes; ``epochs`` replaces ``settings.epochs``. Gives the :class:`Distiller`."""
    student_net = tapped(student_flat, list(student_taps), device)
    student_net.load_state_dict(student.state_dict())
    teacher_net = tapped(teacher_flat, list(teacher_taps), device)
    teacher_net.load_state_dict(teacher.state_dict())
    distiller = Distiller(student_net, teacher_net, student_flat, teacher_flat, settings, modules)
    loss = criterion.build(distiller, None)  # type: ignore[misc]
    sgd_epochs(distiller, loss, batches, settings.epochs if epochs is None else epochs, settings, device)
    student.load_state_dict(student_net.state_dict())
    return distiller


def training_batches(context: MethodContext, batch_size: int) -> Callable[[], Any]:
    """One shuffled pass over ``--data``'s training split per call; refused without data."""
    if context.data is None:
        raise PapersError("distillation trains the student: give --data", field="--data")
    from papers_plugins.compression.pruning import shuffled_batches, training_split

    shape = next(iter(context.flat.inputs.values()))
    images, labels = training_split(str(context.data), tuple(shape))
    return shuffled_batches(images, labels, batch_size)


def taught_by_teacher(
    model: Any,
    settings: TrainingSettings,
    context: MethodContext,
    train: Callable[[nn.Module, nn.Module, FlatGraph, FlatGraph, Any, Callable[[], Any], Any], None],
) -> Any:
    """A distillation method's apply step: the variant's teacher trained on ``--data``, then ``train``
    (student, teacher, their graphs, settings, batches, device) run on ``model``; ``model`` in eval mode."""
    from papers.api import expand_variant

    batches = training_batches(context, settings.batch_size)
    teacher = trained_teacher(settings, batches, context.device)
    train(model, teacher, context.flat, expand_variant(settings.teacher), settings, batches, context.device)
    return model.eval()


def apply_soft_targets(model: Any, settings: SoftTargetSettings, context: MethodContext) -> Any:
    """``knowledge_distillation``'s apply step: the student retrained on ``--data`` with soft targets."""

    def train(
        student: Any, teacher: Any, flat: Any, teacher_flat: Any, config: Any, batches: Any, device: Any
    ) -> None:
        distil_into(student, teacher, flat, teacher_flat, config, SOFT_TARGETS, batches, device=device)

    return taught_by_teacher(model, settings, context, train)


# -- the proxy: the same student alone and distilled, on builtin:mnist5k ------------------------------

PROXY_DATA = "builtin:mnist5k"
PROXY_SEEDS = (0, 1, 2)


@dataclass(frozen=True)
class ProxyData:
    train_images: torch.Tensor
    train_labels: torch.Tensor
    test_images: torch.Tensor
    test_labels: torch.Tensor


def proxy_data(flat: FlatGraph, data: str = PROXY_DATA, limit: int | None = None) -> ProxyData:
    """``data``'s training and test split at ``flat``'s input shape (``limit``: that many of each)."""
    from papers.data import in_memory

    shape = tuple(next(iter(flat.inputs.values())))
    train_images, train_labels, test_images, test_labels = in_memory(data, shape)  # type: ignore[arg-type]
    if limit is not None:  # the digits come sorted by class: a fixed random subset keeps them all
        import torch

        generator = torch.Generator().manual_seed(0)
        train = torch.randperm(len(train_labels), generator=generator)[:limit]
        test = torch.randperm(len(test_labels), generator=generator)[:limit]
        train_images, train_labels = train_images[train], train_labels[train]
        test_images, test_labels = test_images[test], test_labels[test]
    return ProxyData(train_images, train_labels, test_images, test_labels)


def seeded_student(base: str, seed: int) -> nn.Module:
    import torch

    from papers.api import build_model

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build_model(base)


def compare_alone_and_distilled(
    variant_id: str,
    distil: Callable[[nn.Module, nn.Module, Any, Callable[[], Any], tuple[FlatGraph, FlatGraph]], None],
    *,
    seeds: tuple[int, ...] = PROXY_SEEDS,
    epochs: int | None = None,
    teacher_epochs: int | None = None,
    limit: int | None = None,
    changes: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """On one thread: the teacher of method variant ``variant_id`` trained once, then for each seed the
    student trained alone (cross-entropy) and the same initial student distilled by ``distil(student,
    teacher, settings, batches, (student graph, teacher graph))``, for the same epochs over the same
    shuffles. Gives the top-1 (percent, held-out split) of the teacher, and of each student per seed and on
    average. ``epochs``/``teacher_epochs`` replace the variant's settings; ``limit``: a fixed
    random subset of that many training and test images; ``changes``: other settings replaced."""
    import torch

    from papers.api import expand_variant
    from papers.methods import variant_steps
    from papers.registry import get_registry
    from papers.train import intra_op_threads
    from papers_plugins.compression.pruning import shuffled_batches, top1

    base = get_registry().variant(variant_id)[1].base
    assert base is not None
    (step,) = variant_steps(variant_id)
    changed = {"epochs": epochs, "teacher_epochs": teacher_epochs, **(changes or {})}
    settings = step.settings.model_copy(update={k: v for k, v in changed.items() if v is not None})
    flats = (expand_variant(base), expand_variant(settings.teacher))
    data = proxy_data(flats[0], limit=limit)
    with intra_op_threads(1), torch.random.fork_rng(devices=[]):
        teacher_batches = shuffled_batches(
            data.train_images, data.train_labels, settings.batch_size, seed=100
        )
        torch.manual_seed(100)  # the teacher's dropout
        teacher = trained_teacher(settings, teacher_batches)
        result: dict[str, Any] = {
            "teacher": top1(teacher, data.test_images, data.test_labels),
            "alone": [],
            "distilled": [],
        }
        for seed in seeds:
            for kind in ("alone", "distilled"):
                torch.manual_seed(seed)
                student = seeded_student(base, seed)
                batches = shuffled_batches(
                    data.train_images, data.train_labels, settings.batch_size, seed=seed
                )
                if kind == "alone":
                    sgd_epochs(student, cross_entropy, batches, settings.epochs, settings)
                else:
                    distil(student, teacher, settings, batches, flats)
                result[kind].append(top1(student.eval(), data.test_images, data.test_labels))
    for kind in ("alone", "distilled"):
        result[f"{kind}_mean"] = round(sum(result[kind]) / len(result[kind]), 4)
    return result


def alone_and_distilled_runner(
    variant_id: str,
    distil: Callable[[nn.Module, nn.Module, Any, Callable[[], Any], tuple[FlatGraph, FlatGraph]], None],
    limit: int | None = None,
) -> Callable[[bool], tuple[float, float]]:
    """A distillation proxy's runner: :func:`compare_alone_and_distilled` with ``distil`` (on the first
    ``limit`` images; none: all), its means as (distilled, alone); ``progress`` prints the measures."""

    def run(progress: bool) -> tuple[float, float]:
        measured = compare_alone_and_distilled(variant_id, distil, limit=limit)
        if progress:
            print(f"{variant_id}: {measured}")
        return measured["distilled_mean"], measured["alone_mean"]

    return run


def proxy_check(variant_id: str, runner: Callable[[bool], tuple[float, float]], proxy: str) -> Any:
    """A distillation paper's proxy on ``builtin:mnist5k``: passes when the distilled student's mean top-1
    over the seeds reaches the same student's trained alone."""
    from papers.checks import TrainingCheck

    return TrainingCheck(
        name=f"{variant_id}-mnist5k",
        variant=variant_id,
        data=PROXY_DATA,
        min_accuracy=0.0,
        max_seconds=300.0,
        compares_with={"metric": "error"},
        runner=runner,
        proxy=proxy,
    )


def soft_target_distil(
    student: nn.Module, teacher: nn.Module, settings: Any, batches: Any, flats: tuple[FlatGraph, FlatGraph]
) -> None:
    """The proxy's distillation step for ``knowledge_distillation``."""
    distil_into(student, teacher, *flats, settings, SOFT_TARGETS, batches)


KNOWLEDGE_DISTILLATION = Method(
    name="knowledge_distillation",
    settings=SoftTargetSettings,
    description="The student (the variant's base) retrained on the teacher's soft targets at temperature "
    "T, the soft loss scaled by T², with weight alpha against the labels' cross-entropy (Hinton et al. "
    "2015); the teacher, a variant named in the settings, must give the student's classes.",
    rewrite=keep_graph,
    apply=apply_soft_targets,
)
