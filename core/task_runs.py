"""The run folder of the task loops (``papers train`` of a segmenter or a detector): a checkpoint
after every epoch, resuming from it, and starting weights.

A run folder holds ``recipe.json`` (what was trained, on what, with what), ``metrics.json`` (a row
per epoch), ``model.safetensors`` (the weights after the last finished epoch) and ``checkpoint.pt``
(the optimizer's, the schedule's and the batch sampler's state after that epoch, and its number).
Every file is written under a temporary name and renamed, ``checkpoint.pt`` last, so a run killed
while writing leaves the previous epoch's files whole. ``papers train VARIANT --resume FOLDER``
rebuilds the model with the recorded build options, loads the last epoch's state and goes on as an
uninterrupted run would (the same batches in the same order, the same rates); ``--epochs`` may extend
it, nothing else may change. Classification runs keep their own, richer folder (:mod:`papers.train`).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from papers.errors import PapersError

RECIPE = "recipe.json"
METRICS = "metrics.json"
WEIGHTS = "model.safetensors"
CHECKPOINT = "checkpoint.pt"


@dataclass
class TaskRun:
    """A task loop's run: its folder (none: nothing is written), the recipe it trains with (JSON-ready:
    variant, data, build options and the recipe's values), its per-epoch metrics, and whether it ran
    to its last epoch."""

    folder: Path | None
    recipe: dict[str, Any]
    metrics: list[dict[str, Any]] = field(default_factory=list)
    finished: bool = True

    @property
    def final(self) -> dict[str, Any]:
        return self.metrics[-1] if self.metrics else {}

    def save(self, model: Any, epoch: int, state: Mapping[str, Any] | None = None) -> None:
        """Write the folder after ``epoch``: weights, recipe, metrics, and (``state``: the optimizer's,
        schedule's and sampler's state dicts) the checkpoint a resumed run starts from."""
        if self.folder is None:
            return
        import torch
        from safetensors.torch import save_file

        self.folder.mkdir(parents=True, exist_ok=True)
        weights = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
        _replace(self.folder / WEIGHTS, lambda path: save_file(weights, str(path)))
        _replace(self.folder / RECIPE, lambda path: path.write_text(json.dumps(self.recipe, indent=2) + "\n"))
        _replace(
            self.folder / METRICS, lambda path: path.write_text(json.dumps(self.metrics, indent=2) + "\n")
        )
        if state is not None:
            _replace(self.folder / CHECKPOINT, lambda path: torch.save({"epoch": epoch, **state}, path))


def _replace(path: Path, write: Any) -> None:
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    write(temporary)
    os.replace(temporary, path)


def new_folder(out: str | Path | None) -> Path | None:
    """A new run's folder: absent or empty (a temporary a killed writer left is not content)."""
    if out is None:
        return None
    folder = Path(out)
    if folder.exists() and not folder.is_dir():
        raise PapersError("the run folder is a file", file=str(folder))
    if folder.exists() and any(not p.name.endswith(".tmp") for p in folder.iterdir()):
        raise PapersError("run folder exists and is not empty; resume it with --resume", file=str(folder))
    return folder


@dataclass(frozen=True)
class Resumed:
    """What a resumed run starts from: its recipe (``epochs`` extended if asked), metrics so far, and
    the checkpoint's state (``epoch``, ``optimizer``, ``schedule``, ``generator``)."""

    folder: Path
    recipe: dict[str, Any]
    metrics: list[dict[str, Any]]
    state: dict[str, Any]


def resume(
    folder: str | Path, variant: str, data: str | None, overrides: Mapping[str, Any] | None
) -> Resumed:
    """Read run folder ``folder`` to continue it: refused, naming the file, where it is not a task run of
    ``variant`` on ``data`` with a whole checkpoint, or where ``overrides`` change more than ``epochs``."""
    import torch

    folder = Path(folder)
    recipe_file, checkpoint = folder / RECIPE, folder / CHECKPOINT
    if not recipe_file.is_file():
        raise PapersError(f"no {RECIPE}: not a run folder", file=str(folder))
    try:
        recipe = json.loads(recipe_file.read_text())
        metrics = json.loads((folder / METRICS).read_text())
    except (OSError, ValueError) as exc:
        raise PapersError(f"unreadable run file: {str(exc).splitlines()[0]}", file=str(folder)) from None
    if not isinstance(recipe, dict) or not isinstance(metrics, list):
        raise PapersError("not a task run's recipe and metrics", file=str(recipe_file))
    if recipe.get("variant") != variant:
        raise PapersError(f"the run trains {recipe.get('variant')}, not {variant}", file=str(folder))
    if data is not None and data != recipe.get("data"):
        raise PapersError(f"the run trains on {recipe.get('data')}, not {data}", field="--data")
    if not checkpoint.is_file():
        raise PapersError(f"no {CHECKPOINT}: the run stopped before its first epoch ended", file=str(folder))
    try:
        state = torch.load(checkpoint, map_location="cpu", weights_only=True)
    except Exception as exc:  # a damaged file: whatever torch raises, one line
        raise PapersError(
            f"unreadable checkpoint: {str(exc).splitlines()[0][:200]}", file=str(checkpoint)
        ) from None
    if not isinstance(state, dict) or not {"epoch", "optimizer", "generator"} <= set(state):
        raise PapersError("not a task run's checkpoint", file=str(checkpoint))
    if len(metrics) != state["epoch"]:
        raise PapersError(
            f"{METRICS} has {len(metrics)} epochs, the checkpoint {state['epoch']}", file=str(folder)
        )
    extra = dict(overrides or {})
    epochs = extra.pop("epochs", None)
    if extra:
        raise PapersError(
            "a resumed run keeps its recipe (only --epochs extends it); start a new run", field="-r"
        )
    if epochs is not None:
        if not isinstance(epochs, int) or epochs < recipe["epochs"]:
            raise PapersError(
                f"a resumed run may be extended to more epochs than its {recipe['epochs']}, not {epochs!r}",
                field="--epochs",
            )
        recipe = {**recipe, "epochs": epochs}
        if recipe.get("iterations") is not None:  # a paper's length in steps gives way to the epochs asked
            recipe["iterations"] = None
    return Resumed(folder, recipe, metrics, state)


@dataclass(frozen=True)
class TaskRecord:
    """What ``papers eval`` and ``papers detect`` read of a task run's ``recipe.json``: the build
    options the weights fit, and the classes (the background first, where the data has one)."""

    variant: str
    data: str
    options: dict[str, Any]
    classes: list[str]


def task_record(recipe: Path) -> TaskRecord | None:
    """The record of a task run's ``recipe.json``, or ``None`` where it is not one."""
    try:
        data = json.loads(recipe.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or not isinstance(data.get("options"), dict):
        return None
    classes = data.get("classes")
    return TaskRecord(
        str(data.get("variant", "")),
        str(data.get("data", "")),
        dict(data["options"]),
        [str(c) for c in classes] if isinstance(classes, list) else [],
    )


def start_weights(model: Any, weights: str | Path, variant: str) -> None:
    """Load ``weights`` (ours as .safetensors, a torchvision / timm state dict, or a library's by name)
    into ``model`` strictly, as classification runs do."""
    from papers.train import _fit_start, _start_weights

    _fit_start(model, _start_weights(weights), weights, variant)


def restore(resumed: Resumed, model: Any, optimizer: Any, schedule: Any, generator: Any) -> None:
    """Load a resumed run's last epoch into the rebuilt model, optimizer, schedule and sampler."""
    from papers.evaluate import fit_weights, load_weights

    weights = resumed.folder / WEIGHTS
    fit_weights(model, load_weights(weights), file=str(weights))
    optimizer.load_state_dict(resumed.state["optimizer"])
    if schedule is not None and resumed.state.get("schedule") is not None:
        schedule.load_state_dict(resumed.state["schedule"])
    generator.set_state(resumed.state["generator"])
    if resumed.state.get("torch_rng") is not None:  # dropout draws from torch's global generator
        import torch

        torch.set_rng_state(resumed.state["torch_rng"])


def device() -> Any:
    """Where a task run trains: the first CUDA GPU when there is one (as classification runs do),
    else the CPU; ``PAPERS_DEVICE`` (``cpu``, ``cuda``, ``cuda:1``) chooses."""
    import torch

    name = os.environ.get("PAPERS_DEVICE") or ("cuda" if torch.cuda.is_available() else "cpu")
    try:
        chosen = torch.device(name)
    except RuntimeError:
        chosen = None
    if chosen is None or (chosen.type == "cuda" and not torch.cuda.is_available()):
        raise PapersError(
            f"no such device here: {name!r} (cpu, or cuda where a GPU is)", field="PAPERS_DEVICE"
        )
    return chosen


class OneProcess:
    """A run in one process, as :class:`papers.train._Distributed` describes torchrun's processes: its
    sums and gathers are the value itself."""

    world, rank, main = 1, 0, True

    def total(self, values: list[float]) -> list[float]:
        return values

    def gather(self, value: Any) -> list[Any]:
        return [value]

    def same_as_main(self, module: Any) -> None:
        return None


def share(batch_size: int, processes: Any) -> None:
    """Refuse a global batch that does not split evenly over torchrun's processes (each takes every
    ``world``-th image of each batch, as classification runs split theirs)."""
    if batch_size % processes.world:
        raise PapersError(
            f"batch_size {batch_size} does not split evenly over {processes.world} processes",
            field="-r batch_size",
        )


def parallel(model: Any, processes: Any) -> Any:
    """``model`` in DistributedDataParallel where the run has several processes (its gradients averaged
    over them after each backward pass; gloo on CPUs, nccl on GPUs), else ``model`` itself."""
    if processes.world == 1:
        return model
    from torch.nn.parallel import DistributedDataParallel

    chosen = processes.device
    return DistributedDataParallel(model, device_ids=[chosen.index] if chosen.type == "cuda" else None)


def seed_epoch(seed: int, epoch: int, processes: Any) -> None:
    """Under several processes, seed torch's generator (dropout, SSD's sampling) by (seed, epoch, rank)
    at the start of each epoch, as classification runs do, so the processes draw differently and a
    resumed run draws as an uninterrupted one. One process keeps one stream, saved in the checkpoint."""
    if processes.world > 1:
        import torch

        from papers.train import _epoch_seed

        torch.manual_seed(_epoch_seed(seed, epoch, processes.rank))


def place(model: Any, channels_last: bool = False, processes: Any = None) -> Any:
    """Move ``model`` to :func:`device` (under torchrun, the process's own: ``cuda:LOCAL_RANK`` where
    there are GPUs), its 4-d weights in the ``channels_last`` (NHWC) layout where asked
    (``-r channels_last=true``, as classification runs and timm's ``--channels-last``), which the
    convolutions' activations then follow. Only the layout changes, so the arithmetic is the same up
    to rounding; oneDNN's CPU convolutions run faster on NHWC (``benchmarks/memory_format.py``).
    Returns the device."""
    import torch

    chosen = device() if processes is None or processes.world == 1 else processes.device
    model.to(chosen)
    if channels_last:
        model.to(memory_format=torch.channels_last)
    return chosen


def state_of(optimizer: Any, schedule: Any, generator: Any) -> dict[str, Any]:
    """What :meth:`TaskRun.save` keeps besides the weights."""
    import torch

    return {
        "torch_rng": torch.get_rng_state(),
        "optimizer": optimizer.state_dict(),
        "schedule": None if schedule is None else schedule.state_dict(),
        "generator": generator.get_state(),
    }


__all__ = [
    "OneProcess",
    "Resumed",
    "TaskRecord",
    "TaskRun",
    "device",
    "new_folder",
    "parallel",
    "place",
    "restore",
    "resume",
    "seed_epoch",
    "share",
    "start_weights",
    "state_of",
    "task_record",
]
