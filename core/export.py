"""Export a built variant to ONNX, then run the file with onnxruntime and compare it with torch.

The exporters are torch's (``torch.onnx.export``): the dynamo-based one by default (torch's own
default since 2.9; it needs ``onnxscript``), which exports every family of the registry, LeNet-5's
connection-table convolution and VGG's adaptive pooling at small inputs included; the TorchScript one
(``exporter="torchscript"``) is several times faster but refuses those two. The exported graph has a
fixed input shape (batch 1, the graph's input size).

The file is written only after onnxruntime's outputs on one random input agree with torch's within
``TOLERANCE`` relative to the outputs' scale (max |a - b| <= 1e-4 * max |b|: randomly initialised deep
networks reach large outputs), to a temporary file beside ``out`` renamed into place; without
``force`` an existing ``out`` is refused before anything is built.
"""

from __future__ import annotations

import contextlib
import io
import os
import warnings
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

from papers.errors import PapersError

TOLERANCE = 1e-4
OPSET = 20
"""The ONNX opset both exporters write (the newest the TorchScript one knows)."""
EXPORTERS = ("dynamo", "torchscript")


class ExportError(PapersError):
    """An export that cannot be done: a missing package, an --out that exists, an op the exporter lacks."""


@dataclass(frozen=True)
class ExportReport:
    variant: str
    file: str
    format: str
    exporter: str
    opset: int
    seed: int
    weights: str | None
    inputs: dict[str, list[int]]
    outputs: list[list[int]]
    max_abs_difference: float
    max_abs_reference: float
    relative_difference: float
    """max |onnxruntime - torch| / max |torch| over every output."""
    tolerance: float
    passed: bool
    written: bool
    bytes: int | None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def check_out(out: str | Path, *, force: bool = False) -> None:
    """Refuse an ``out`` that is a folder, or exists without ``force``."""
    if os.path.isdir(out):
        raise ExportError("is a folder; --out names the .onnx file to write", file=str(out))
    if os.path.lexists(out) and not force:
        raise ExportError("exists; pass --force to overwrite it", file=str(out))
    if not Path(out).absolute().parent.is_dir():
        raise ExportError("its folder does not exist", file=str(out))


def export_onnx(
    variant_id: str,
    out: str | Path,
    *,
    weights: str | Path | None = None,
    seed: int = 0,
    exporter: Literal["dynamo", "torchscript"] = "dynamo",
    force: bool = False,
    **options: Any,
) -> ExportReport:
    """Export ``variant_id`` (built with ``options``, initialised from ``seed`` or loaded from
    ``weights``) to ONNX at ``out``, after checking onnxruntime's outputs against torch's.

    The report says how far they are apart; where they are farther than :data:`TOLERANCE` (relative)
    nothing is written and ``passed`` is false.
    """
    if exporter not in EXPORTERS:
        raise ExportError(f"unknown exporter {exporter!r}; known: {', '.join(EXPORTERS)}", field="--exporter")
    check_out(out, force=force)
    onnxruntime = _runtime(exporter)
    import numpy as np
    import torch

    from papers.api import build_model, expand_variant

    flat = expand_variant(variant_id, **options)
    torch.manual_seed(seed)
    model = build_model(variant_id, raw=True, **options).eval()
    if weights is not None:
        from papers.evaluate import fit_weights, load_weights

        fit_weights(model, load_weights(weights), file=str(weights))
    generator = torch.Generator().manual_seed(seed)
    inputs = {
        name: torch.randn(*(shape if name in flat.unbatched else (1, *shape)), generator=generator)
        for name, shape in flat.inputs.items()
    }
    with torch.no_grad():
        expected = [t.numpy() for t in _tensors(model(*inputs.values()))]
    path = Path(out)
    temporary = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        _export(model, inputs, temporary, exporter, len(expected))
        session = onnxruntime.InferenceSession(str(temporary), providers=["CPUExecutionProvider"])
        feeds = {
            arg.name: value.numpy() for arg, value in zip(session.get_inputs(), inputs.values(), strict=True)
        }
        got = session.run(None, feeds)
        difference = max(
            (float(np.abs(a - b).max()) for a, b in zip(got, expected, strict=True)), default=0.0
        )
        scale = max((float(np.abs(b).max()) for b in expected), default=0.0)
        relative = difference / scale if scale > 0 else (0.0 if difference == 0 else float("inf"))
        passed = relative <= TOLERANCE and all(a.shape == b.shape for a, b in zip(got, expected, strict=True))
        size = temporary.stat().st_size
        if passed:
            _move(temporary, path, force=force)
    finally:
        if temporary.exists():
            temporary.unlink()
    return ExportReport(
        variant=variant_id,
        file=str(path),
        format="onnx",
        exporter=exporter,
        opset=OPSET,
        seed=seed,
        weights=None if weights is None else str(weights),
        inputs={name: list(value.shape) for name, value in inputs.items()},
        outputs=[list(value.shape) for value in expected],
        max_abs_difference=difference,
        max_abs_reference=scale,
        relative_difference=relative,
        tolerance=TOLERANCE,
        passed=passed,
        written=passed,
        bytes=size if passed else None,
    )


def _runtime(exporter: str) -> Any:
    """onnx and onnxruntime (and onnxscript for the dynamo exporter), or one line saying what to install."""
    needed = ["onnx", "onnxruntime"] + (["onnxscript"] if exporter == "dynamo" else [])
    modules = []
    for name in needed:
        try:
            modules.append(__import__(name))
        except ImportError:
            raise ExportError(
                f"exporting needs {', '.join(needed)}: pip install 'papers[export]' (no module {name!r})"
            ) from None
    return modules[1]


def _tensors(output: Any) -> list[Any]:
    """A model's outputs as a flat list of tensors, in the order the exporters flatten them."""
    if isinstance(output, dict):
        return [t for value in output.values() for t in _tensors(value)]
    if isinstance(output, (tuple, list)):
        return [t for value in output for t in _tensors(value)]
    return [output]


def _export(model: Any, inputs: dict[str, Any], file: Path, exporter: str, outputs: int) -> None:
    import torch

    names = [f"output{i}" for i in range(outputs)] if outputs > 1 else ["output"]
    try:
        with _quiet():
            if exporter == "dynamo":
                program = torch.onnx.export(
                    model,
                    tuple(inputs.values()),
                    dynamo=True,
                    opset_version=OPSET,
                    input_names=list(inputs),
                    output_names=names,
                )
                program.save(str(file))
            else:
                torch.onnx.export(
                    model,
                    tuple(inputs.values()),
                    str(file),
                    dynamo=False,
                    opset_version=OPSET,
                    input_names=list(inputs),
                    output_names=names,
                )
    except Exception as error:  # the exporters raise many kinds, with the whole graph in the message
        lines = [line.strip() for line in str(error).splitlines() if line.strip()]
        reason = (lines[0] if lines else type(error).__name__).split(" [Caused by")[0].strip()
        hint = "; try --exporter dynamo" if exporter == "torchscript" else ""
        raise ExportError(f"the {exporter} exporter failed: {reason[:300]}{hint}") from None


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """The exporters' progress lines, warnings (TracerWarning, deprecations) and the graph dump that
    torch's C++ writes to the standard error on a failure, kept off the terminal."""
    import sys

    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    saved = []
    try:
        with open(os.devnull, "w") as null:
            for fd in (1, 2):
                with contextlib.suppress(OSError):
                    saved.append((fd, os.dup(fd)))
                    os.dup2(null.fileno(), fd)
            with (
                warnings.catch_warnings(),
                contextlib.redirect_stdout(io.StringIO()),
                contextlib.redirect_stderr(io.StringIO()),
            ):
                warnings.simplefilter("ignore")
                yield
    finally:
        for fd, copy in saved:
            os.dup2(copy, fd)
            os.close(copy)


def _move(temporary: Path, path: Path, *, force: bool) -> None:
    """Rename into place; without ``force``, never over a file that appeared meanwhile."""
    from papers.files import place

    try:
        place(temporary, path, overwrite=force)
    except FileExistsError:
        raise ExportError("exists; pass --force to overwrite it", file=str(path)) from None
    except OSError as error:
        raise ExportError(f"cannot write the file: {error.strerror or error}", file=str(path)) from None
