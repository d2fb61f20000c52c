"""The ``papers`` command line.

click parses arguments: small, composable, testable with its runner (typer would add import time and
build the same thing on top of it). Tables are plain aligned text, which prints in a few
milliseconds (a rich table of 70 rows took a third of a second) and reads well in pipes and diffs.
Every error from bad input is one line on stderr and exit status 2; ``papers check`` exits 1 when a
check fails.
"""

from __future__ import annotations

import json
import os
import sys
import textwrap
from typing import Any

import click

from papers.errors import PapersError, SpecError
from papers.text import count, plain


class _Group(click.Group):
    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except PapersError as error:
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
    from papers.registry import get_registry

    entries = get_registry().list(topic)
    rows = [
        {
            "id": e.spec.id,
            "name": e.spec.name,
            "title": e.spec.citation.title,
            "year": e.spec.citation.year,
            "venue": e.spec.citation.venue,
            "topic": e.spec.topics[0],
            "topics": list(e.spec.topics),
            "kind": e.spec.kind,
            "variants": [v.id for v in e.spec.variants],
            "plugin": e.plugin,
        }
        for e in entries
    ]
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
@click.option("--out", type=click.Path(dir_okay=False), help="Write initialised weights (.safetensors).")
def build(variant: str, pairs: tuple[str, ...], as_json: bool, out: str | None) -> None:
    """Build a variant and summarise it (computed on the meta device)."""
    from papers.api import build_model, measure

    if out is not None and not out.endswith(".safetensors"):
        raise PapersError("weights are written as .safetensors", field="--out")
    options = _options(pairs)
    measurement = measure(variant, **options)
    if out is not None:
        _save(build_model(variant, **options), out)
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


def _save(model: Any, out: str) -> None:
    from pathlib import Path

    from safetensors.torch import save

    from papers.files import write_atomic

    try:
        write_atomic(Path(out), save({k: v.contiguous() for k, v in model.state_dict().items()}))
    except OSError as error:
        raise PapersError(f"cannot write weights: {error.strerror or error}", file=out) from None


_SYMBOL = {"pass": "✓", "fail": "✗", "not_measurable": "not measurable here"}


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
                _SYMBOL[c.status],
                c.source,
            )
        if shown:
            click.echo(str(table))
        for c in shown:
            if c.proxy:
                click.echo(f"proxy: {c.variant} {c.metric} reported on {c.dataset}; measured on {c.proxy}")
                click.echo(f"       {c.reason}")
        counts = {status: sum(c.status == status for c in checks) for status in _SYMBOL}
        click.echo(
            f"{counts['pass']} passed, {counts['fail']} failed, "
            f"{counts['not_measurable']} not measurable here (need trained weights and data)"
        )
    if any(c.status == "fail" for c in checks):
        ctx.exit(1)


@cli.command()
@click.argument("variant")
@click.option("--data", help="An ImageFolder root (DIR/train/<class>/*, DIR/val/...) or builtin:digits.")
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
@click.option("--stop-after", type=click.IntRange(min=0), hidden=True)
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
    stop_after: int | None,
    as_json: bool,
) -> None:
    """Train a variant with its paper's recipe (under torchrun: on every process, rank 0 writing)."""
    import time as _time

    from papers.recipe import override_pairs, resolve
    from papers.registry import get_registry
    from papers.train import train as run_train

    overrides = override_pairs(pairs)
    overrides.update({k: v for k, v in (("epochs", epochs), ("batch_size", batch_size)) if v is not None})
    if dry_run:
        get_registry().variant(variant)
        _print_json(resolve(get_registry().paper(variant).spec, overrides).model_dump(mode="json"))
        return
    if resume is None and out is None:
        out = os.path.join("runs", f"{variant}-{_time.strftime('%Y%m%d-%H%M%S')}")
    try:
        run = run_train(
            variant, data, overrides=overrides, out=out, resume=resume, workers=workers, stop_after=stop_after
        )
    except KeyboardInterrupt:
        folder = resume or out
        click.echo(f"papers: interrupted; continue with: papers train {variant} --resume {folder}", err=True)
        sys.exit(130)
    if os.environ.get("RANK", "0") != "0":
        return
    if as_json:
        _print_json({"run": str(run.folder), "finished": run.finished, "metrics": run.final})
        return
    final = run.final
    if "val_top1" in final:
        click.echo(f"top-1 {final['val_top1']:.2f}%  top-5 {final['val_top5']:.2f}% (held-out split)")
    click.echo(f"run: {run.folder}" + ("" if run.finished else " (stopped; continue with --resume)"))


@cli.command("eval")
@click.argument("variant")
@click.option(
    "--weights", required=True, type=click.Path(dir_okay=False), help=".safetensors, or a .pth checkpoint."
)
@click.option(
    "--data", required=True, help="An ImageFolder (DIR/val, DIR/test or DIR itself) or builtin:digits."
)
@click.option(
    "--protocol", type=click.Choice(["single_crop", "center_crop", "ten_crop"]), default="single_crop"
)
@click.option(
    "--resize", type=click.IntRange(min=1), help="Shorter side before cropping [default: size / 0.875]."
)
@click.option("--batch-size", type=click.IntRange(min=1), default=64, show_default=True)
@click.option("--workers", type=click.IntRange(min=0), default=0, show_default=True)
@click.option("-o", "--option", "option_pairs", multiple=True, metavar="KEY=VALUE", help="Graph parameter.")
@click.option(
    "--dataset", help="The dataset's name as the paper's results write it: 'ImageNet (ILSVRC-2012)'."
)
@click.option(
    "--split", type=click.Choice(["train", "val", "test", "test-dev"]), help="Which split DIR holds."
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
    option_pairs: tuple[str, ...],
    dataset: str | None,
    split: str | None,
    results_out: str | None,
    as_json: bool,
) -> None:
    """Top-1 / top-5 accuracy of a variant with given weights, under a test protocol."""
    from papers.evaluate import evaluate
    from papers.results import Measured, write_results

    measured = evaluate(
        variant,
        weights,
        data,
        protocol=protocol,
        resize=resize,
        batch_size=batch_size,
        workers=workers,
        options=_options(option_pairs),
    )
    if data == "builtin:digits":
        dataset, split = dataset or data, split or "test"
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
                    weights=os.path.basename(weights),
                    **labels,  # type: ignore[arg-type]
                )
                for metric in ("top1_accuracy", "top5_accuracy")
            ],
        )
    if as_json:
        _print_json(measured)
        return
    click.echo(
        f"{variant}: top-1 {measured['top1_accuracy']:.2f}%  top-5 {measured['top5_accuracy']:.2f}%  "
        f"({measured['images']} images, {measured['protocol']})"
    )
    if results_out is not None:
        click.echo(f"results: {results_out}")


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
@click.option("--out", default="build", show_default=True, help="Folder for docs/ (Markdown), site/ (HTML).")
@click.option("--site-url", default="http://127.0.0.1:8000/", show_default=True, help="Canonical URL.")
@click.option(
    "--results",
    "results_file",
    type=click.Path(dir_okay=False),
    help="A results file from `papers eval --out`: its accuracies are checked on the pages.",
)
def site_build(out: str, site_url: str, results_file: str | None) -> None:
    """Render the pages from the specs and measurements, then run mkdocs build --strict."""
    from papers.site import build_site

    html = build_site(out, site_url=site_url, results=results_file)
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


def main() -> None:
    """Console-script entry point."""
    try:
        cli(prog_name="papers")
    except BrokenPipeError:
        sys.stderr.close()
        sys.exit(1)


if __name__ == "__main__":
    main()
