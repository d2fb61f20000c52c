"""A library's pretrained weights by name: ``torchvision:resnet18`` (its default weights, or
``torchvision:resnet50.IMAGENET1K_V1`` for one of them) and ``timm:legacy_seresnet50`` (``timm:NAME.TAG``).

They are fetched by the library's own code, through its cache: torchvision's through torch.hub's
(``$TORCH_HOME/hub/checkpoints``), timm's through torch.hub's or the Hugging Face hub's (``$HF_HOME``),
wherever timm keeps them. Weights in the cache load on a machine without a network; weights that are
not there and cannot be downloaded are one error naming ``--weights``.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import sys
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlparse

if TYPE_CHECKING:
    import torch

FIELD = "--weights"
_NAME = re.compile(r"^(torchvision|timm):([A-Za-z0-9_.\-]+)$")


def is_library_weights(weights: str | Path) -> bool:
    """Whether ``weights`` names a library's pretrained weights rather than a file (a file of that
    name, if there is one, wins)."""
    return isinstance(weights, str) and bool(_NAME.match(weights)) and not Path(weights).exists()


def library_state_dict(weights: str) -> dict[str, torch.Tensor]:
    """The state dict of the pretrained weights ``weights`` names (``torchvision:resnet18``)."""
    from papers.evaluate import WeightsError

    found = _NAME.match(weights)
    if found is None:
        raise WeightsError(f"{weights!r} is not LIBRARY:NAME (torchvision:resnet18, timm:NAME)", field=FIELD)
    library, name = found.groups()
    # torch.hub says "Downloading" on stdout: on a terminal it goes to stderr with the progress bar;
    # elsewhere both are dropped, and a failure is our one line
    shown = sys.stderr.isatty()
    dropped = io.StringIO()
    with (
        contextlib.redirect_stdout(sys.stderr if shown else dropped),
        contextlib.nullcontext() if shown else contextlib.redirect_stderr(dropped),
    ):
        state = _torchvision(name, weights, shown) if library == "torchvision" else _timm(name, weights)
    return {key: value.detach().cpu() for key, value in state.items()}


def _torchvision(name: str, weights: str, progress: bool) -> dict[str, torch.Tensor]:
    import torchvision

    from papers.evaluate import WeightsError

    model, _, tag = name.partition(".")
    try:
        choices = torchvision.models.get_model_weights(model)
    except (ValueError, KeyError):
        raise WeightsError(f"torchvision has no pretrained {model!r}", field=FIELD) from None
    if tag and tag not in choices.__members__:
        known = ", ".join(choices.__members__)
        raise WeightsError(f"torchvision's {model} has no weights {tag!r}; it has {known}", field=FIELD)
    chosen = choices[tag] if tag else choices.DEFAULT
    try:
        return chosen.get_state_dict(progress=progress, map_location="cpu", weights_only=True)
    except Exception as exc:  # offline (URLError), a damaged cache file, an interrupted download
        raise WeightsError(f"{weights}: {_not_loaded(chosen.url, exc)}", field=FIELD) from None


def _timm(name: str, weights: str) -> dict[str, torch.Tensor]:
    from papers.evaluate import WeightsError

    try:
        import timm
    except ImportError:
        raise WeightsError(f"{weights} needs timm: pip install timm", field=FIELD) from None
    if not timm.is_model(name):
        raise WeightsError(f"timm has no model {name!r}", field=FIELD)
    if not timm.is_model_pretrained(name):
        raise WeightsError(f"timm has no pretrained weights for {name!r}", field=FIELD)
    try:
        return timm.create_model(name, pretrained=True).state_dict()
    except Exception as exc:  # offline, a damaged cache file
        config = timm.models.get_pretrained_cfg(name)
        hub = getattr(config, "hf_hub_id", None)
        if hub:
            why = f"not in the Hugging Face cache ({_hf_cache()}) and the download failed: {_detail(exc)}"
        else:
            why = _not_loaded(getattr(config, "url", None) or name, exc)
        raise WeightsError(f"{weights}: {why}", field=FIELD) from None


def _not_loaded(url: str, exc: BaseException) -> str:
    import torch

    cached = Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(urlparse(url).path)
    if cached.is_file():
        return f"cannot read the cached {cached}: {_detail(exc)}"
    return f"not in torch.hub's cache ({cached}) and the download failed: {_detail(exc)}"


def _detail(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return (f"{type(exc).__name__}: {lines[0]}" if lines else type(exc).__name__)[:300]


def _hf_cache() -> str:
    try:
        from huggingface_hub import constants

        return str(constants.HF_HUB_CACHE)
    except ImportError:
        return os.path.join(os.environ.get("HF_HOME", "~/.cache/huggingface"), "hub")
