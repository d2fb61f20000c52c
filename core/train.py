"""Training a variant with its paper's recipe: the loop, checkpoints, resume, and many processes.

A run folder holds ``recipe.json`` (the resolved recipe, the overrides, the data and build options),
``metrics.json`` (one record per epoch), ``log.txt``, ``checkpoints/``, ``tensorboard/`` (where the
``tensorboard`` package is installed) and, at the end, ``model.safetensors``. After every epoch the
weights (safetensors), the optimizer's tensors (safetensors) and everything else (JSON) are written
to temporary files and renamed into place, and
``checkpoints/last.json`` is renamed last: an interrupted run loses at most the epoch in progress,
and nothing pickled is ever written. Resuming refuses a damaged run folder with one line: an
unreadable or truncated checkpoint, one whose tensors do not fit the model, and a ``last.json`` that
names a file outside the run folder. Temporary files a killed writer left (``.NAME.tmp-PID`` of a
process no longer running) are removed when a run starts or resumes.

Under ``torchrun`` (``WORLD_SIZE`` > 1) the model is wrapped in DistributedDataParallel (gloo on CPU,
nccl on GPUs), each process takes an equal share of the global batch from a DistributedSampler with
``drop_last``, and only rank 0 writes. Every process draws from a generator seeded by (seed, epoch,
rank) at the start of each epoch, so a resumed run repeats exactly what an uninterrupted one does;
without augmentation or dropout, one process and many give the same numbers up to rounding.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import signal
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from papers.data import DataError, readable
from papers.errors import PapersError
from papers.evaluate import image_shape
from papers.files import write_atomic
from papers.recipe import RecipeError, TrainConfig, get_criterion, get_optimizer

RECIPE = "recipe.json"
METRICS = "metrics.json"
CHECKPOINTS = "checkpoints"
LAST = "last.json"
FINAL_WEIGHTS = "model.safetensors"
BEST_WEIGHTS = "best.safetensors"
METRICS_CSV = "metrics.csv"
STEPS_CSV = "steps.csv"
TENSORBOARD = "tensorboard"


class RunError(PapersError):
    """A run folder that cannot be started or resumed."""


class RunRecord(BaseModel):
    """``recipe.json``: what was trained, on what, and how the recipe was changed."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    variant: str
    paper: str
    data: str
    overrides: dict[str, Any] = {}
    options: dict[str, Any] = {}
    """Build options of the model (num_classes, image_size, dropout)."""
    classes: list[str]
    normalize: dict[str, list[float]] | None = None
    """The per-channel mean and std the inputs are normalised with, for evaluation."""
    recipe: TrainConfig
    world_size: int = 1
    threads: int | None = None
    """The intra-op CPU threads of each process (``--threads``, else torch's default) when it started."""
    weights: str | None = None
    """The weights the run started from (``--weights``), as given; none: the graph's initialisation."""
    tensorboard: str | None = None
    """The folder in the run folder of TensorBoard's event files (where ``tensorboard`` is installed)."""
    papers_version: str = ""
    torch_version: str = ""


@dataclass
class Run:
    """The outcome of :func:`train`: the per-epoch metrics and where they were written."""

    folder: Path | None
    record: RunRecord
    metrics: list[dict[str, Any]]
    finished: bool

    @property
    def final(self) -> dict[str, Any]:
        return self.metrics[-1] if self.metrics else {}


class _Distributed:
    """The process group torchrun describes in the environment (or a single process)."""

    def __init__(self) -> None:
        import torch

        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        local = int(os.environ.get("LOCAL_RANK", "0"))
        self.device = torch.device(f"cuda:{local}" if torch.cuda.is_available() else "cpu")
        self.started = False
        self.sums: Any = None  # the process group that sums metrics (below)
        if self.world > 1:
            import torch.distributed as dist

            if self.device.type == "cuda":
                torch.cuda.set_device(self.device)
            if not dist.is_initialized():
                dist.init_process_group("nccl" if self.device.type == "cuda" else "gloo")
                self.started = True
            # Sums of metrics go through a group of their own. DistributedDataParallel's reducer
            # keeps the default group, and its worker threads, alive past destroy_process_group;
            # a worker that drops the last reference to a tensor Python made needs the GIL, and
            # one that asks for it while the interpreter shuts down aborts the process
            # ("terminate called without an active exception", one rank in about 16 on two
            # cores). This group is destroyed in close(), which joins its threads first.
            self.sums = dist.new_group()

    @property
    def main(self) -> bool:
        return self.rank == 0

    def total(self, values: list[float]) -> list[float]:
        """Sum ``values`` over every process (in float64, so counts and sums stay exact)."""
        if self.world == 1:
            return values
        import torch
        import torch.distributed as dist

        tensor = torch.tensor(values, dtype=torch.float64, device=self.device)
        dist.all_reduce(tensor, group=self.sums)
        return tensor.tolist()

    def same_as_main(self, module: Any) -> None:
        """Copy rank 0's buffers (batch norm's running statistics) into every process's ``module``:
        each process updates its own from its share of the batch, and scoring in shares must score
        the weights rank 0 saves."""
        if self.world == 1:
            return
        import torch.distributed as dist

        for buffer in module.buffers():
            dist.broadcast(buffer, src=0, group=self.sums)

    def gather(self, value: Any) -> list[Any]:
        """Every process's ``value`` (any picklable object), in rank order, in every process."""
        if self.world == 1:
            return [value]
        import torch.distributed as dist

        gathered: list[Any] = [None] * self.world
        dist.all_gather_object(gathered, value, group=self.sums)
        return gathered

    def close(self) -> None:
        if self.world == 1:
            return
        import torch.distributed as dist

        if self.sums is not None:
            dist.destroy_process_group(self.sums)
            self.sums = None  # the last reference: the group's threads are joined here
        if self.started:
            dist.destroy_process_group()


def train(
    variant: str,
    data: str | None = None,
    *,
    overrides: Mapping[str, Any] | None = None,
    out: str | Path | None = None,
    resume: str | Path | None = None,
    progress: bool = True,
    stop_after: int | None = None,
    workers: int = 0,
    threads: int | None = None,
    weights: str | Path | None = None,
    options: Mapping[str, Any] | None = None,
    log: Callable[[str], None] | None = None,
) -> Run:
    """Train ``variant`` on ``data`` with its paper's recipe and ``overrides`` (dotted recipe fields).

    ``out`` is the run folder (none: nothing is written); ``resume`` continues a run folder from its
    last checkpoint. ``stop_after`` ends this call cleanly after that many epochs, as an interrupt would.
    ``threads`` sets torch's intra-op threads for the run (none: torch's default), restored after it.
    ``weights`` (ours as .safetensors, a torchvision / timm state dict, or a library's pretrained
    weights by name, ``torchvision:resnet18``: see :mod:`papers.pretrained`) replaces the initial
    weights, loaded strictly as ``papers eval`` loads them. A resumed run takes ``overrides`` of
    ``epochs`` only, and only more than it had: it is extended.
    ``options`` are a segmenter's or detector's build options (graph parameters); a classifier's come
    from its recipe.
    """
    from papers.detect import class_detector, is_detector
    from papers.train_detection import train_detector
    from papers.train_segmentation import is_segmenter, train_segmenter

    detector = is_detector(variant) or class_detector(variant) is not None
    task_loop = train_segmenter if is_segmenter(variant) else train_detector if detector else None
    if task_loop is not None:  # papers.train_segmentation, papers.train_detection (papers.task_runs)
        if weights is not None and resume is not None:
            raise RunError(
                "a resumed run continues from its checkpoint; --weights starts a new run", field="--weights"
            )
        if data is None and resume is None:
            raise RunError("name the training data with --data", field="--data")
        if options and resume is not None:
            raise RunError("a resumed run keeps its build options", field="--option")
        with intra_op_threads(threads):
            processes = _Distributed()  # under torchrun, data-parallel as classification runs are
            try:
                return task_loop(  # type: ignore[return-value]
                    variant,
                    data,
                    overrides=overrides,
                    out=out,
                    log=log,
                    resume=resume,
                    weights=weights,
                    stop_after=stop_after,
                    options=options,
                    processes=processes,
                )
            finally:
                processes.close()
    if options:
        raise RunError(
            "a classifier's build options come from its recipe (-r input_size=, -r dropout=)",
            field="--option",
        )
    if weights is not None and resume is not None:
        raise RunError(
            "a resumed run continues from its checkpoint; --weights starts a new run", field="--weights"
        )
    with intra_op_threads(threads):
        return _train(variant, data, overrides, out, resume, progress, stop_after, workers, weights, log)


@contextlib.contextmanager
def intra_op_threads(threads: int | None) -> Iterator[None]:
    """Run the block with ``threads`` intra-op CPU threads (none: as they are), restored after it."""
    import torch

    if threads is None:
        yield
        return
    if threads < 1:
        raise RunError(f"threads must be at least 1, not {threads}", field="--threads")
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _train(
    variant: str,
    data: str | None,
    overrides: Mapping[str, Any] | None,
    out: str | Path | None,
    resume: str | Path | None,
    progress: bool,
    stop_after: int | None,
    workers: int,
    weights: str | Path | None,
    log: Callable[[str], None] | None,
) -> Run:
    import torch

    from papers.api import build_model, expand_variant, get_spec
    from papers.data import class_names, training_data
    from papers.recipe import check_length, check_processes, resolve

    dist = _Distributed()
    initial = None  # the state dict of --weights, read before the data
    say = log or (lambda line: print(line, file=sys.stderr, flush=True))
    try:
        if resume is not None:
            folder: Path | None = Path(resume)
            record, start = _resumed(folder, variant, data, overrides)
            data = record.data if data is None else data
        else:
            if data is None:
                raise RunError("name the training data with --data", field="--data")
            spec = get_spec(variant)
            config = resolve(spec, overrides, variant=variant)
            check_length(config)  # before any data is read
            initial = None if weights is None else _start_weights(weights)
            classes = class_names(data)
            options = _build_options(spec, variant, config, len(classes))
            record = RunRecord(
                variant=variant,
                paper=spec.id,
                data=data,
                overrides=dict(overrides or {}),
                options=options,
                classes=classes,
                recipe=config,
                world_size=dist.world,
                threads=torch.get_num_threads(),
                weights=None if weights is None else str(weights),
                tensorboard=TENSORBOARD if _has_tensorboard() else None,
                papers_version=_version(),
                torch_version=torch.__version__,
            )
            folder = Path(out) if out is not None else None
            # only rank 0 writes, so only it asks: another rank might see the folder rank 0 just made
            if dist.main and folder is not None and _holds_anything(folder):
                raise RunError(
                    "run folder exists and is not empty; resume it with --resume", file=str(folder)
                )
            start = None
        config = record.recipe
        check_processes(config, dist.world)
        if config.precision == "fp16" and dist.device.type != "cuda":
            raise RecipeError("fp16 autocast needs a GPU; use bf16 on CPUs", field="-r precision")
        shape = image_shape(expand_variant(variant, **record.options), "training")
        if config.input_size is not None and list(shape[1:]) != list(config.input_size):
            raise RecipeError(
                f"{variant} takes {shape[1]}×{shape[2]} images (its graph has no image_size parameter); "
                f"input_size {config.input_size} cannot apply",
                field="-r input_size",
            )
        _check_channels(config, shape, record)
        _check_memory(config, shape, record, dist)
        with readable(data):
            loaded = training_data(data, config, shape)
        if loaded.classes != record.classes:
            raise RunError(f"the classes of {data} differ from the run's", file=str(folder))
        if resume is None:
            record = record.model_copy(update={"normalize": loaded.normalize})
        torch.manual_seed(config.seed)  # the same initial weights in every process
        model = build_model(variant, **record.options).to(dist.device)
        if start is not None:
            _check_fits(model, start)
        elif weights is not None:
            _fit_start(model, initial, weights, variant)
        return _Loop(dist, record, model, loaded, folder, start, progress, stop_after, workers, say).run()
    finally:
        dist.close()


def _start_weights(weights: str | Path) -> dict[str, Any]:
    """The state dict a new run starts from: a file's, or a library's pretrained weights by name."""
    from papers.evaluate import load_weights
    from papers.pretrained import is_library_weights, library_state_dict

    return library_state_dict(str(weights)) if is_library_weights(weights) else load_weights(weights)


def _fit_start(model: Any, state: Mapping[str, Any] | None, weights: str | Path, variant: str) -> None:
    """Load the starting weights strictly; a library's that do not fit say what the variant is built as."""
    from papers.api import get_registry
    from papers.evaluate import WeightsError, fit_weights
    from papers.pretrained import is_library_weights

    assert state is not None
    try:
        fit_weights(model, state, file=str(weights))
    except WeightsError as error:
        if not is_library_weights(weights):
            raise
        reference = get_registry().variant(variant)[1].reference
        built = f"its reference is {reference}" if reference else "it names no library reference"
        raise WeightsError(
            f"{error.message} ({variant}: {built})", file=str(weights), field="--weights"
        ) from None


def _resumed(
    folder: Path, variant: str, data: str | None, overrides: Mapping[str, Any] | None
) -> tuple[RunRecord, dict[str, Any] | None]:
    recipe = folder / RECIPE
    if not recipe.is_file():
        raise RunError(f"no {RECIPE}: not a run folder", file=str(folder))
    try:
        record = RunRecord.model_validate_json(recipe.read_bytes())
    except ValueError as exc:
        raise RunError(f"unreadable {RECIPE}: {str(exc).splitlines()[0]}", file=str(recipe)) from None
    if record.variant != variant:
        raise RunError(f"the run trains {record.variant}, not {variant}", file=str(folder))
    overrides = dict(overrides or {})
    epochs = overrides.pop("epochs", None)
    if overrides:
        raise RunError(
            "a resumed run keeps its recipe (only --epochs extends it); start a new run", field="-r"
        )
    if epochs is not None:
        before = record.recipe.epochs
        if before is None or not isinstance(epochs, int) or epochs < before:
            raise RunError(
                f"a resumed run may be extended to more epochs than its {before}, not {epochs!r}",
                field="--epochs",
            )
        record = record.model_copy(
            update={
                "recipe": record.recipe.model_copy(update={"epochs": epochs}),
                "overrides": {**record.overrides, "epochs": epochs},
            }
        )
    try:  # the plugin that contributed them may be gone
        get_criterion(record.recipe.criterion)
        get_optimizer(record.recipe.optimizer.name)
    except RecipeError as error:
        raise error.located(file=str(recipe), field="recipe") from None
    return record, _read_last(folder)


class _Pointer(BaseModel):
    """``checkpoints/last.json``: the epoch and the files of the last complete checkpoint."""

    model_config = ConfigDict(extra="forbid", strict=True)

    epoch: int = Field(ge=1)
    weights: str = Field(min_length=1)
    optimizer: str = Field(min_length=1)
    state: str = Field(min_length=1)
    ema: str | None = Field(None, min_length=1)


class _State(BaseModel):
    """A checkpoint's JSON: where the run stands, and the optimizer's and scheduler's non-tensor state."""

    model_config = ConfigDict(extra="forbid", strict=True)

    epoch: int = Field(ge=1)
    step: int = Field(ge=0)
    optimizer: dict[str, Any]
    scheduler: dict[str, Any] | None
    metrics: list[dict[str, Any]]
    warmed: bool = False


def _read_last(folder: Path) -> dict[str, Any] | None:
    """The last checkpoint's state, its pointer and the names and shapes of its tensors, every part
    checked (nothing outside the run folder is opened), or ``None`` when there is no checkpoint."""
    last = folder / CHECKPOINTS / LAST
    if not last.is_file():
        return None
    try:
        pointer = _Pointer.model_validate_json(last.read_bytes())
    except OSError as exc:
        raise RunError(f"unreadable checkpoint pointer: {exc.strerror or exc}", file=str(last)) from None
    except ValueError as exc:
        raise RunError(f"damaged checkpoint pointer: {_first_error(exc)}", file=str(last)) from None
    keys = ("weights", "optimizer", "state") + (("ema",) if pointer.ema is not None else ())
    paths = {key: _inside(folder, last, key, getattr(pointer, key)) for key in keys}
    try:
        state = _State.model_validate_json(paths["state"].read_bytes())
    except OSError as exc:
        raise RunError(f"unreadable checkpoint: {exc.strerror or exc}", file=str(paths["state"])) from None
    except ValueError as exc:
        raise RunError(f"damaged checkpoint: {_first_error(exc)}", file=str(paths["state"])) from None
    if state.epoch != pointer.epoch or len(state.metrics) != state.epoch:
        raise RunError(
            f"damaged checkpoint: epoch {state.epoch} with {len(state.metrics)} epochs of metrics, "
            f"and last.json says epoch {pointer.epoch}",
            file=str(paths["state"]),
        )
    _tensor_shapes(paths["optimizer"])  # a truncated file is refused now, not after the data is read
    if "ema" in paths:
        _tensor_shapes(paths["ema"])
    return state.model_dump() | {
        "pointer": {key: str(path) for key, path in paths.items()},
        "weights": _tensor_shapes(paths["weights"]),
    }


def _inside(folder: Path, last: Path, key: str, name: str) -> Path:
    """``checkpoints/NAME``, refused unless it lies inside the run folder (links followed)."""
    path = folder / CHECKPOINTS / name
    if not path.resolve().is_relative_to(folder.resolve()):
        raise RunError(
            f"names {name!r}, outside the run folder; refusing to open it", file=str(last), field=key
        )
    if not path.is_file():
        raise RunError(f"names {name!r}, which is missing", file=str(last), field=key)
    return path


def _tensor_shapes(path: Path) -> dict[str, tuple[int, ...]]:
    """The names and shapes of a safetensors file's tensors, read from its header (which also finds a
    truncated file) without loading them."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as handle:
            return {key: tuple(handle.get_slice(key).get_shape()) for key in handle.keys()}  # noqa: SIM118
    except Exception as exc:  # safetensors raises its own error, not OSError, for a damaged file
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise RunError(f"damaged checkpoint: {reason}", file=str(path)) from None


def _check_fits(model: Any, start: dict[str, Any]) -> None:
    """Refuse checkpoint weights whose names or shapes differ from the model's, naming them."""
    own = {name: tuple(tensor.shape) for name, tensor in model.state_dict().items()}
    saved = start["weights"]
    missing = sorted(set(own) - set(saved))
    unexpected = sorted(set(saved) - set(own))
    mismatched = [f"{n} {saved[n]} vs {own[n]}" for n in own if n in saved and saved[n] != own[n]]
    problems = []
    for label, names in (("shape mismatch", mismatched), ("missing", missing), ("unexpected", unexpected)):
        if names:
            shown = ", ".join(names[:6]) + (f" and {len(names) - 6} more" if len(names) > 6 else "")
            problems.append(f"{label}: {shown}")
    if problems:
        raise RunError(
            "checkpoint weights do not fit the model: " + "; ".join(problems),
            file=start["pointer"]["weights"],
        )


def _first_error(exc: ValueError) -> str:
    from pydantic import ValidationError

    if isinstance(exc, ValidationError):
        first = exc.errors(include_url=False)[0]
        where = ".".join(str(part) for part in first["loc"])
        return f"{where}: {first['msg']}" if where else first["msg"]
    return str(exc).splitlines()[0]


def _holds_anything(folder: Path) -> bool:
    """Whether ``folder`` exists and holds something other than temporaries a killed writer left."""
    if not folder.is_dir():
        return folder.exists()
    return any(not _stale(child) for child in folder.iterdir())


def remove_stale_temporaries(folder: Path, *, prefix: str = ".") -> list[Path]:
    """Remove the temporary files of :func:`papers.files.write_atomic` (``.NAME.tmp-PID``) in ``folder``
    whose name starts with ``prefix`` and whose writer is no longer running (``kill -9``)."""
    removed = []
    try:
        children = [child for child in folder.iterdir() if child.name.startswith(prefix)]
    except OSError:
        return removed
    for child in children:
        if _stale(child):
            with contextlib.suppress(OSError):
                child.unlink()
                removed.append(child)
    return removed


def _stale(path: Path) -> bool:
    name = path.name
    head, sep, pid = name.rpartition(".tmp-")
    if not name.startswith(".") or not sep or not head[1:] or not pid.isdigit() or not path.is_file():
        return False
    return not _alive(int(pid))


def _alive(pid: int) -> bool:
    if pid <= 0:
        return False
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # another user's process, or no way to tell: keep its file
        return True
    return True


def _check_channels(config: TrainConfig, shape: tuple[int, int, int], record: RunRecord) -> None:
    """Refuse a normalisation whose mean and std are not one per input channel of the model."""
    for index, a in enumerate(config.augmentation):
        mean = a.args.get("mean") if a.name == "normalize" else None
        if isinstance(mean, list) and len(mean) != shape[0]:
            given = "augmentation" in record.overrides
            raise RecipeError(
                f"normalize gives {len(mean)} means; {record.variant} takes {shape[0]}-channel images",
                field=f"-r augmentation[{index}].args.mean"
                if given
                else f"hyperparameters.augmentation[{index}]",
            )


def _check_memory(config: TrainConfig, shape: tuple[int, int, int], record: RunRecord, dist: Any) -> None:
    """Refuse a batch (and the digits, held in memory) too large for this machine, before allocating."""
    from papers.data import IN_MEMORY, check_memory, in_memory_bytes

    field = "-r input_size" if "input_size" in record.overrides else "-r batch_size"
    image = 4 * shape[0] * shape[1] * shape[2]
    per_process = max(1, config.batch_size // dist.world)
    check_memory(
        f"a batch of {per_process} images of {shape[0]}×{shape[1]}×{shape[2]}",
        per_process * image,
        field=field,
    )
    if dist.device.type == "cuda":
        import torch

        total = torch.cuda.get_device_properties(dist.device).total_memory
        if per_process * image > total / 2:
            raise DataError(
                f"a batch of {per_process} images of {shape[0]}×{shape[1]}×{shape[2]} would take more than "
                f"half of the GPU's memory",
                field=field,
            )
    if record.data in IN_MEMORY:
        size = f"{shape[0]}×{shape[1]}×{shape[2]}"
        check_memory(f"{record.data} at {size}", in_memory_bytes(record.data, shape), field=field)


def _build_options(spec: Any, variant: str, config: TrainConfig, num_classes: int) -> dict[str, Any]:
    from papers.registry import get_registry

    registry = get_registry()
    entry, chosen = spec, spec.variant(variant)
    while chosen.base is not None:  # a method variant takes its base's graph parameters
        owner, chosen = registry.variant(chosen.base)
        entry = owner.spec
    graph = entry.graphs[chosen.graph]
    options: dict[str, Any] = {"num_classes": num_classes}
    if config.input_size is not None and "image_size" in graph.params:
        height, width = config.input_size
        if height != width:
            raise RecipeError(
                "the graph takes square images; input_size must be square", field="-r input_size"
            )
        options["image_size"] = height
    if config.dropout is not None and "dropout" in graph.params:
        options["dropout"] = config.dropout
    if config.aux_weight is not None and "aux_logits" in graph.params:
        options["aux_logits"] = True  # the auxiliary classifiers train; evaluation reads the logits
    return options


def _version() -> str:
    from importlib import metadata

    try:
        return metadata.version("papers")
    except metadata.PackageNotFoundError:
        return ""


class _Loop:
    def __init__(
        self,
        dist: _Distributed,
        record: RunRecord,
        model: Any,
        data: Any,
        folder: Path | None,
        start: dict[str, Any] | None,
        progress: bool,
        stop_after: int | None,
        workers: int,
        say: Callable[[str], None],
    ):
        import torch

        self.dist, self.record, self.config, self.data = dist, record, record.recipe, data
        self.folder, self.start, self.stop_after, self.say = folder, start, stop_after, say
        self.progress = progress and dist.main
        self.writes = folder is not None and dist.main
        self.sampler = torch.utils.data.DistributedSampler(
            data.train,
            num_replicas=dist.world,
            rank=dist.rank,
            shuffle=True,
            seed=self.config.seed,
            drop_last=True,
        )
        self.per_process = self.config.batch_size // dist.world
        self.loader = torch.utils.data.DataLoader(
            data.train, batch_size=self.per_process, sampler=self.sampler, drop_last=True, num_workers=workers
        )
        self.steps_per_epoch = len(self.loader)
        if self.steps_per_epoch == 0:
            raise RecipeError(
                f"batch_size {self.config.batch_size} is larger than the {len(data.train)} training images",
                field="-r batch_size",
            )
        if self.config.epochs is not None:
            self.epochs = self.config.epochs
        elif self.config.iterations is not None:
            self.epochs = math.ceil(self.config.iterations / self.steps_per_epoch)
        else:
            raise RecipeError("the recipe gives neither epochs nor iterations; pass --epochs", field="epochs")
        if self.config.channels_last:
            model = model.to(memory_format=torch.channels_last)
        model = sync_batchnorm(model, self.config, dist.world, dist.device.type)
        self.module = model
        if dist.world > 1:
            from torch.nn.parallel import DistributedDataParallel

            ids = [dist.device.index] if dist.device.type == "cuda" else None
            model = DistributedDataParallel(model, device_ids=ids)
        self.model = model
        from papers.recipe import make_loss, make_optimizer, make_scheduler

        self.criterion = get_criterion(self.config.criterion)
        self.loss = make_loss(self.config, self.module, dist.device)
        self.optimizer = make_optimizer(self.config, self.module.parameters())
        self.scheduler = make_scheduler(
            self.config, self.optimizer, epochs=self.epochs, steps_per_epoch=self.steps_per_epoch
        )
        self.metrics: list[dict[str, Any]] = []
        self.interrupts = _Interrupts()
        self.epoch = 0
        self.step = 0
        self.warmed = self.config.warmup is None
        self.ema: dict[str, Any] | None = None
        self.averaged: Any = None  # the model the average is evaluated in
        if self.config.ema_decay is not None:
            import copy

            self.ema = {k: v.detach().clone() for k, v in self.module.state_dict().items()}
            self.averaged = copy.deepcopy(self.module)
        self.mix = _batch_mixer(self.config, len(data.classes))
        self.step_rows: list[dict[str, Any]] = []
        self.board: Any = None  # TensorBoard's SummaryWriter, opened at the first checkpoint
        self.scaler = torch.amp.GradScaler(enabled=self.config.precision == "fp16")

    # -- the loop -----------------------------------------------------------------------------

    def run(self) -> Run:
        try:
            return self._run()
        finally:
            if self.board is not None:
                self.board.close()

    def _run(self) -> Run:
        made = fresh = False
        if self.start is not None:
            self._restore(self.start)
        if self.writes:
            assert self.folder is not None
            for place in (self.folder, self.folder / CHECKPOINTS):
                remove_stale_temporaries(place)
        if self.writes and self.start is None:
            assert self.folder is not None
            made = not self.folder.exists()
            fresh = made or not any(self.folder.iterdir())
            (self.folder / CHECKPOINTS).mkdir(parents=True, exist_ok=True)
        if self.writes:  # a resumed run rewrites it: it may have been extended
            assert self.folder is not None
            _atomic_write(self.folder / RECIPE, self.record.model_dump_json(indent=2).encode())
        if self.dist.main and self.epoch:
            self.say(f"resuming {self.record.variant} after epoch {self.epoch}/{self.epochs}")
        ran = 0
        try:
            with self.interrupts.installed():
                while self.epoch < self.epochs and not self._steps_done():
                    if self.stop_after is not None and ran >= self.stop_after:
                        return Run(self.folder, self.record, self.metrics, finished=False)
                    with readable(self.record.data):  # an image that cannot be read or decoded
                        self._epoch()
                    ran += 1
        except BaseException:
            if fresh and self.folder is not None and not (self.folder / CHECKPOINTS / LAST).exists():
                _remove(self.folder, itself=made)  # nothing worth resuming was written
            raise
        if self.writes:
            assert self.folder is not None
            _atomic_write(self.folder / FINAL_WEIGHTS, _safetensors(self._evaluated().state_dict()))
        return Run(self.folder, self.record, self.metrics, finished=True)

    def _evaluated(self) -> Any:
        """The model evaluated and saved: the average of the weights where the recipe keeps one."""
        if self.ema is None:
            return self.module
        self.averaged.load_state_dict(self.ema)
        return self.averaged

    def _steps_done(self) -> bool:
        return self.config.iterations is not None and self.step >= self.config.iterations

    def _epoch(self) -> None:
        import torch

        started = time.perf_counter()
        torch.manual_seed(_epoch_seed(self.config.seed, self.epoch, self.dist.rank))
        self.sampler.set_epoch(self.epoch)
        self.model.train()
        lr = self._rate() * self.optimizer.param_groups[0]["lr"]
        loss_sum = correct = seen = 0.0
        bar = _Progress(self.steps_per_epoch, f"epoch {self.epoch + 1}/{self.epochs}", self.progress)
        for images, labels in self.loader:
            images, labels = images.to(self.dist.device), labels.to(self.dist.device)
            if self.config.channels_last:
                images = images.contiguous(memory_format=torch.channels_last)
            targets = labels  # class indices, or class probabilities of mixed images
            if self.mix is not None:
                images, targets = self.mix(images, labels)
            loss, right = self._step(images, targets, labels)
            self.step += 1
            if self.scheduler is not None and self.config.schedule.unit == "iteration":
                self.scheduler.step()
            if self.config.log_steps and self.step % self.config.log_steps == 0:
                rate = self._rate() * self.optimizer.param_groups[0]["lr"]
                self.step_rows.append({"step": self.step, "epoch": self.epoch + 1, "lr": rate, "loss": loss})
            loss_sum += loss * len(labels)
            correct += right
            seen += len(labels)
            if not self.warmed:
                self._end_warmup(correct, seen)
            bar.update(loss, len(labels) * self.dist.world)
            if self._steps_done():
                break
        bar.close()
        train_seconds = time.perf_counter() - started
        loss_sum, correct, seen = self.dist.total([loss_sum, correct, seen])
        entry: dict[str, Any] = {
            "epoch": self.epoch + 1,
            "step": self.step,
            "lr": lr,
            "train_loss": loss_sum / seen,
            "train_accuracy": 100.0 * correct / seen,
        }
        entry.update(self._evaluate())
        entry["images_per_second"] = round(seen / max(train_seconds, 1e-9), 1)
        entry["seconds"] = round(time.perf_counter() - started, 3)
        self.epoch += 1
        if not self.warmed and self.config.warmup is not None and self.config.warmup.epochs is not None:
            self.warmed = self.epoch >= self.config.warmup.epochs
        self.metrics.append(entry)
        if self.scheduler is not None and self.config.schedule.unit == "epoch":
            if self.config.schedule.name == "plateau":
                self.scheduler.step(self._monitored(entry))
            else:
                self.scheduler.step()
        if self.dist.main:
            line = _log_line(entry, self.epochs)
            self.say(line)
            if self.writes:
                with self.interrupts.deferred():
                    self._checkpoint(line)

    def _step(self, images: Any, targets: Any, labels: Any) -> tuple[float, float]:
        """One optimisation step on a batch (in ``accumulation_steps`` parts): its mean loss and the
        number of images whose top class is their own label (before any mixing)."""
        import torch

        parts = self.config.accumulation_steps
        autocast = torch.autocast(
            self.dist.device.type,
            dtype=torch.float16 if self.config.precision == "fp16" else torch.bfloat16,
            enabled=self.config.precision != "fp32",
        )
        self.optimizer.zero_grad(set_to_none=True)
        loss_total = correct = 0.0
        for index, (x, t, y) in enumerate(
            zip(images.chunk(parts), targets.chunk(parts), labels.chunk(parts), strict=True)
        ):
            # DDP averages gradients on the last part only
            sync = (
                self.model.no_sync()
                if parts > 1 and index < parts - 1 and self.dist.world > 1
                else contextlib.nullcontext()
            )
            with sync:
                with autocast:
                    output = self.model(x)
                    loss = self._loss_of(output, t)
                self.scaler.scale(loss / parts).backward()
            main = _main_output(output).detach().float()
            loss_total += float(loss.detach()) / parts
            correct += float((self.criterion.scores(main).argmax(-1) == y).sum())
        if self.config.grad_clip is not None:
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self.module.parameters(), self.config.grad_clip)
        rate = self._rate()
        if rate != 1.0:  # the warm-up scales the scheduled rate for this step only
            scheduled = [group["lr"] for group in self.optimizer.param_groups]
            for group in self.optimizer.param_groups:
                group["lr"] *= rate
        self.scaler.step(self.optimizer)
        self.scaler.update()
        if rate != 1.0:
            for group, value in zip(self.optimizer.param_groups, scheduled, strict=True):
                group["lr"] = value
        if self.ema is not None:
            self._average()
        return loss_total, correct

    def _loss_of(self, output: Any, targets: Any) -> Any:
        """The criterion on the logits, plus each auxiliary classifier's, weighted, where it trains."""
        loss = self.loss(_main_output(output), targets)
        if self.config.aux_weight is not None and isinstance(output, tuple):
            for aux in output[1:]:
                loss = loss + self.config.aux_weight * self.loss(aux, targets)
        return loss

    def _rate(self) -> float:
        """The warm-up's multiplier of the scheduled rate (1 once it is over)."""
        warmup = self.config.warmup
        if warmup is None or self.warmed:
            return 1.0
        if warmup.iterations is not None and self.step >= warmup.iterations:
            self.warmed = True
            return 1.0
        return warmup.lr / self.config.optimizer.lr

    def _end_warmup(self, correct: float, seen: float) -> None:
        """End a warm-up by training error once the epoch's running error is below its threshold (the
        same decision in every process: the counts are summed over them)."""
        threshold = None if self.config.warmup is None else self.config.warmup.until_train_error
        if threshold is None:
            return
        correct, seen = self.dist.total([correct, seen])
        if 100.0 * (1 - correct / seen) < threshold:
            self.warmed = True

    def _average(self) -> None:
        import torch

        assert self.ema is not None and self.config.ema_decay is not None
        decay = self.config.ema_decay
        with torch.no_grad():
            for name, value in self.module.state_dict().items():
                if value.dtype.is_floating_point:
                    self.ema[name].mul_(decay).add_(value.detach(), alpha=1 - decay)
                else:
                    self.ema[name].copy_(value)

    def _evaluate(self) -> dict[str, Any]:
        """Loss, top-1 and top-5 on the held-out split, shared out over the processes."""
        import torch

        from papers.evaluate import count_correct

        if self.data.test is None:
            return {}
        shard = torch.utils.data.Subset(
            self.data.test, range(self.dist.rank, len(self.data.test), self.dist.world)
        )
        loader = torch.utils.data.DataLoader(shard, batch_size=max(self.per_process, 64))
        model = self._evaluated()
        model.eval()
        loss_sum = top1 = top5 = seen = 0.0
        with torch.inference_mode():
            for images, labels in loader:
                images, labels = images.to(self.dist.device), labels.to(self.dist.device)
                output = _main_output(model(images))
                loss_sum += float(self.loss(output, labels)) * len(labels)
                one, five = count_correct(self.criterion.scores(output), labels)
                top1, top5, seen = top1 + one, top5 + five, seen + len(labels)
        loss_sum, top1, top5, seen = self.dist.total([loss_sum, top1, top5, seen])
        return {
            "val_loss": loss_sum / seen,
            "val_top1": 100.0 * top1 / seen,
            "val_top5": 100.0 * top5 / seen,
        }

    def _monitored(self, entry: dict[str, Any]) -> float:
        monitor = self.config.schedule.monitor or "val_error"
        if monitor.startswith("val_") and "val_loss" not in entry:
            monitor = "train_" + monitor.removeprefix("val_").replace("error", "accuracy")
        return {
            "val_error": lambda: 100.0 - entry["val_top1"],
            "val_accuracy": lambda: entry["val_top1"],
            "val_loss": lambda: entry["val_loss"],
            "train_accuracy": lambda: entry["train_accuracy"],
            "train_loss": lambda: entry["train_loss"],
        }[monitor]()

    # -- checkpoints --------------------------------------------------------------------------

    def _checkpoint(self, line: str) -> None:
        assert self.folder is not None
        folder = self.folder / CHECKPOINTS
        stem = f"epoch-{self.epoch:04d}"
        tensors, optimizer_json = _split_optimizer(self.optimizer.state_dict())
        _atomic_write(folder / f"{stem}.safetensors", _safetensors(self.module.state_dict()))
        _atomic_write(folder / f"{stem}.optimizer.safetensors", _safetensors(tensors))
        state = {
            "epoch": self.epoch,
            "step": self.step,
            "optimizer": optimizer_json,
            "scheduler": None if self.scheduler is None else self.scheduler.state_dict(),
            "metrics": self.metrics,
        }
        state["warmed"] = self.warmed
        _atomic_write(folder / f"{stem}.json", json.dumps(state, indent=1).encode())
        pointer = {
            "epoch": self.epoch,
            "weights": f"{stem}.safetensors",
            "optimizer": f"{stem}.optimizer.safetensors",
            "state": f"{stem}.json",
        }
        if self.ema is not None:
            _atomic_write(folder / f"{stem}.ema.safetensors", _safetensors(self.ema))
            pointer["ema"] = f"{stem}.ema.safetensors"
        tops = [m["val_top1"] for m in self.metrics if "val_top1" in m]
        if tops and tops[-1] == max(tops) and tops.index(max(tops)) == len(tops) - 1:
            _atomic_write(self.folder / BEST_WEIGHTS, _safetensors(self._evaluated().state_dict()))
        _atomic_write(folder / LAST, json.dumps(pointer, indent=1).encode())
        _atomic_write(self.folder / METRICS, json.dumps(self.metrics, indent=1).encode())
        _atomic_write(self.folder / METRICS_CSV, _csv(self.metrics))
        rows, self.step_rows = self.step_rows, []
        if rows:
            _append_steps(self.folder / STEPS_CSV, rows, self.step)
        with open(self.folder / "log.txt", "a", encoding="utf-8") as handle:
            handle.write(line + "\n")
        kept = {
            f"epoch-{epoch:04d}." for epoch in range(self.epoch - self.config.keep_last + 1, self.epoch + 1)
        }
        for old in folder.glob("epoch-*"):
            if not any(old.name.startswith(prefix) for prefix in kept):
                old.unlink(missing_ok=True)
        self._to_board(self.metrics[-1], rows)

    def _to_board(self, entry: dict[str, Any], rows: list[dict[str, Any]]) -> None:
        """Add the epoch's scalars (``epoch/val_top1``...) and its logged steps' (``step/loss``) to
        TensorBoard's event files, where the run keeps them."""
        if self.record.tensorboard is None or not _has_tensorboard():
            return
        assert self.folder is not None
        if self.board is None:
            from torch.utils.tensorboard import SummaryWriter

            self.board = SummaryWriter(str(self.folder / self.record.tensorboard))
        for row in rows:
            for name in ("lr", "loss"):
                self.board.add_scalar(f"step/{name}", row[name], row["step"])
        for name, value in entry.items():
            if name not in ("epoch", "step") and isinstance(value, (int, float)):
                self.board.add_scalar(f"epoch/{name}", value, entry["epoch"])
        self.board.flush()

    def _restore(self, state: dict[str, Any]) -> None:
        from safetensors.torch import load_file

        pointer = state["pointer"]
        device = str(self.dist.device)
        try:
            self.module.load_state_dict(load_file(pointer["weights"], device=device))
        except Exception as exc:  # a file damaged since it was checked
            reason = " ".join(str(exc).split())[:200] or type(exc).__name__
            raise RunError(f"damaged checkpoint: {reason}", file=pointer["weights"]) from None
        try:
            tensors = load_file(pointer["optimizer"], device=device)
            self.optimizer.load_state_dict(_join_optimizer(tensors, state["optimizer"]))
            if self.scheduler is not None and state["scheduler"] is not None:
                self.scheduler.load_state_dict(_from_json(state["scheduler"], self.scheduler.state_dict()))
        # torch raises ValueError, KeyError, TypeError... for a state that does not fit
        except Exception as exc:
            reason = " ".join(str(exc).split())[:200] or type(exc).__name__
            raise RunError(
                f"damaged checkpoint: the optimizer's or scheduler's state does not fit: {reason}",
                file=pointer["state"],
            ) from None
        self.epoch, self.step, self.metrics = state["epoch"], state["step"], list(state["metrics"])
        self.warmed = self.config.warmup is None or state.get("warmed", False)
        if self.ema is not None:
            if "ema" not in pointer:
                raise RunError(
                    "damaged checkpoint: the recipe keeps an average and none was saved",
                    file=pointer["state"],
                )
            self.ema = load_file(pointer["ema"], device=device)


def _has_tensorboard() -> bool:
    """Whether the ``tensorboard`` package, which ``torch.utils.tensorboard`` writes with, is installed."""
    import importlib.util

    return importlib.util.find_spec("tensorboard") is not None


def sync_batchnorm(model: Any, config: TrainConfig, world: int, device: str) -> Any:
    """The model with its batch norms synchronised over the processes where the recipe asks for it
    and there are several (NCCL only: refused on CPUs); the parameter names are unchanged."""
    if not config.sync_batchnorm or world == 1:
        return model
    if device != "cuda":
        raise RecipeError(
            "sync_batchnorm needs GPUs (NCCL); gloo on CPUs has no SyncBatchNorm", field="-r sync_batchnorm"
        )
    import torch

    return torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)


def _batch_mixer(config: TrainConfig, classes: int) -> Callable[[Any, Any], Any] | None:
    """MixUp and/or CutMix on a batch (one of the two, at random, where both are on): images and
    class probabilities from images and labels; ``None`` where the recipe mixes nothing."""
    if not config.mixup_alpha and not config.cutmix_alpha:
        return None
    from torchvision.transforms import v2

    mixers = []
    if config.mixup_alpha:
        mixers.append(v2.MixUp(alpha=config.mixup_alpha, num_classes=classes))
    if config.cutmix_alpha:
        mixers.append(v2.CutMix(alpha=config.cutmix_alpha, num_classes=classes))
    return mixers[0] if len(mixers) == 1 else v2.RandomChoice(mixers)


def _append_steps(path: Path, rows: list[dict[str, Any]], step: int) -> None:
    """Add an epoch's step rows to steps.csv, dropping rows past ``step`` that an interrupted epoch
    left (a run killed between this write and its checkpoint repeats that epoch on resume)."""
    import csv
    import io

    kept = ""
    if path.is_file():
        lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
        first = rows[0]["step"]
        kept = "".join(lines[:1] + [line for line in lines[1:] if int(line.split(",", 1)[0]) < first])
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=["step", "epoch", "lr", "loss"], lineterminator="\n")
    if not kept:
        writer.writeheader()
    writer.writerows(row for row in rows if row["step"] <= step)
    _atomic_write(path, (kept + out.getvalue()).encode())


def _csv(metrics: list[dict[str, Any]]) -> bytes:
    """The per-epoch metrics as CSV, one row per epoch, columns in the order they first appear."""
    import csv
    import io

    columns: list[str] = []
    for entry in metrics:
        columns += [key for key in entry if key not in columns]
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(metrics)
    return out.getvalue().encode()


def _main_output(output: Any) -> Any:
    """What the criterion reads: a model with auxiliary heads gives its logits first."""
    return output[0] if isinstance(output, tuple) else output


def _from_json(saved: dict[str, Any], fresh: dict[str, Any]) -> dict[str, Any]:
    """A scheduler state read from JSON, with the integer keys JSON made strings (MultiStepLR's
    milestones counter) turned back."""
    restored = dict(saved)
    for key, value in fresh.items():
        if isinstance(value, Counter) and isinstance(saved.get(key), dict):
            restored[key] = Counter({int(k): v for k, v in saved[key].items()})
    return restored


def _remove(folder: Path, *, itself: bool) -> None:
    if itself:
        shutil.rmtree(folder, ignore_errors=True)
        return
    for child in folder.iterdir():
        if child.is_dir():
            shutil.rmtree(child, ignore_errors=True)
        else:
            child.unlink(missing_ok=True)


def _epoch_seed(seed: int, epoch: int, rank: int) -> int:
    return (seed * 1_000_003 + epoch * 1_009 + rank) % (2**63)


def _split_optimizer(state: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """An optimizer's state dict as safetensors tensors (``param.key``) and JSON for the rest."""
    import torch

    tensors: dict[str, Any] = {}
    plain: dict[str, dict[str, Any]] = {}
    for index, values in state["state"].items():
        for key, value in values.items():
            if isinstance(value, torch.Tensor):
                tensors[f"{index}.{key}"] = value
            else:
                plain.setdefault(str(index), {})[key] = value
    return tensors, {"param_groups": state["param_groups"], "state": plain}


def _join_optimizer(tensors: dict[str, Any], plain: dict[str, Any]) -> dict[str, Any]:
    state: dict[int, dict[str, Any]] = {}
    for name, tensor in tensors.items():
        index, _, key = name.partition(".")
        state.setdefault(int(index), {})[key] = tensor
    for index, values in plain["state"].items():
        state.setdefault(int(index), {}).update(values)
    return {"state": state, "param_groups": plain["param_groups"]}


def _safetensors(tensors: Mapping[str, Any]) -> bytes:
    from safetensors.torch import save

    return save({name: tensor.detach().contiguous().cpu() for name, tensor in tensors.items()})


def _atomic_write(path: Path, content: bytes) -> None:
    """Write through a temporary file renamed into place, flushed to the disk first."""
    try:
        write_atomic(path, content, durable=True)
    except OSError as error:
        raise RunError(f"cannot write: {error.strerror or error}", file=str(path)) from None


class _Interrupts:
    """Ctrl-C and SIGTERM (``kill``) stop the run with KeyboardInterrupt, but never in the middle of
    writing a checkpoint: one that arrives then is raised once the checkpoint is complete."""

    def __init__(self) -> None:
        self.writing = False
        self.pending = False

    def _handle(self, signum: int, frame: Any) -> None:
        if self.writing:
            self.pending = True
            return
        raise KeyboardInterrupt

    @contextlib.contextmanager
    def installed(self) -> Iterator[None]:
        try:
            previous = {s: signal.signal(s, self._handle) for s in (signal.SIGINT, signal.SIGTERM)}
        except ValueError:  # not the main thread: leave signals alone
            yield
            return
        try:
            yield
        finally:
            for number, handler in previous.items():
                signal.signal(number, handler)

    @contextlib.contextmanager
    def deferred(self) -> Iterator[None]:
        self.writing = True
        try:
            yield
        finally:
            self.writing = False
        if self.pending:
            self.pending = False
            raise KeyboardInterrupt


def _log_line(entry: Mapping[str, Any], epochs: int) -> str:
    parts = [
        f"epoch {entry['epoch']}/{epochs}",
        f"loss {entry['train_loss']:.4f}",
        f"acc {entry['train_accuracy']:.2f}%",
    ]
    if "val_loss" in entry:
        parts += [
            f"val_loss {entry['val_loss']:.4f}",
            f"val_top1 {entry['val_top1']:.2f}%",
            f"val_top5 {entry['val_top5']:.2f}%",
        ]
    parts += [f"lr {entry['lr']:.3g}", f"{entry['seconds']:.1f}s"]
    return "  ".join(parts)


class _Progress:
    """A one-line progress bar on stderr, redrawn at most ten times a second; silent off a terminal."""

    def __init__(self, total: int, label: str, enabled: bool):
        self.total, self.label, self.done, self.last = total, label, 0, 0.0
        self.enabled = enabled and sys.stderr.isatty()
        self.started, self.images = time.monotonic(), 0

    def update(self, loss: float, images: int = 0) -> None:
        self.done += 1
        self.images += images
        now = time.monotonic()
        if not self.enabled or (now - self.last < 0.1 and self.done < self.total):
            return
        self.last = now
        filled = round(24 * self.done / self.total)
        elapsed = max(now - self.started, 1e-9)
        left = elapsed / self.done * (self.total - self.done)
        sys.stderr.write(
            f"\r{self.label} [{'#' * filled}{'.' * (24 - filled)}] {self.done}/{self.total} loss {loss:.4f}"
            f"  {self.images / elapsed:.0f} img/s  ETA {_duration(left)}"
        )
        sys.stderr.flush()

    def close(self) -> None:
        if self.enabled:
            sys.stderr.write("\r\x1b[2K")
            sys.stderr.flush()


def _duration(seconds: float) -> str:
    seconds = round(seconds)
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def run_training_check(check: Any, *, progress: bool = True, log: Callable[[str], None] | None = None) -> Run:
    """Run a plugin's :class:`papers.checks.TrainingCheck` in memory (nothing is written), on one thread:
    the checks train small models, which intra-op threads slow down on a shared CPU."""
    with intra_op_threads(1):
        return _train_check(check, progress, log)


def _train_check(check: Any, progress: bool, log: Callable[[str], None] | None) -> Run:
    return train(
        check.variant,
        check.data,
        overrides=dict(check.overrides),
        progress=progress,
        log=log or (lambda _: None),
    )
