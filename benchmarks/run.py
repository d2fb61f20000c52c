"""Benchmarks of papers against its peers, measured in the same run: ``python benchmarks/run.py [--quick]``.

Each row compares ours with a peer (a bare ``import torch``, or torchvision's own VGG-16), reports the
ratio ours/peer and whether it meets its target. The script reports; it never fails on a missed target.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torchvision

PYTHON = sys.executable
PAPERS = str(Path(sys.executable).parent / "papers")
COMPILE_BUDGET_S = 120


@dataclass
class Row:
    """One measurement: ours against the peer, in seconds, and the target for ours/peer."""

    name: str
    ours: float
    peer: float
    target: float

    @property
    def ratio(self) -> float:
        """Ours over the peer: below 1 means ours is faster."""
        return self.ours / self.peer

    @property
    def ok(self) -> bool:
        """Whether the ratio meets the target."""
        return self.ratio <= self.target


@dataclass
class Budget:
    """A whole job that has a time budget here and no peer to race: seconds against the budget."""

    name: str
    seconds: float
    budget: float
    detail: str = ""
    """What the job made, beside its time (the site's total bytes and heaviest page)."""

    @property
    def ok(self) -> bool:
        """Whether the job finished within its budget."""
        return self.seconds <= self.budget


def cpu_count() -> int:
    """The cores this process may run on (its affinity where the platform tells it)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def wall(argv: list[str], env: dict[str, str] | None = None) -> float:
    """Wall time of a fresh process running ``argv``, its output discarded."""
    start = time.perf_counter()
    subprocess.run(argv, stdout=subprocess.DEVNULL, check=True, env=env)
    return time.perf_counter() - start


def interleaved(ours: Callable[[], float], peer: Callable[[], float], n: int) -> tuple[float, float]:
    """Median of ``n`` timings of each, alternating them (ABBA order) so machine load affects both alike."""
    a: list[float] = []
    b: list[float] = []
    for i in range(n):
        step(ours, peer, a, b, first_ours=i % 2 == 0)
    return statistics.median(a), statistics.median(b)


def step(
    ours: Callable[[], float], peer: Callable[[], float], a: list[float], b: list[float], first_ours: bool
) -> None:
    """Time one call of each into ``a`` and ``b``, in the order given."""
    if first_ours:
        a.append(ours())
        b.append(peer())
    else:
        b.append(peer())
        a.append(ours())


def timed(fn: Callable[[], object]) -> float:
    """Seconds one call of ``fn`` takes."""
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def synthetic_registry(folder: Path, papers: int) -> dict[str, str]:
    """A plugin distribution in ``folder`` holding ``papers`` copies of the VGG spec under new ids.

    Returns the environment that puts it on the path, so ``papers list`` reads as many spec files
    as a registry of that size would (the copies are as large as the largest real spec so far).
    """
    from importlib.resources import files

    import yaml

    source = yaml.safe_load((files("papers_specs") / "classification" / "vgg.yaml").read_bytes())
    package = folder / "papers_bench_specs"
    package.mkdir(parents=True)
    for index in range(papers):
        data = json.loads(json.dumps(source))
        data["id"] = f"bench-{index}"
        renamed = {v["id"]: f"{v['id']}_bench{index}" for v in data["variants"]}
        for variant in data["variants"]:
            variant["id"] = renamed[variant["id"]]
        for result in data["results"]:
            result["variant"] = renamed[result["variant"]]
        (package / f"spec{index}.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
    (package / "__init__.py").write_text(
        "from pathlib import Path\n\nfrom papers.hookspecs import hookimpl\n\n\n@hookimpl\n"
        "def papers_specs():\n    return sorted(Path(__file__).parent.glob('spec*.yaml'))\n"
    )
    info = folder / "papers_bench_specs-0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: papers-bench-specs\nVersion: 0\n")
    (info / "entry_points.txt").write_text("[papers]\nbench = papers_bench_specs\n")
    return {**os.environ, "PYTHONPATH": str(folder), "PAPERS_CACHE_DIR": str(folder / "cache")}


TIMM_LIST = [PYTHON, "-c", "import timm; timm.list_models()"]
MEMORY_BUDGET_MB = 80
PEAK_MEMORY = (
    "import sys, papers.cli; sys.argv = ['papers', 'list']\n"
    "try:\n    papers.cli.main()\nexcept SystemExit:\n    pass\n"
    "print(next(line.split()[1] for line in open('/proc/self/status') if line.startswith('VmHWM')), "
    "file=sys.stderr)"
)


def peak_memory_mb(env: dict[str, str] | None = None) -> float:
    """The peak resident memory of ``papers list`` in a fresh process, in MB (VmHWM: ``ru_maxrss``
    would carry over this process's own peak through fork and exec)."""
    result = subprocess.run(
        [PYTHON, "-c", PEAK_MEMORY], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env, check=True
    )
    return int(result.stderr.decode().strip().splitlines()[-1]) / 1024


def listing_rows(n: int, papers: int) -> tuple[list[Row], float]:
    """``papers list`` on the real registry and on a synthetic one of ``papers`` specs, against
    ``import torch`` and ``timm.list_models()``, and its peak memory; also the synthetic registry's
    first run (every spec parsed and validated, the index written)."""
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        synthetic = synthetic_registry(Path(folder), papers - 1)
        first = wall([PAPERS, "list"], synthetic)
        for label, env in (("", None), (f", {papers} papers", synthetic)):
            wall([PAPERS, "list"], env)  # the index of this registry
            ours, torch_import = interleaved(
                lambda env=env: wall([PAPERS, "list"], env), lambda: wall([PYTHON, "-c", "import torch"]), n
            )
            rows.append(Row(f"CLI cold start{label}: papers list / import torch", ours, torch_import, 0.2))
            ours, timm_list = interleaved(
                lambda env=env: wall([PAPERS, "list"], env), lambda: wall(TIMM_LIST), n
            )
            rows.append(Row(f"papers list{label} / timm.list_models()", ours, timm_list, 1 / 15))
            memory = peak_memory_mb(env)
            rows.append(
                Row(f"papers list{label}: peak MB / {MEMORY_BUDGET_MB} MB", memory, MEMORY_BUDGET_MB, 1.0)
            )
    return rows, first


def build_summary(n: int) -> Row:
    """``papers build vgg16`` in a fresh process against building torchvision's VGG-16 in one."""
    tv = "import torchvision; torchvision.models.vgg16()"
    ours, peer = interleaved(lambda: wall([PAPERS, "build", "vgg16"]), lambda: wall([PYTHON, "-c", tv]), n)
    return Row("build summary: papers build vgg16 / tv vgg16()", ours, peer, 0.6)


def forward(
    ours: torch.nn.Module, peer: torch.nn.Module, batch: int, min_run_time: float, label: str, size: int = 224
) -> Row:
    """Median latency of one forward pass of each model (eval mode, no grad) on a CPU batch.

    Calls alternate between the two models (ABBA order), after one warm-up call of each, until each has
    had ``min_run_time`` seconds and at least five calls: load on the machine then affects both alike.
    """
    x = torch.randn(batch, 3, size, size)
    a: list[float] = []
    b: list[float] = []
    with torch.no_grad():
        ours(x), peer(x)  # warm-up
        while min(sum(a), sum(b)) < min_run_time or len(a) < 5:
            step(lambda: timed(lambda: ours(x)), lambda: timed(lambda: peer(x)), a, b, len(a) % 2 == 0)
    return Row(f"forward {label}batch {batch}", statistics.median(a), statistics.median(b), 1.02)


# Our variant, the library constructor's keyword arguments, the input size; benchmarked where registered.
MODELS: list[tuple[str, dict[str, object], int]] = [
    ("vgg16", {}, 224),
    ("resnet50.torchvision", {}, 224),
    ("densenet121", {}, 224),
    ("inception_v3", {"aux_logits": False, "init_weights": True}, 299),
    ("resnext50_32x4d", {}, 224),
]


def materialised_build(variant: str, peer_kwargs: dict[str, object], n: int) -> Row:
    """In-process ``papers.build_model(variant)`` against the library's constructor, warm."""
    import papers

    def build_ours() -> float:
        return timed(lambda: papers.build_model(variant))

    def build_peer() -> float:
        return timed(lambda: papers.reference_model(variant, **peer_kwargs))

    build_ours(), build_peer()  # warm-up
    ours, peer = interleaved(build_ours, build_peer, n)
    return Row(f"materialised build {variant}: ours / library", ours, peer, 1.5)


def paired(
    variant: str, peer_kwargs: dict[str, object], size: int
) -> tuple[torch.nn.Module, torch.nn.Module, float]:
    """Our model carrying the library model's weights, the library model, and their largest difference."""
    import papers

    peer = papers.reference_model(variant, **peer_kwargs).eval()
    ours = papers.build_model(variant, device="meta")
    ours.load_state_dict(peer.state_dict(), strict=True, assign=True)
    ours.eval()
    with torch.no_grad():
        x = torch.randn(2, 3, size, size)
        difference = (ours(x) - peer(x)).abs().max().item()
    return ours, peer, difference


@contextmanager
def deadline(seconds: int) -> Iterator[None]:
    """Raise ``TimeoutError`` in the block after ``seconds`` (where the platform has SIGALRM)."""
    if not hasattr(signal, "SIGALRM"):
        yield
        return

    def expire(signum: int, frame: object) -> None:
        raise TimeoutError(f"took over {seconds} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def compiled(
    ours: torch.nn.Module, peer: torch.nn.Module, min_run_time: float, label: str, size: int = 224
) -> Row | str:
    """Forward latency at batch 1 of both models under ``torch.compile``, or why it was skipped."""
    x = torch.randn(1, 3, size, size)
    try:
        with deadline(COMPILE_BUDGET_S), torch.no_grad():
            c_peer, c_ours = torch.compile(peer), torch.compile(ours)
            c_peer(x), c_ours(x)  # compile both within the budget
    except Exception as error:
        first_line = (str(error).splitlines() or [""])[0]
        return f"{label}: torch.compile skipped: {type(error).__name__}: {first_line}"
    return forward(c_ours, c_peer, 1, min_run_time, f"{label} compiled ", size)


def refused(argv: list[str], env: dict[str, str] | None = None) -> float:
    """Wall time of a fresh process that must refuse its input (exit status 2)."""
    start = time.perf_counter()
    result = subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    seconds = time.perf_counter() - start
    if result.returncode != 2:
        raise SystemExit(f"{' '.join(argv)}: expected a refusal (exit 2), got {result.returncode}")
    return seconds


HOSTILE_GRAPHS = {
    "an expression bomb: str([[[1]*10000]*10000]*10000)": [
        {"op": "conv2d", "args": {"out_channels": "${len(str([[[1]*10000]*10000]*10000))}", "kernel_size": 1}}
    ],
    "a sum bomb: len(sum([[1]*10000]*10000, []))": [
        {"op": "conv2d", "args": {"out_channels": "${len(sum([[1]*10000]*10000, []))}", "kernel_size": 1}}
    ],
    "three nested 10,000-repeats switched off by when": [
        {
            "repeat": 10_000,
            "as": "a",
            "body": [
                {
                    "repeat": 10_000,
                    "as": "b",
                    "body": [{"repeat": 10_000, "as": "c", "body": [{"op": "relu", "when": "False"}]}],
                }
            ],
        }
    ],
    "90,000 single-node blocks": [
        {
            "repeat": 300,
            "as": "i",
            "body": [{"repeat": 300, "as": "j", "body": [{"block": "b", "name": "b${i}_${j}"}]}],
        }
    ],
}


def hostile_specs(folder: Path, env: dict[str, str]) -> list[Budget]:
    """``papers validate`` on small files that would exhaust the machine: each is refused quickly."""
    import yaml

    rows = []
    for label, nodes in HOSTILE_GRAPHS.items():
        spec = {
            "id": "hostile",
            "name": "Hostile",
            "topics": ["classification"],
            "citation": {"title": "H", "authors": ["A"], "year": 2020, "venue": "T", "kind": "conference"},
            "summary": "A spec that must be refused.",
            "blocks": {"b": {"nodes": [{"op": "relu"}]}},
            "graphs": {"net": {"inputs": {"image": [3, 8, 8]}, "nodes": nodes}},
            "variants": [{"id": "hostile1", "name": "H", "graph": "net"}],
            "results": [],
        }
        path = Path(folder, "hostile.yaml")
        path.write_text(yaml.safe_dump(spec))
        rows.append(
            Budget(f"papers validate refuses {label}", refused([PAPERS, "validate", str(path)], env), 10)
        )
    return rows


def budgets() -> list[Budget]:
    """The jobs the issues give a time budget: every static check, the site, LeNet-5 on the digits,
    Han et al.'s pruned LeNets on MNIST digits.

    Each runs in a fresh process with an empty cache first (cold), then again with the cache it left
    (warm), where a cache changes the answer.
    """
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        env = {**os.environ, "PAPERS_CACHE_DIR": str(Path(folder, "cache")), "NO_MKDOCS_2_WARNING": "1"}
        rows.append(Budget("papers check --all, cold cache", wall([PAPERS, "check", "--all"], env), 60))
        rows.append(Budget("papers check --all, warm cache", wall([PAPERS, "check", "--all"], env), 60))
        site = [PAPERS, "site", "build", "--out", str(Path(folder, "site"))]
        with tempfile.TemporaryDirectory() as cold:
            cold_env = {**env, "PAPERS_CACHE_DIR": cold}
            rows.append(Budget("papers site build, cold cache", wall(site, cold_env), 30))
        rows.append(Budget("papers site build after papers check --all", wall(site, env), 30))
        rows.append(Budget("papers site build, warm cache", wall(site, env), 30))
        for row in rows[-3:]:
            row.detail = site_weight(Path(folder, "site", "site"))
        rows.extend(hostile_specs(folder, env))
        rows.append(
            Budget(
                "papers check lenet5 --run (digits proxy)",
                wall([PAPERS, "check", "lenet5", "--run"], env),
                60,
            )
        )
        rows.append(
            Budget(
                "papers check han2015 --run (two LeNets on mnist5k: train, prune, retrain)",
                wall([PAPERS, "check", "han2015", "--run"], env),  # one thread: the proxies set it
                300,
            )
        )
        rows.extend(resnet20_epochs(folder, env))
    return rows


def resnet20_epochs(folder: str, env: dict[str, str]) -> list[Budget]:
    """One epoch of ResNet-20 on 32×32 data (the digits upsampled: 1,437 training images, batch 128)
    at one and at two intra-op threads: the epoch's own seconds from metrics.json, imports aside."""
    rows = []
    for threads in (1, 2):
        out = Path(folder, f"resnet20-{threads}")
        argv = [PAPERS, "train", "resnet20", "--data", "builtin:digits", "--epochs", "1"]
        wall([*argv, "--threads", str(threads), "--out", str(out)], env)
        epoch = json.loads((out / "metrics.json").read_text())[0]
        rows.append(
            Budget(
                f"one epoch of ResNet-20 at 32×32, {threads} thread{'s' if threads > 1 else ''}",
                epoch["seconds"],
                60,
                detail=f"{epoch['images_per_second']:.0f} images/s",
            )
        )
    return rows


def site_weight(site: Path) -> str:
    """The site's total bytes and its heaviest page: the HTML with the local scripts and stylesheets
    it loads (what a reader's browser fetches for it, the search index aside)."""
    import re

    total = sum(path.stat().st_size for path in site.rglob("*") if path.is_file())
    heaviest, most = "", 0
    for page in site.rglob("*.html"):
        text = page.read_text(encoding="utf-8", errors="replace")
        loaded = re.findall(r'<(?:script[^>]* src|link[^>]* href)="([^"#?]+\.(?:js|css))"', text)
        files = {(page.parent / link).resolve() for link in loaded if "://" not in link}
        weight = page.stat().st_size + sum(f.stat().st_size for f in files if f.is_file())
        if weight > most:
            heaviest, most = page.relative_to(site).as_posix(), weight
    return f"site {total / 1e6:.2f} MB; heaviest page {heaviest} {most / 1e6:.2f} MB"


def fmt(seconds: float) -> str:
    """Seconds in a readable unit."""
    return f"{seconds:.3f} s" if seconds >= 1 else f"{seconds * 1e3:.2f} ms"


def report_budgets(rows: list[Budget]) -> None:
    """Print the budget rows as a table."""
    width = max(len(r.name) for r in rows)
    print(f"\n{'job':<{width}}  {'seconds':>10}  {'budget':>7}  status")
    for r in rows:
        budget = f"≤ {r.budget:g} s"
        status = "ok" if r.ok else "MISSED"
        print(f"{r.name:<{width}}  {fmt(r.seconds):>10}  {budget:>7}  {status:<6}  {r.detail}".rstrip())


def report(rows: list[Row]) -> None:
    """Print the rows as a table."""
    width = max(len(r.name) for r in rows)
    print(f"{'benchmark':<{width}}  {'ours':>10}  {'peer':>10}  {'ratio':>6}  {'target':>7}  status")
    for r in rows:
        status = "ok" if r.ok else "MISSED"
        print(
            f"{r.name:<{width}}  {fmt(r.ours):>10}  {fmt(r.peer):>10}  {r.ratio:>6.3f}  "
            f"{'≤ ' + format(r.target, 'g'):>7}  {status}"
        )


def main() -> None:
    """Run the benchmarks, print the table and optionally write it as JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer runs and shorter timings")
    parser.add_argument("--json", type=Path, metavar="OUT", help="also write the rows to OUT as JSON")
    args = parser.parse_args()
    quick = args.quick
    min_run_time = 0.5 if quick else 2.0

    threads = cpu_count()
    torch.set_num_threads(threads)
    listed = subprocess.run([PAPERS, "list", "--json"], capture_output=True, text=True, check=True)
    n_papers = len(json.loads(listed.stdout))
    meta = {
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "threads": threads,
        "cpu_count": os.cpu_count(),
        "papers": n_papers,
        "quick": quick,
    }
    print(
        f"torch {torch.__version__}, torchvision {torchvision.__version__}; "
        f"torch.set_num_threads({threads}) (cores available: {threads}, os.cpu_count: {os.cpu_count()})"
    )
    print(f"registry: {n_papers} paper(s); {'quick' if quick else 'full'} run\n")

    rows, first = listing_rows(3 if quick else 5, 200)
    rows.append(build_summary(1 if quick else 3))

    import papers

    registered = [
        m for m in MODELS if m[0] in {v for p in papers.list_papers() for v in (x.id for x in p.variants)}
    ]
    notes = [f"200 papers, first run with an empty parse cache and no index: {fmt(first)}"]
    notes += [f"not registered, skipped: {m[0]}" for m in MODELS if m not in registered]
    for variant, peer_kwargs, size in registered:
        ours, peer, difference = paired(variant, peer_kwargs, size)
        notes.append(f"{variant}: outputs agree to max |Δ| = {difference:.2e}")
        for batch in (1, 8):
            rows.append(forward(ours, peer, batch, min_run_time, f"{variant} ", size))
        if not quick:
            result = compiled(ours, peer, min_run_time, variant, size)
            if isinstance(result, Row):
                rows.append(result)
            else:
                notes.append(result)
        rows.append(materialised_build(variant, peer_kwargs, 5 if quick else 9))
    if quick:
        notes.append("torch.compile skipped: --quick")

    budget_rows = budgets()
    report(rows)
    report_budgets(budget_rows)
    for note in notes:
        print(f"note: {note}")
    if args.json:
        data = {
            "meta": meta,
            "notes": notes,
            "rows": [{**asdict(r), "ratio": r.ratio, "ok": r.ok} for r in rows],
            "budgets": [{**asdict(r), "ok": r.ok} for r in budget_rows],
        }
        args.json.write_text(json.dumps(data, indent=2) + "\n")


if __name__ == "__main__":
    main()
