"""Region proposals for the detectors that take them (R-CNN, SPP-net, Fast R-CNN): one interface.

:func:`selective_search` runs Uijlings et al.'s selective search as OpenCV contrib's ``ximgproc``
implements it, in its fast or its quality mode; :func:`load_proposals` reads proposals computed
elsewhere from a file; :func:`image_proposals` gives one image's proposals from either. Boxes are
``numpy`` arrays [N, 4] of float32 (x1, y1, x2, y2) in the image's pixels, ranked as the source
ranks them.

Proposals files are JSON, ``{"<image file name>": [[x1, y1, x2, y2], ...], ...}``, or NumPy's
``.npz``, one array [N, 4] per image file name (``numpy.savez(path, **{name: boxes})``). An image is
looked up by its file name, then by its path as given. Nothing here is hand-written that OpenCV has.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from papers.errors import PapersError

MODES = ("fast", "quality")
"""Selective search's two strategies (Uijlings et al. 2013): R-CNN uses the fast one (Section 2.1)."""


class ProposalsError(PapersError):
    """A proposals file that cannot be read or holds a box that is no box."""


def selective_search(image: Any, mode: str = "fast", max_proposals: int = 2000) -> Any:
    """Selective search's boxes on ``image`` (RGB: an array [H, W, 3] of uint8, a PIL image, or a
    tensor [3, H, W] in [0, 1] or 0–255): up to ``max_proposals`` boxes [N, 4] (x1, y1, x2, y2),
    float32, in the order OpenCV ranks them. Runs on one thread. OpenCV ranks with random numbers it
    does not let us seed: the same image gives the same boxes, but their order (and so which ones a
    ``max_proposals`` cut keeps) can change from call to call."""
    import numpy as np

    if mode not in MODES:
        raise ValueError(f"selective search's mode is 'fast' or 'quality', got {mode!r}")
    if max_proposals < 1:
        raise ValueError(f"max_proposals is a positive count, got {max_proposals}")
    try:
        import cv2

        create = cv2.ximgproc.segmentation.createSelectiveSearchSegmentation
    except (ImportError, AttributeError):
        raise PapersError(
            "selective search needs OpenCV's contrib modules: pip install opencv-contrib-python-headless"
        ) from None
    pixels = _rgb_array(image)
    threads = cv2.getNumThreads()
    cv2.setNumThreads(1)
    try:
        search = create()
        search.setBaseImage(np.ascontiguousarray(pixels[:, :, ::-1]))  # OpenCV wants BGR
        if mode == "fast":
            search.switchToSelectiveSearchFast()
        else:
            search.switchToSelectiveSearchQuality()
        rects = search.process()
    finally:
        cv2.setNumThreads(threads)
    rects = np.asarray(rects, dtype=np.float32).reshape(-1, 4)[:max_proposals]
    boxes = rects.copy()
    boxes[:, 2:] += rects[:, :2]  # (x, y, w, h) → (x1, y1, x2, y2)
    return boxes


def _rgb_array(image: Any) -> Any:
    import numpy as np

    if hasattr(image, "detach"):  # a tensor [3, H, W]
        array = image.detach().cpu().float().numpy()
        if array.ndim != 3 or array.shape[0] != 3:
            raise ValueError(f"an image tensor is [3, H, W], got {list(array.shape)}")
        array = array.transpose(1, 2, 0)
        scale = 255.0 if array.size and float(array.max()) <= 1.0 else 1.0
        return np.clip(array * scale + 0.5, 0, 255).astype(np.uint8)
    array = np.asarray(image)
    if array.ndim == 2:
        array = np.stack([array] * 3, axis=-1)
    if array.ndim != 3 or array.shape[2] != 3:
        raise ValueError(f"an image array is [H, W, 3], got {list(array.shape)}")
    return array.astype(np.uint8, copy=False)


def load_proposals(path: str | Path) -> dict[str, Any]:
    """Every image's proposals from a JSON or ``.npz`` file (see the module's docstring), each checked:
    a list of [x1, y1, x2, y2] of finite numbers with x1 < x2 and y1 < y2. A bad file raises
    :class:`ProposalsError` naming the file and the field."""
    import numpy as np

    file = str(path)
    if Path(file).suffix.lower() == ".npz":
        try:
            with np.load(file, allow_pickle=False) as archive:
                raw: Mapping[str, Any] = {name: archive[name] for name in archive.files}
        except (OSError, ValueError) as exc:
            raise ProposalsError(f"cannot read the proposals: {_first_line(exc)}", file=file) from None
    else:
        try:
            raw = json.loads(Path(file).read_text(encoding="utf-8"))
        except OSError as exc:
            raise ProposalsError(f"cannot read the proposals: {exc.strerror or exc}", file=file) from None
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ProposalsError(f"not JSON: {_first_line(exc)}", file=file) from None
        if not isinstance(raw, dict):
            raise ProposalsError(
                'a proposals file maps each image file name to its boxes: {"name.jpg": [[x1, y1, x2, y2]]}',
                file=file,
            )
    return {str(name): check_boxes(boxes, file=file, field=str(name)) for name, boxes in raw.items()}


def check_boxes(boxes: Any, *, file: str | None = None, field: str | None = None) -> Any:
    """``boxes`` as float32 [N, 4], or :class:`ProposalsError` naming ``file`` and the box at fault."""
    import numpy as np

    try:
        array = np.asarray(boxes, dtype=np.float64)
    except (TypeError, ValueError):
        raise ProposalsError("boxes are a list of [x1, y1, x2, y2] numbers", file=file, field=field) from None
    if array.size == 0:
        return np.zeros((0, 4), dtype=np.float32)
    if array.ndim != 2 or array.shape[1] != 4:
        raise ProposalsError(
            f"boxes are a list of [x1, y1, x2, y2], got an array of shape {list(array.shape)}",
            file=file,
            field=field,
        )
    for index, (x1, y1, x2, y2) in enumerate(array.tolist()):
        where = f"{field}[{index}]" if field else f"[{index}]"
        if not all(math.isfinite(v) for v in (x1, y1, x2, y2)):
            raise ProposalsError("a coordinate is not a finite number", file=file, field=where)
        if x2 <= x1 or y2 <= y1:
            raise ProposalsError(
                f"x2 > x1 and y2 > y1 in [x1, y1, x2, y2], got {[x1, y1, x2, y2]}", file=file, field=where
            )
    return array.astype(np.float32)


def image_proposals(
    image: Any,
    name: str | None = None,
    *,
    table: Mapping[str, Any] | None = None,
    file: str | None = None,
    mode: str = "fast",
    max_proposals: int = 2000,
) -> Any:
    """One image's proposals: from ``table`` (read by :func:`load_proposals` from ``file``) under the
    image's file name or path ``name``, else selective search's (``mode``, ``max_proposals``). Boxes
    are clipped to the image and those left empty dropped."""
    import numpy as np

    if table is not None:
        keys = [Path(name).name, name] if name is not None else []
        found = next((table[key] for key in keys if key in table), None)
        if found is None:
            field = Path(name).name if name is not None else None
            raise ProposalsError(f"no proposals for the image {name}", file=file, field=field)
        boxes = np.asarray(found, dtype=np.float32)[:max_proposals]
    else:
        boxes = selective_search(image, mode, max_proposals)
    height, width = _image_size(image)
    boxes = boxes.copy()
    boxes[:, 0::2] = boxes[:, 0::2].clip(0, width)
    boxes[:, 1::2] = boxes[:, 1::2].clip(0, height)
    keep = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
    return boxes[keep]


def _image_size(image: Any) -> tuple[int, int]:
    """(height, width) of an array [H, W, 3], a PIL image or a tensor [3, H, W]."""
    if hasattr(image, "detach"):
        return int(image.shape[-2]), int(image.shape[-1])
    if hasattr(image, "size") and not hasattr(image, "shape"):  # PIL: size is (width, height)
        return int(image.size[1]), int(image.size[0])
    return int(image.shape[0]), int(image.shape[1])


def _first_line(exc: BaseException) -> str:
    text = str(exc)
    return text.splitlines()[0] if text else type(exc).__name__
