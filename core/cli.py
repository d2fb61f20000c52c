"""The ``papers`` command line.

click parses arguments: small, composable, testable with its runner (typer would add import time and
build the same thing on top of it). Tables are plain aligned text, which prints in a few
milliseconds (a rich table of 70 rows took a third of a second) and reads well in pipes and diffs.
Every error from bad input is one line on stderr and exit status 2; ``papers check`` exits 1 when a
check fails.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import textwrap
from collections.abc import Callable, Iterator
from typing import Any

import click

from papers.errors import PapersError, SpecError
from papers.text import STATUS, count, plain


class _Group(click.Group):
    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except PapersError as error:
            if os.environ.get("RANK", "0") == "0":  # under torchrun, one line, not one per process
                click.echo(f"papers: error: {error}", err=True)
            ctx.exit(2)


class _Table:
    """A plain, aligned text table: fast to print (``papers list`` is timed), easy to grep and diff."""

    RIGHT = frozenset({"params", "MACs", "reported", "measured", "Δ", "year"})
    WIDEST = 48  # cells wider than this are cut with an ellipsis, except in the last column

    def __init__(self, *columns: str, title: str | None = None):
        self.columns, self.title, self.rows = columns, title, []

    def add_row(self, *cells: str) -> None:
        self.rows.append([str(cell) for cell in cells])

    def __str__(self) -> str:
        last = len(self.columns) - 1
        rows = [
            [c if i == last or len(c) <= self.WIDEST else c[: self.WIDEST - 1] + "…" for i, c in enumerate(r)]
            for r in self.rows
        ]
        widths = [max([len(name)] + [len(r[i]) for r in rows]) for i, name in enumerate(self.columns)]

        def line(cells: list[str]) -> str:
            parts = [
                c.rjust(w) if name in self.RIGHT else c.ljust(w)
                for c, w, name in zip(cells, widths, self.columns, strict=True)
            ]
            return "  ".join(parts).rstrip()

        rules = ["─" * (w if i < last else min(w, self.WIDEST)) for i, w in enumerate(widths)]
        lines = [line(list(self.columns)), line(rules), *map(line, rows)]
        return "\n".join(([self.title, ""] if self.title else []) + lines) + "\n"


def _table(*columns: str, title: str | None = None) -> _Table:
    return _Table(*columns, title=title)


def _print_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, ensure_ascii=False))


def _options(pairs: tuple[str, ...]) -> dict[str, Any]:
    """``-o key=value`` pairs, values read as YAML scalars (``10``, ``true``, ``[1, 2]``)."""
    from papers.load import read_yaml

    options: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise PapersError(f"option {pair!r} is not KEY=VALUE", field="--option")
        try:
            options[key.strip()] = read_yaml(value)
        except SpecError as error:
            raise PapersError(f"option {key}: {error.message}", field="--option") from None
    return options


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="papers")
def cli() -> None:
    """The classic deep-learning papers as specs, runnable PyTorch models and checked numbers."""


@cli.command("list")
@click.option("--topic", help="classification, detection, segmentation, compression, or a compression kind.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def list_command(topic: str | None, as_json: bool) -> None:
    """List the papers in the registry."""
    from papers import index
    from papers.topics import COMPRESSION_KINDS, TOPICS

    if topic is not None and topic not in (*TOPICS, *COMPRESSION_KINDS):
        known = ", ".join((*TOPICS, *COMPRESSION_KINDS))
        raise PapersError(f"unknown topic {topic!r}; known: {known}", field="--topic")
    discovered = getattr(sys.modules.get("papers.registry"), "_current", None)  # in-process, e.g. tests
    rows = index.cached_rows() if discovered is None else None
    if rows is None:  # the plugins or a spec changed: discover and validate, then keep the index
        from papers.registry import get_registry

        registry = get_registry()
        rows = index.rows(registry)
        index.store(registry)
    if topic is not None:
        rows = [row for row in rows if topic in row["topics"] or row["kind"] == topic]
    if as_json:
        _print_json(rows)
        return
    table = _table("id", "title", "year", "venue", "topic", "variants")
    for row in rows:
        table.add_row(
            row["id"],
            row["title"],
            str(row["year"]),
            row["venue"],
            ", ".join(row["topics"]),
            ", ".join(row["variants"]),
        )
    click.echo(str(table))


@cli.command()
@click.argument("identifier")
@click.option("--json", "as_json", is_flag=True, help="Print the spec as JSON.")
def show(identifier: str, as_json: bool) -> None:
    """Show a paper: citation, recipe, variants, reported results."""
    from papers.registry import get_registry

    entry = get_registry().paper(identifier)
    spec = entry.spec
    if as_json:
        _print_json(spec.model_dump(mode="json", by_alias=True, exclude_none=True))
        return
    c = spec.citation
    click.echo(c.title)
    click.echo(f"{', '.join(c.authors)}. {c.venue} {c.year}.")
    links = [f"arXiv:{c.arxiv}" if c.arxiv else "", f"doi:{c.doi}" if c.doi else "", c.url or ""]
    click.echo("  ".join(link for link in links if link))
    click.echo(f"\nid: {spec.id}   topics: {', '.join(spec.topics)}   spec: {entry.file}\n")
    click.echo(textwrap.fill(spec.summary, width=100) + "\n")
    if spec.hyperparameters is not None:
        table = _table("hyperparameter", "value", title="Training recipe")
        for key, value in spec.hyperparameters.model_dump(exclude_none=True).items():
            table.add_row(key, plain(value))
        click.echo(str(table))
    if spec.variants:
        table = _table("variant", "name", "origin", "reference", title="Variants")
        for v in spec.variants:
            table.add_row(v.id, v.name, v.origin, v.reference or "")
        click.echo(str(table))
    if spec.results:
        table = _table(
            "variant",
            "metric",
            "reported",
            "unit",
            "data",
            "protocol",
            "conditions",
            "source",
            title="Reported results",
        )
        for r in spec.results:
            data = " ".join(part for part in (r.dataset, r.split) if part)
            table.add_row(
                r.variant,
                r.metric,
                plain(r.value),
                r.unit,
                data,
                r.protocol or "",
                plain(r.conditions) if r.conditions else "",
                r.source,
            )
        click.echo(str(table))


@cli.command()
@click.argument("identifier")
@click.option("--format", "style", type=click.Choice(["bibtex", "text"]), default="bibtex", show_default=True)
def cite(identifier: str, style: str) -> None:
    """Print a paper's citation (a variant id stands for its paper)."""
    from papers.cite import bibtex, reference
    from papers.registry import get_registry

    spec = get_registry().paper(identifier).spec
    click.echo(bibtex(spec) if style == "bibtex" else reference(spec), nl=False)


@cli.command()
@click.argument("variant")
@click.option(
    "-o",
    "--option",
    "pairs",
    multiple=True,
    metavar="KEY=VALUE",
    help="Override a graph parameter (num_classes=10, image_size=32).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
@click.option("--out", help="Write initialised weights (.safetensors).")
@click.option("--force", is_flag=True, help="Overwrite the --out file if it exists.")
def build(variant: str, pairs: tuple[str, ...], as_json: bool, out: str | None, force: bool) -> None:
    """Build a variant and summarise it (computed on the meta device)."""
    from papers.api import build_model, measure

    if out is not None:
        _check_weights_out(out, force)
    options = _options(pairs)
    measurement = measure(variant, **options)
    if out is not None:
        _save(build_model(variant, **options), out, force=force)
    if as_json:
        _print_json(measurement.as_dict())
        return
    table = _table("layer", "op", "output shape", "params", "MACs", title=f"{variant}")
    for layer in measurement.layers:
        table.add_row(
            layer.name,
            layer.op,
            str(layer.output_shape),
            f"{layer.params:,}" if layer.params else "",
            count(layer.macs) if layer.macs else "",
        )
    click.echo(str(table))
    click.echo(f"input:  {measurement.input_shapes}")
    click.echo(f"output: {measurement.output_shape}")
    click.echo(f"params: {measurement.params:,} ({count(measurement.params)})")
    click.echo(f"MACs:   {measurement.macs:,} ({count(measurement.macs)} multiply-adds, batch 1)")
    if out is not None:
        click.echo(f"weights: {out}")


def _check_weights_out(out: str, force: bool) -> None:
    """Refuse a --out that is no .safetensors file, is a folder, or exists (unless ``force``)."""
    if not out.endswith(".safetensors"):
        raise PapersError("weights are written as .safetensors", field="--out")
    if os.path.isdir(out):
        raise PapersError("is a folder; --out names the .safetensors file to write", file=out)
    if os.path.lexists(out) and not force:
        raise PapersError("exists; pass --force to overwrite it", file=out)


def _save(model: Any, out: str, *, force: bool = False) -> None:
    """Write the weights to a temporary file renamed into place; without ``force``, never over a file
    that appeared meanwhile."""
    from pathlib import Path

    from safetensors.torch import save

    from papers.files import write_atomic

    try:
        content = save({k: v.contiguous() for k, v in model.state_dict().items()})
        write_atomic(Path(out), content, overwrite=force)
    except FileExistsError:
        raise PapersError("exists; pass --force to overwrite it", file=out) from None
    except OSError as error:
        raise PapersError(f"cannot write weights: {error.strerror or error}", file=out) from None


@cli.command()
@click.argument("identifier", required=False)
@click.option("--all", "check_all", is_flag=True, help="Check every paper.")
@click.option("--variant", help="Narrow the check to one variant.")
@click.option("--json", "as_json", is_flag=True, help="Print the checks as JSON.")
@click.option("-v", "--verbose", is_flag=True, help="Also list the results that cannot be measured here.")
@click.option(
    "--results",
    "results_file",
    type=click.Path(dir_okay=False),
    help="A results file from `papers eval --out`: measures the accuracies it holds.",
)
@click.option("--run", "run_training", is_flag=True, help="Also run the small-scale training checks.")
@click.pass_context
def check(
    ctx: click.Context,
    identifier: str | None,
    check_all: bool,
    variant: str | None,
    as_json: bool,
    verbose: bool,
    results_file: str | None,
    run_training: bool,
) -> None:
    """Check reported results against measurements; exit 1 if one fails."""
    from papers.api import check as run_check
    from papers.registry import get_registry

    if check_all == (identifier is not None):
        raise click.UsageError("name a paper or variant, or pass --all")
    if variant is not None:
        _check_variant(variant, None if check_all else identifier)
    ids = [e.spec.id for e in get_registry().list()] if check_all else [identifier]
    if check_all:  # measure every variant with a static result at once, in parallel processes
        from papers.api import measure_many
        from papers.spec import STATIC_METRICS

        static = {
            r.variant for e in get_registry().list() for r in e.spec.results if r.metric in STATIC_METRICS
        }
        measure_many(sorted(static))
    checks = [
        c
        for paper in ids
        for c in run_check(
            paper,  # type: ignore[arg-type]
            variant=variant,
            results=results_file,
            run=run_training,
            progress=not as_json,
        )
    ]
    if as_json:
        _print_json([c.as_dict() for c in checks])
    else:
        shown = [c for c in checks if verbose or c.status != "not_measurable"]
        table = _table("paper", "variant", "metric", "scope", "reported", "measured", "Δ", "", "source")
        for c in shown:
            delta = f"{c.difference:+.2%}" if c.difference is not None else ""
            measured = "–" if c.measured is None else plain(c.measured)
            table.add_row(
                c.paper,
                c.variant,
                c.metric,
                "proxy" if c.proxy else c.scope,
                f"{plain(c.reported)} {c.unit}",
                measured,
                delta,
                STATUS[c.status],
                c.source,
            )
        if shown:
            click.echo(str(table))
        for c in shown:
            if c.proxy:
                click.echo(f"proxy: {c.variant} {c.metric} reported on {c.dataset}; measured on {c.proxy}")
                click.echo(f"       {c.reason}")
        counts = {status: sum(c.status == status for c in checks) for status in STATUS}
        click.echo(
            f"{counts['pass']} passed, {counts['fail']} failed, "
            f"{counts['not_measurable']} not measurable here (need trained weights and data)"
            + (f", {counts['inconsistent']} paper inconsistent" if counts["inconsistent"] else "")
        )
        for c in shown:
            if c.status == "inconsistent":
                click.echo(f"paper inconsistent: {c.variant} {c.metric} ({c.source}): {c.reason}")
    if any(c.status == "fail" for c in checks):
        ctx.exit(1)


def _check_variant(variant: str, identifier: str | None) -> None:
    """Refuse ``--variant`` naming no variant, or one that is not the named paper's."""
    from papers.errors import UnknownIdError
    from papers.registry import get_registry

    registry = get_registry()
    try:
        owner, _ = registry.variant(variant)
    except PapersError as error:
        raise error.located(field="--variant") from None
    if identifier is None:
        return
    entry = registry.paper(identifier)
    if owner.spec.id != entry.spec.id:
        ids = ", ".join(v.id for v in entry.spec.variants)
        raise UnknownIdError(
            f"{variant!r} is a variant of {owner.spec.id!r}, not of {entry.spec.id!r}; its variants: {ids}",
            field="--variant",
        )


@contextlib.contextmanager
def _warnings_held() -> Iterator[Callable[[], None]]:
    """Hold back the warnings (torch's, torchvision's) a command raises: a refusal (``PapersError``)
    drops them, so that it stays one line on stderr; otherwise they are shown at the end, or earlier
    when the command calls the function this yields (before its first line of progress)."""
    import warnings

    def show(w: warnings.WarningMessage) -> None:
        sys.stderr.write(warnings.formatwarning(w.message, w.category, w.filename, w.lineno, w.line))

    with warnings.catch_warnings(record=True) as caught:

        def release() -> None:
            while caught:
                show(caught.pop(0))

        try:
            yield release
        except PapersError:
            raise
        except BaseException:
            release()
            raise
        held = list(caught)
    for w in held:
        show(w)


@cli.command()
@click.argument("variant")
@click.option(
    "--data",
    help="An ImageFolder root (DIR/train/<class>/*, DIR/val/...) or builtin:digits; for a segmenter or a "
    "detector a PASCAL VOC folder or builtin:shapes (a segmenter also images/ + masks/, a detector COCO).",
)
@click.option("--epochs", type=click.IntRange(min=1), help="Override the recipe's epochs.")
@click.option("--batch-size", type=click.IntRange(min=1), help="Override the recipe's (global) batch size.")
@click.option(
    "-r",
    "--recipe",
    "pairs",
    multiple=True,
    metavar="FIELD=VALUE",
    help="Override a recipe field: optimizer.lr=0.01, weight_decay=0, schedule.name=cosine.",
)
@click.option("--out", type=click.Path(file_okay=False), help="Run folder [default: runs/VARIANT-TIME].")
@click.option(
    "--resume", type=click.Path(file_okay=False), help="Continue a run folder from its last checkpoint."
)
@click.option(
    "--workers", type=click.IntRange(min=0), default=0, show_default=True, help="Data-loading processes."
)
@click.option("--dry-run", is_flag=True, help="Print the resolved recipe as JSON and stop.")
@click.option(
    "--threads", type=click.IntRange(min=1), help="Intra-op CPU threads [default: torch's]; recorded."
)
@click.option(
    "--weights",
    type=click.Path(dir_okay=False),
    metavar="FILE|LIBRARY:NAME",
    help="Start from these weights, loaded strictly: a file (.safetensors, or a torchvision / timm .pth), "
    "or a library's pretrained weights by name (torchvision:resnet18, timm:legacy_seresnet50), read "
    "through the library's cache (TORCH_HOME, HF_HOME) or downloaded by it.",
)
@click.option("--stop-after", type=click.IntRange(min=0), hidden=True)
@click.option(
    "-o",
    "--option",
    "option_pairs",
    multiple=True,
    metavar="KEY=VALUE",
    help="Build option of a segmenter or detector (a graph parameter: width=32); a classifier's come "
    "from its recipe.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the final metrics as JSON.")
def train(
    variant: str,
    data: str | None,
    epochs: int | None,
    batch_size: int | None,
    pairs: tuple[str, ...],
    out: str | None,
    resume: str | None,
    workers: int,
    dry_run: bool,
    threads: int | None,
    weights: str | None,
    stop_after: int | None,
    option_pairs: tuple[str, ...],
    as_json: bool,
) -> None:
    """Train a variant with its paper's recipe (under torchrun: on every process, rank 0 writing)."""
    import time as _time

    from papers.recipe import override_pairs, resolve_variant
    from papers.train import train as run_train

    overrides = override_pairs(pairs)
    overrides.update({k: v for k, v in (("epochs", epochs), ("batch_size", batch_size)) if v is not None})
    if dry_run:
        task = _task_recipe(variant, overrides)
        _print_json(task or resolve_variant(variant, overrides).model_dump(mode="json"))
        return
    if resume is None and out is None:
        out = os.path.join("runs", f"{variant}-{_time.strftime('%Y%m%d-%H%M%S')}")

    try:
        with _warnings_held() as release:

            def log(line: str) -> None:
                release()
                click.echo(line, err=True)

            run = run_train(
                variant,
                data,
                overrides=overrides,
                out=out,
                resume=resume,
                workers=workers,
                threads=threads,
                weights=weights,
                stop_after=stop_after,
                options=_options(option_pairs),
                log=log,
            )
    except KeyboardInterrupt:
        folder = resume or out
        # a classification run's checkpoint pointer, a segmenter's or detector's checkpoint
        checkpoints = (os.path.join("checkpoints", "last.json"), "checkpoint.pt")
        if folder is not None and any(os.path.isfile(os.path.join(folder, c)) for c in checkpoints):
            click.echo(
                f"papers: interrupted; continue with: papers train {variant} --resume {folder}", err=True
            )
        else:
            click.echo("papers: interrupted before the first checkpoint; nothing to resume", err=True)
        sys.exit(130)
    if os.environ.get("RANK", "0") != "0":
        return
    if as_json:
        _print_json({"run": str(run.folder), "finished": run.finished, "metrics": run.final})
        return
    final = run.final
    if "val_voc07_map" in final:
        click.echo(f"VOC07 mAP {final['val_voc07_map']:.2f}% (val split)")
    if "val_miou" in final:
        click.echo(
            f"mIoU {100 * final['val_miou']:.2f}%  "
            f"pixel accuracy {100 * final['val_pixel_acc']:.2f}% (val split)"
        )
    if "val_top1" in final:
        click.echo(f"top-1 {final['val_top1']:.2f}%  top-5 {final['val_top5']:.2f}% (held-out split)")
    click.echo(f"run: {run.folder}" + ("" if run.finished else " (stopped; continue with --resume)"))


def _task_recipe(variant: str, overrides: dict[str, Any]) -> dict[str, Any] | None:
    """The recipe a segmenter's or detector's loop would train with (none: a classifier)."""
    from papers.detect import class_detector, is_detector
    from papers.train_detection import recipe as detection_recipe
    from papers.train_segmentation import is_segmenter
    from papers.train_segmentation import recipe as segmentation_recipe

    if is_segmenter(variant):
        return {"recipe": "registry", **segmentation_recipe(overrides)}
    detector = is_detector(variant) or class_detector(variant) is not None
    return detection_recipe(overrides, variant) if detector else None


@cli.command("eval")
@click.argument("variant")
@click.option(
    "--weights",
    required=True,
    type=click.Path(dir_okay=False),
    metavar="FILE|LIBRARY:NAME",
    help=".safetensors, a .pth checkpoint, or a library's pretrained weights (torchvision:resnet18, "
    "timm:NAME).",
)
@click.option(
    "--data",
    required=True,
    help="An ImageFolder (DIR/val, DIR/test or DIR itself) or builtin:digits; for a detector a PASCAL "
    "VOC folder, a COCO folder or builtin:shapes; for a segmenter a VOC folder, images/ + masks/ or "
    "builtin:shapes.",
)
@click.option(
    "--protocol", type=click.Choice(["single_crop", "center_crop", "ten_crop"]), default="single_crop"
)
@click.option(
    "--resize",
    type=click.IntRange(min=1),
    help="Shorter side before cropping [default: size / 0.875; the size itself for inputs of at most "
    "64 px (CIFAR's original view)].",
)
@click.option("--batch-size", type=click.IntRange(min=1), default=64, show_default=True)
@click.option("--workers", type=click.IntRange(min=0), default=0, show_default=True)
@click.option("--threads", type=click.IntRange(min=1), help="Intra-op CPU threads [default: torch's].")
@click.option("-o", "--option", "option_pairs", multiple=True, metavar="KEY=VALUE", help="Graph parameter.")
@click.option(
    "--dataset", help="The dataset's name as the paper's results write it: 'ImageNet (ILSVRC-2012)'."
)
@click.option(
    "--split",
    type=click.Choice(["train", "val", "test", "test-dev"]),
    help="Which split DIR holds; of a detector's or segmenter's data, the split scored [default: a "
    "segmenter's val; a detector's VOC test where there is one, else val].",
)
@click.option(
    "--condition",
    "condition_pairs",
    multiple=True,
    metavar="KEY=VALUE",
    help="A condition of the results (as the spec's results write them: crop=224, dropout=0.3); repeatable.",
)
@click.option(
    "--out", "results_out", type=click.Path(dir_okay=False), help="Add the results to this JSON file."
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def eval_command(
    variant: str,
    weights: str,
    data: str,
    protocol: str,
    resize: int | None,
    batch_size: int,
    workers: int,
    threads: int | None,
    option_pairs: tuple[str, ...],
    dataset: str | None,
    split: str | None,
    condition_pairs: tuple[str, ...],
    results_out: str | None,
    as_json: bool,
) -> None:
    """Top-1 / top-5 accuracy of a variant with given weights, under a test protocol; a detector's
    VOC and COCO mAP; a segmenter's mIoU, pixel and mean accuracy and frequency-weighted IoU."""
    from papers.detection_metrics import DETECTION_METRICS
    from papers.evaluate import evaluate
    from papers.results import Measured, check_results_target, size_warning, write_results

    options = _options(option_pairs)
    conditions = _conditions(condition_pairs)
    if results_out is not None:  # refused before the evaluation, not after it
        check_results_target(results_out)
    from papers.train_segmentation import is_segmenter

    if is_segmenter(variant):
        _eval_segmenter(variant, weights, data, split, dataset, options, conditions, results_out, as_json)
        return
    with _warnings_held():
        measured = evaluate(
            variant,
            weights,
            data,
            protocol=protocol,
            resize=resize,
            batch_size=batch_size,
            workers=workers,
            threads=threads,
            options=options,
            split=split,
        )
    if data in ("builtin:digits", "builtin:mnist5k"):
        dataset, split = dataset or data, split or "test"
    detector = "voc07_map" in measured  # a detector's evaluation (papers.detect)
    if detector:
        split = split or measured["split"]
    warning = size_warning(dataset, split, measured["images"], measured["classes"])
    if warning:
        click.echo(f"papers: warning: {warning}", err=True)
    # shown before the results file is written: a write that fails loses no measurement
    if as_json:
        _print_json(measured)
    elif detector:
        shown = "  ".join(
            f"{name} {measured[name]:.2f}%" for name in DETECTION_METRICS if measured[name] is not None
        )
        click.echo(f"{variant}: {shown}  ({measured['images']} images, {measured['split']} split)")
    else:
        click.echo(
            f"{variant}: top-1 {measured['top1_accuracy']:.2f}%  top-5 {measured['top5_accuracy']:.2f}%  "
            f"({measured['images']} images, {measured['protocol']})"
        )
    if results_out is not None:
        labels = {"dataset": dataset or data, "split": split, "protocol": measured["protocol"]}
        write_results(
            results_out,
            [
                Measured(
                    variant=variant,
                    metric=metric,  # type: ignore[arg-type]
                    value=round(measured[metric], 4),
                    images=measured["images"],
                    classes=measured["classes"],
                    weights=weights,
                    conditions=conditions,
                    **labels,  # type: ignore[arg-type]
                )
                for metric in (DETECTION_METRICS if detector else ("top1_accuracy", "top5_accuracy"))
                if measured[metric] is not None  # COCO's AP of small objects where there is none
            ],
        )
        if not as_json:
            click.echo(f"results: {results_out}")


def _eval_segmenter(
    variant: str,
    weights: str,
    data: str,
    split: str | None,
    dataset: str | None,
    options: dict[str, Any],
    conditions: dict[str, Any],
    results_out: str | None,
    as_json: bool,
) -> None:
    """``papers eval`` of a segmenter: miou, pixel_acc, mean_acc and fwiou, per-class IoU."""
    from papers.results import Measured, write_results
    from papers.segmentation_metrics import SEGMENTATION_METRICS
    from papers.train_segmentation import evaluate_segmenter

    with _warnings_held():
        measured = evaluate_segmenter(variant, weights, data, split=split or "val", options=options)
    if as_json:
        _print_json(measured)
    else:
        shown = "  ".join(f"{name} {measured[name]:.2f}%" for name in SEGMENTATION_METRICS)
        click.echo(f"{variant}: {shown}  ({measured['images']} images, {measured['split']} split)")
    if results_out is not None:
        write_results(
            results_out,
            [
                Measured(
                    variant=variant,
                    metric=metric,  # type: ignore[arg-type]
                    value=round(measured[metric], 4),
                    images=measured["images"],
                    classes=measured["classes"],
                    weights=weights,
                    conditions=conditions,
                    dataset=dataset or data,
                    split=measured["split"],
                )
                for metric in SEGMENTATION_METRICS
            ],
        )
        if not as_json:
            click.echo(f"results: {results_out}")


def _conditions(pairs: tuple[str, ...]) -> dict[str, Any]:
    """``--condition key=value`` pairs of a results row, values read as YAML (``224``, ``[256, 512]``)."""
    from pydantic import TypeAdapter, ValidationError

    from papers.load import read_yaml
    from papers.spec import Value

    conditions: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise PapersError(f"condition {pair!r} is not KEY=VALUE", field="--condition")
        try:
            conditions[key.strip()] = TypeAdapter(Value).validate_python(read_yaml(value))
        except SpecError as error:
            raise PapersError(f"condition {key}: {error.message}", field="--condition") from None
        except ValidationError:
            raise PapersError(
                f"condition {key}: {value!r} is not a number, text or list", field="--condition"
            ) from None
    return conditions


@cli.command()
@click.argument("file", type=click.Path(dir_okay=False))
def validate(file: str) -> None:
    """Validate a spec file and build each variant's graph on the meta device."""
    from papers.api import validate_file

    spec = validate_file(file)
    click.echo(f"{file}: ok ({spec.id}: {len(spec.variants)} variants, {len(spec.results)} results)")


@cli.command()
def schema() -> None:
    """Print the JSON Schema of a spec file."""
    from papers.spec import Spec

    _print_json(Spec.model_json_schema(by_alias=True))


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def plugins(as_json: bool) -> None:
    """List the loaded plugins, what they contribute, and those that failed."""
    from papers.registry import get_registry

    infos = list(get_registry().manager.plugins.values())
    if as_json:
        _print_json([info.as_dict() for info in infos])
        return
    table = _table("plugin", "distribution", "version", "hooks", "contributes", "problems")
    for info in infos:
        contributes = "; ".join(f"{k}: {', '.join(v)}" for k, v in info.contributes.items())
        problems = "; ".join(([info.error] if info.error else []) + info.refused)
        table.add_row(
            info.name, info.distribution, info.version, ", ".join(info.hooks), contributes, problems
        )
    click.echo(str(table))


@cli.group("site", cls=_Group)
def site_group() -> None:
    """Build or serve the documentation site (MkDocs Material), generated from the registry."""


@site_group.command("build")
@click.option(
    "--out", default="build", show_default=True, help="Folder for docs/ (Markdown) and site/ (HTML)."
)
@click.option(
    "--site-url",
    default=None,
    help="Canonical URL, for canonical links and the sitemap  [default: the project's documentation or "
    "home page URL from its metadata, else http://127.0.0.1:8000/]",
)
@click.option(
    "--results",
    "results_file",
    type=click.Path(dir_okay=False),
    help="A results file from `papers eval --out`: its accuracies are checked on the pages.",
)
@click.option("--force", is_flag=True, help="Write into a folder that holds more than a previous site build.")
def site_build(out: str, site_url: str | None, results_file: str | None, force: bool) -> None:
    """Render the pages from the specs and measurements, then run mkdocs build --strict.

    The --out folder must be new, empty or a previous site build, which is replaced once the new one
    is built; --force replaces docs/, site/ and mkdocs.yml of any other folder and leaves the rest. A
    second build of a folder while one is writing it is refused.
    """
    from papers.site import build_site

    html = build_site(out, site_url=site_url, results=results_file, force=force)
    click.echo(f"site: {html}")


@site_group.command("serve")
@click.option("--out", default="build", show_default=True, help="Folder to build into.")
@click.option("--port", default=8000, show_default=True, help="Port on 127.0.0.1.")
@click.option("--no-build", is_flag=True, help="Serve what is built already.")
def site_serve(out: str, port: int, no_build: bool) -> None:
    """Build the site and serve it on 127.0.0.1 until interrupted."""
    from pathlib import Path

    from papers.site import build_site, serve_site

    html = Path(out, "site") if no_build else build_site(out, site_url=f"http://127.0.0.1:{port}/")
    serve_site(html, port=port)


@cli.command()
@click.argument("variant")
@click.option("--weights", help="The base's weights (.safetensors, .pth) [default: initialised, seed 0].")
@click.option("--data", help="builtin:digits or an ImageFolder root: top-1 before and after.")
@click.option(
    "--out",
    required=True,
    help="Folder for model.safetensors (the compressed model), base.safetensors and report.json.",
)
@click.option("-o", "--option", "pairs", multiple=True, metavar="KEY=VALUE", help="Graph parameter.")
@click.option("--device", default="cpu", show_default=True, help="Where latency and top-1 are measured.")
@click.option("--force", is_flag=True, help="Replace the files in a folder that is not empty.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def compress(
    variant: str,
    weights: str | None,
    data: str | None,
    out: str,
    pairs: tuple[str, ...],
    device: str,
    force: bool,
    as_json: bool,
) -> None:
    """Apply a method variant to its base model, write the compressed model and a report."""
    from papers.compression import compress as run_compress

    with _warnings_held():
        report = run_compress(
            variant, out=out, weights=weights, data=data, options=_options(pairs), device=device, force=force
        )
    if as_json:
        _print_json(report)
        return
    methods = ", ".join(m["name"] for m in report["methods"])
    table = _table("", "before", "after", title=f"{variant} (base {report['base']}; {methods})")

    def shown(value: Any, unit: str = "") -> str:
        return "–" if value is None else f"{value:,}{unit}" if isinstance(value, int) else f"{value:g}{unit}"

    rows = [
        ("params", report["params_before"], report["params_after"], ""),
        ("non-zero", report["nonzero_before"], report["nonzero_after"], ""),
        ("bits per weight", report["bits_per_weight_before"], report["bits_per_weight_after"], ""),
        ("bytes on disk", report["bytes_before"], report["bytes_after"], ""),
        ("MACs", report["macs_before"], report["macs_after"], ""),
        ("latency, batch 1", report["latency_ms_before"], report["latency_ms_after"], " ms"),
        *[(f"latency, batch {t['batch']}", t["ms_before"], t["ms_after"], " ms") for t in report["latency"]],
        (report["metric"] or "metric", report["metric_before"], report["metric_after"], ""),
    ]
    for label, before, after, unit in rows:
        table.add_row(label, shown(before, unit), shown(after, unit))
    click.echo(str(table))
    threads = report["latency_threads"]
    click.echo(
        f"{report['compression_ratio']:g}× fewer bytes; {shown(report['speedup'])}× faster at batch 1 "
        f"(measured on {report['latency_device']}, {threads} thread{'s' if threads != 1 else ''})"
    )
    click.echo(f"written: {os.path.join(out, report['file_after'])}, {report['file_before']}, report.json")


@cli.command("diff")
@click.argument("a")
@click.argument("b")
@click.option("-o", "--option", "pairs", multiple=True, metavar="KEY=VALUE", help="Graph parameter (both).")
@click.option("--json", "as_json", is_flag=True, help="Print the difference as JSON.")
def diff_command(a: str, b: str, pairs: tuple[str, ...], as_json: bool) -> None:
    """What changes from variant A to variant B: nodes and parameters and MACs per stage."""
    from papers.diff import diff

    result = diff(a, b, **_options(pairs))
    if as_json:
        _print_json(result.as_dict())
        return

    nodes = _table("", "node", "op", "what differs", title=f"{a} → {b}")
    for row in result.node_rows():
        nodes.add_row(*row)
    if nodes.rows:
        click.echo(str(nodes))
    else:
        click.echo(f"{a} → {b}: the graphs have the same nodes\n")
    costs = _table("stage", "params A", "params B", "Δ params", "MACs A", "MACs B", "Δ MACs")
    costs.RIGHT = frozenset(costs.columns[1:])
    for stage in [*result.stages, result.total]:
        costs.add_row(
            stage.stage,
            f"{stage.params_a:,}",
            f"{stage.params_b:,}",
            f"{stage.params_b - stage.params_a:+,}",
            count(stage.macs_a),
            count(stage.macs_b),
            f"{stage.macs_b - stage.macs_a:+,}",
        )
    click.echo(str(costs))
    counts = (len(result.changed), len(result.renamed), len(result.added), len(result.removed))
    click.echo("A: {}, B: {}; {} changed, {} renamed, {} added, {} removed".format(a, b, *counts))
    click.echo("MACs: multiply-adds for one image")


@cli.group("import", cls=_Group)
def import_group() -> None:
    """Read another framework's network into a spec (Darknet's .cfg and .weights)."""


@import_group.command("darknet")
@click.argument("cfg", type=click.Path(dir_okay=False))
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="The spec file to write (.yaml).")
@click.option(
    "--weights",
    type=click.Path(dir_okay=False),
    help="Darknet .weights for the .cfg: loaded into the built network and written beside the spec as "
    "<spec>.safetensors.",
)
@click.option("--id", "spec_id", help="The spec's id and its variant's [default: the .cfg's name].")
def import_darknet(cfg: str, out: str, weights: str | None, spec_id: str | None) -> None:
    """Write a spec for the Darknet network of CFG (one graph, `darknet`); `papers validate` accepts it."""
    from pathlib import Path

    import yaml

    from papers.darknet import darknet_model, import_cfg, read_weights, weight_layers

    if Path(out).suffix not in (".yaml", ".yml"):
        raise PapersError("the spec is written as YAML: give a .yaml file", field="--out")
    spec = import_cfg(cfg, spec_id=spec_id)
    text = yaml.safe_dump(spec, sort_keys=False, allow_unicode=True)
    model = darknet_model(cfg)  # refuses a graph that does not build, before anything is written
    state = None
    if weights is not None:
        state = read_weights(weights, model, weight_layers(cfg))
    Path(out).write_text(text, encoding="utf-8")
    click.echo(f"written: {out} ({spec['id']}: {len(spec['graphs']['darknet']['nodes'])} layers)")
    if state is not None:
        from safetensors.torch import save_file

        tensors = Path(out).with_suffix(".safetensors")
        save_file({k: v.contiguous() for k, v in state.items()}, str(tensors))
        click.echo(f"written: {tensors} ({sum(v.numel() for v in state.values()):,} values)")


@cli.command("export")
@click.argument("variant")
@click.option("--format", "file_format", type=click.Choice(["onnx"]), default="onnx", show_default=True)
@click.option("--out", required=True, help="The file to write (.onnx).")
@click.option("-o", "--option", "pairs", multiple=True, metavar="KEY=VALUE", help="Graph parameter.")
@click.option("--weights", help="Weights to export (.safetensors, .pth) [default: initialised, --seed].")
@click.option("--seed", type=int, default=0, show_default=True, help="Seeds the weights and the test input.")
@click.option(
    "--exporter",
    type=click.Choice(["dynamo", "torchscript"]),
    default="dynamo",
    show_default=True,
    help="torch.onnx's exporter; torchscript is faster but exports fewer models.",
)
@click.option("--force", is_flag=True, help="Overwrite the --out file if it exists.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@click.pass_context
def export_command(
    ctx: click.Context,
    variant: str,
    file_format: str,
    out: str,
    pairs: tuple[str, ...],
    weights: str | None,
    seed: int,
    exporter: str,
    force: bool,
    as_json: bool,
) -> None:
    """Export a variant to ONNX; onnxruntime's outputs are checked against torch's before it is written."""
    from papers.export import check_out, export_onnx

    check_out(out, force=force)
    options = _options(pairs)
    report = export_onnx(variant, out, weights=weights, seed=seed, exporter=exporter, force=force, **options)
    if as_json:
        _print_json(report.as_dict())
    else:
        mark = "✓" if report.passed else "✗"
        click.echo(
            f"{mark} onnxruntime vs torch: max |a - b| = {report.max_abs_difference:.3g}, "
            f"{report.relative_difference:.3g} of max |b| = {report.max_abs_reference:.3g} "
            f"(tolerance {report.tolerance:g}; input {report.inputs}, seed {seed})"
        )
        if report.written:
            click.echo(f"written: {out} ({report.bytes:,} bytes, {exporter} exporter, opset {report.opset})")
        else:
            click.echo(f"not written: {out}", err=True)
    if not report.passed:
        ctx.exit(1)


def _on_images(out_help: str, option_help: str, json_help: str) -> Callable[[Callable], Callable]:
    """The arguments and options ``papers segment`` and ``papers detect`` share."""

    def decorate(command: Callable) -> Callable:
        for option in reversed(
            [
                click.argument("variant"),
                click.argument("images", nargs=-1, required=True),
                click.option(
                    "--weights", help="Weights (.safetensors, .pth) [default: initialised, seed 0]."
                ),
                click.option("--out", type=click.Path(file_okay=False), help=out_help),
                click.option("-o", "--option", "pairs", multiple=True, metavar="KEY=VALUE", help=option_help),
                click.option("--json", "as_json", is_flag=True, help=json_help),
            ]
        ):
            command = option(command)
        return command

    return decorate


@cli.command()
@_on_images(
    "Folder for <image>.png and <image>.overlay.png.",
    "Graph parameter.",
    "Print each image's class histogram as JSON.",
)
@click.option("--crf", is_flag=True, help="Refine the scores with the paper's fully connected CRF (DeepLab).")
@click.option(
    "--msc", is_flag=True, help="Run at the paper's input scales, score maps max-fused (DeepLab v2's MSC)."
)
def segment(
    variant: str,
    images: tuple[str, ...],
    weights: str | None,
    out: str | None,
    pairs: tuple[str, ...],
    as_json: bool,
    crf: bool,
    msc: bool,
) -> None:
    """Label every pixel of IMAGES with a segmenter; write label maps (VOC palette) and overlays."""
    from papers.segment import segment as run_segment

    with _warnings_held():
        results = run_segment(
            variant, list(images), weights=weights, out=out, options=_options(pairs), crf=crf, msc=msc
        )
    if as_json:
        _print_json(results)
        return
    for result in results:
        total = sum(result["histogram"].values())
        shares = ", ".join(f"{name} {count / total:.1%}" for name, count in result["histogram"].items())
        click.echo(f"{result['image']}: {shares}")
        for file in result.get("files", []):
            click.echo(f"  {file}")


@cli.command()
@_on_images(
    "Folder for detections.json and the images, boxes drawn.",
    "Build option.",
    "Print the detections as JSON.",
)
@click.option(
    "--proposals",
    type=click.Path(dir_okay=False),
    help="Region proposals for a detector that takes them (R-CNN): JSON {image name: [[x1, y1, x2, y2], "
    "...]} or .npz, one array per image name [default: selective search].",
)
def detect(
    variant: str,
    images: tuple[str, ...],
    weights: str | None,
    out: str | None,
    pairs: tuple[str, ...],
    as_json: bool,
    proposals: str | None,
) -> None:
    """Find objects in IMAGES with a detector: boxes (x1, y1, x2, y2 in pixels), scores and labels."""
    from papers.detect import detect as run_detect

    with _warnings_held():
        results = run_detect(
            variant, list(images), weights=weights, out=out, options=_options(pairs), proposals=proposals
        )
    if as_json:
        _print_json([{k: v for k, v in r.items() if k != "drawn"} for r in results])
        return
    for result in results:
        found = len(result["boxes"])
        click.echo(f"{result['image']}: {found} object{'' if found == 1 else 's'}")
        for box, score, name in zip(result["boxes"], result["scores"], result["label_names"], strict=True):
            click.echo(f"  {name:<16} {score:.3f}  [{', '.join(f'{v:.1f}' for v in box)}]")
    if out is not None:
        click.echo(f"detections: {os.path.join(out, 'detections.json')}")


def main() -> None:
    """Console-script entry point."""
    try:
        cli(prog_name="papers")
    except BrokenPipeError:
        sys.stderr.close()
        sys.exit(1)


if __name__ == "__main__":
    main()
