"""The fully connected CRF (Krähenbühl and Koltun 2011) that DeepLab runs on a segmenter's scores.

Each pixel's label distribution Q is refined by mean-field inference under two Potts pairwise terms
between every pair of pixels: an appearance (bilateral) kernel ``w1 exp(-|p_i - p_j|² / 2θα² -
|I_i - I_j|² / 2θβ²)`` and a smoothness kernel ``w2 exp(-|p_i - p_j|² / 2θγ²)``, with the network's
probabilities as the unary term (``-log P``). One step: ``Q_i ∝ exp(-U_i + Σ_{j≠i} k(i, j) Q_j)``.

Three ways to run it:

- :func:`dense_crf`: the kernels filtered on our permutohedral lattice (:mod:`papers.lattice`, the
  authors' lattice run on torch's threads over all classes at once), linear in the pixels; the way
  to run it on real images. ``python benchmarks/crf.py`` times it against the 3 s target and
  against pydensecrf2 in the same run.
- :func:`pydensecrf_mean_field`: the same inference by the authors' C++ code through pydensecrf2
  (single-threaded), where it is installed: the reference the lattice is checked against (the same
  vertices and sums; tests/test_crf.py holds the two to 1e-5 after one step and 2e-3 after ten, the
  float rounding amplified by DeepLab's strong weights).
- :func:`exact_mean_field`: the same updates with the kernel summed over every pair of pixels,
  O(N²), for images of at most 4,096 pixels: the reference both lattices are tested against.

The lattice is approximate (its Gaussian is a blur of a few vertices, and each pixel also reaches
itself through them): on 12×12 random images with weak weights (w = 0.1–0.15, three iterations,
moving each distribution by at least 0.12) its probabilities lie within 0.074 of the exact ones
(0.016 on average) over 20 seeds, as pydensecrf2's do; tests/test_crf.py holds it to 0.1 (0.02 on
average) and to the exact labels on a two-region scene.

Hand-written: the mean-field loop and the exact mean field (a few lines each); the lattice's reasons
are in :mod:`papers.lattice`.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from papers.errors import PapersError

if TYPE_CHECKING:
    import numpy as np

    from papers.spec import DenseCRF


def _checked(image: np.ndarray, probabilities: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    import numpy as np

    image = np.array(image, order="C", copy=True)  # pydensecrf takes a writable buffer
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise PapersError(f"the CRF takes an H×W×3 uint8 image, not {image.dtype} {tuple(image.shape)}")
    if probabilities.ndim != 3 or probabilities.shape[1:] != image.shape[:2]:
        raise PapersError(
            f"the CRF's probabilities are C×H×W for the {image.shape[0]}×{image.shape[1]} image, "
            f"not {tuple(probabilities.shape)}"
        )
    unary = -np.log(np.clip(probabilities.astype(np.float32), 1e-8, 1.0))
    return image, unary.reshape(probabilities.shape[0], -1)


def dense_crf(image: np.ndarray, probabilities: np.ndarray, settings: DenseCRF) -> np.ndarray:
    """Refined C×H×W probabilities of ``image`` (H×W×3, uint8) by mean field on the lattice."""
    import torch

    from papers.lattice import Lattice

    image, unary = _checked(image, probabilities)
    classes, (height, width) = probabilities.shape[0], image.shape[:2]
    rows, columns = torch.meshgrid(
        torch.arange(height, dtype=torch.float32), torch.arange(width, dtype=torch.float32), indexing="ij"
    )
    position = torch.stack([columns.flatten(), rows.flatten()], dim=1)  # x, y, as pydensecrf's
    colour = torch.from_numpy(image).reshape(-1, 3).to(torch.float32)
    smoothness = Lattice(position / settings.smoothness_xy)
    appearance = Lattice(
        torch.cat([position / settings.appearance_xy, colour / settings.appearance_rgb], dim=1)
    )
    padded = -(-classes // 8) * 8  # the lattice runs on whole blocks of 8 classes
    log_p = torch.full((height * width, padded), -math.inf)  # the padding: probability 0 throughout
    log_p[:, :classes] = -torch.from_numpy(unary).T  # N × C: a pixel's classes side by side
    q = torch.softmax(log_p, dim=1)
    energy = torch.empty_like(log_p)
    for _ in range(settings.iterations):
        energy.copy_(log_p)
        smoothness.filter(q, out=energy, scale=settings.smoothness_weight)
        appearance.filter(q, out=energy, scale=settings.appearance_weight)
        energy.sub_(energy.amax(dim=1, keepdim=True)).exp_()  # the softmax in place, into q
        torch.div(energy, energy.sum(dim=1, keepdim=True), out=q)
    return q[:, :classes].T.reshape(classes, height, width).numpy()


def pydensecrf_mean_field(image: np.ndarray, probabilities: np.ndarray, settings: DenseCRF) -> np.ndarray:
    """The same inference by pydensecrf2 (the authors' single-threaded lattice): the reference."""
    import numpy as np

    try:
        import pydensecrf.densecrf as densecrf
    except ImportError:
        raise PapersError(
            "the reference CRF needs pydensecrf2: pip install pydensecrf2 (it builds from source)"
        ) from None
    image, unary = _checked(image, probabilities)
    classes, (height, width) = probabilities.shape[0], image.shape[:2]
    crf = densecrf.DenseCRF2D(width, height, classes)
    crf.setUnaryEnergy(np.ascontiguousarray(unary))
    plain = densecrf.NO_NORMALIZATION  # the kernels as written, as the paper's energy has them
    crf.addPairwiseGaussian(
        sxy=settings.smoothness_xy, compat=settings.smoothness_weight, normalization=plain
    )
    crf.addPairwiseBilateral(
        sxy=settings.appearance_xy,
        srgb=settings.appearance_rgb,
        rgbim=image,
        compat=settings.appearance_weight,
        normalization=plain,
    )
    return np.asarray(crf.inference(settings.iterations), dtype=np.float32).reshape(classes, height, width)


def exact_mean_field(image: np.ndarray, probabilities: np.ndarray, settings: DenseCRF) -> np.ndarray:
    """The same mean field with the kernels summed over every pair of pixels (O(N²), N ≤ 4,096)."""
    import numpy as np

    image, unary = _checked(image, probabilities)
    height, width = image.shape[:2]
    if height * width > 4096:
        raise PapersError(f"the exact mean field is O(N²): {height}×{width} pixels is too many (≤ 4,096)")
    ys, xs = np.mgrid[0:height, 0:width]
    position = np.stack([xs.ravel(), ys.ravel()], axis=1).astype(np.float64)
    colour = image.reshape(-1, 3).astype(np.float64)
    distance = ((position[:, None] - position[None]) ** 2).sum(-1)
    difference = ((colour[:, None] - colour[None]) ** 2).sum(-1)
    kernel = settings.smoothness_weight * np.exp(-distance / (2 * settings.smoothness_xy**2))
    kernel += settings.appearance_weight * np.exp(
        -distance / (2 * settings.appearance_xy**2) - difference / (2 * settings.appearance_rgb**2)
    )
    np.fill_diagonal(kernel, 0.0)  # a pixel does not vote for itself
    unary = unary.astype(np.float64)
    q = _softmax(-unary)
    for _ in range(settings.iterations):
        q = _softmax(-unary + q @ kernel.T)
    return q.reshape(probabilities.shape).astype(np.float32)


def _softmax(energy: np.ndarray) -> np.ndarray:
    import numpy as np

    shifted = np.exp(energy - energy.max(axis=0, keepdims=True))
    return shifted / shifted.sum(axis=0, keepdims=True)
