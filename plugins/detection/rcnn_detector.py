"""R-CNN's machinery around its network: region warping with context (Section 2.1, Appendix A), the
per-class linear SVMs on fc7 with hard negative mining (Section 2.3, Appendix B), the class-specific
box regression from pool5 (Appendix C), and the detector that runs them on an image's proposals.

The network is the spec's graph (AlexNet or VGG-16 up to fc7, pool5 as a second output). Proposals
come from :mod:`papers.proposals` (selective search, or a file). Library code does the rest:
``torchvision.ops.roi_align`` samples each warped region, scikit-learn's ``LinearSVC`` (liblinear's
L2-regularised hinge loss, the solver of the authors' code) and ``Ridge`` fit the heads,
torchvision's ``BoxCoder`` codes the regression targets and ``batched_nms`` suppresses per class.
Written here: the context dilation and mean fill, the hard-negative loop, and the glue. Imported
only when used.

Fitted heads are saved as safetensors beside the network's weights (:func:`heads_file`: for
``model.safetensors``, ``model.rcnn.safetensors``), with the class names, the build options and the
feature scales as metadata; a heads file whose network was the seed-0 initialised one says so.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torchvision.models.detection._utils import BoxCoder
from torchvision.ops import batched_nms, box_iou, clip_boxes_to_image, roi_align

from papers.errors import PapersError

CONTEXT_PADDING = 16
"""Appendix A: pixels of image context around the box at the warped size (p = 16)."""
NEGATIVE_IOU = 0.3
"""Section 2.3 and Appendix B: a proposal below this IoU with every instance of a class is a negative."""
RIDGE_LAMBDA = 1000.0
"""Appendix C: the ridge regression's λ."""
REGRESSION_IOU = 0.6
"""Appendix C and the authors' rcnn_train_bbox_regressor.m: a proposal learns to move to the
ground-truth box it overlaps by more than this."""
NMS_IOU = 0.3
"""The authors' test-time NMS (imdb_eval_voc.m); the paper's Section 2.2 calls the threshold learned."""
FEATURE_NORM = 20.0
SVM_C = 1.0e-3
POSITIVE_WEIGHT = 2.0
BIAS_FEATURE = 10.0
HARD_SCORE = -1.0
EASY_SCORE = -1.2
RETRAIN_LIMIT = 2000
"""The authors' rcnn_train.m and rcnn_scale_features.m: features scaled to an average norm of 20, C =
0.001, positives' hinge loss weighted 2, a bias feature of 10; negatives scoring above -1 are hard,
below -1.2 are evicted, and the SVM is retrained whenever 2,000 hard negatives were added."""
IMAGE_MEAN = (0.485, 0.456, 0.406)
IMAGE_STD = (0.229, 0.224, 0.225)
"""Inputs normalised as the registry's ImageNet networks expect; the mean is also the fill."""
HEADS_SUFFIX = ".rcnn.safetensors"


def context_boxes(boxes: Tensor, size: int, padding: int = CONTEXT_PADDING) -> Tensor:
    """Each box [K, 4] dilated about its centre by size / (size − 2 · padding), so that warped to
    size × size it has ``padding`` pixels of context on every side (Appendix A)."""
    if not 0 <= 2 * padding < size:
        raise ValueError(f"the context padding is from 0 to under half the warp size {size}, got {padding}")
    scale = size / (size - 2 * padding)
    centre = (boxes[:, :2] + boxes[:, 2:]) / 2
    half = (boxes[:, 2:] - boxes[:, :2]) / 2 * scale
    return torch.cat([centre - half, centre + half], dim=1)


def warp_regions(
    image: Tensor,
    boxes: Tensor,
    *,
    size: int,
    padding: int = CONTEXT_PADDING,
    mean: Sequence[float] = IMAGE_MEAN,
    std: Sequence[float] = IMAGE_STD,
) -> Tensor:
    """The network's inputs for an image [3, H, W] (values in [0, 1]) and its boxes [K, 4]: [K, 3,
    size, size], each box with its context warped anisotropically to size × size and normalised;
    where the context leaves the image, the mean (0 once normalised). Sampled bilinearly at each
    output pixel's centre, without anti-aliasing, as the authors' crops are."""
    image = image.float()
    boxes = boxes.to(image.dtype).reshape(-1, 4)
    mean_t = image.new_tensor(mean).view(-1, 1, 1)
    std_t = image.new_tensor(std).view(-1, 1, 1)
    normalised = (image - mean_t) / std_t
    outer = context_boxes(boxes, size, padding)
    crops = roi_align(normalised[None], [outer], size, spatial_scale=1.0, sampling_ratio=1, aligned=True)
    height, width = image.shape[-2:]
    limits = image.new_tensor([width, height])
    extent = (outer[:, 2:] - outer[:, :2]) / size  # input pixels per output pixel, x and y
    inside_low = (limits.new_zeros(2) - outer[:, :2]) / extent  # image's edges in output pixels
    inside_high = (limits - outer[:, :2]) / extent
    centres = torch.arange(size, dtype=image.dtype) + 0.5
    keep_x = (centres[None] > inside_low[:, :1]) & (centres[None] < inside_high[:, :1])
    keep_y = (centres[None] > inside_low[:, 1:]) & (centres[None] < inside_high[:, 1:])
    mask = keep_y[:, :, None] & keep_x[:, None, :]
    return crops * mask[:, None].to(crops.dtype)


@dataclass
class LinearHeads:
    """The fitted SVMs (one per object class, on scaled fc7) and box regressors (on scaled pool5).
    ``classes[0]`` is the background; SVM and regressor ``k`` are those of ``classes[k + 1]``."""

    classes: list[str]
    svm_weight: np.ndarray  # [K, D7]
    svm_bias: np.ndarray  # [K]
    fc7_scale: float
    regression_weight: np.ndarray  # [K, 4, D5]
    regression_bias: np.ndarray  # [K, 4]
    pool5_scale: float

    def scores(self, fc7: np.ndarray) -> np.ndarray:
        """Every region's SVM score per object class, [N, K]."""
        return (fc7 * self.fc7_scale) @ self.svm_weight.T + self.svm_bias

    def deltas(self, pool5: np.ndarray) -> np.ndarray:
        """Every region's predicted (tx, ty, tw, th) per object class, [N, K, 4]."""
        scaled = pool5 * self.pool5_scale
        return np.einsum("nd,kcd->nkc", scaled, self.regression_weight) + self.regression_bias


def feature_scale(features: np.ndarray) -> float:
    """The factor that gives ``features`` an average norm of 20 (the authors' rcnn_scale_features.m)."""
    norm = float(np.linalg.norm(features, axis=1).mean()) if len(features) else 0.0
    return FEATURE_NORM / norm if norm > 0 else 1.0


def fit_svm(
    positives: np.ndarray,
    negatives: Sequence[np.ndarray],
    *,
    hard_negatives: bool = True,
    C: float = SVM_C,
    positive_weight: float = POSITIVE_WEIGHT,
    bias_feature: float = BIAS_FEATURE,
) -> tuple[np.ndarray, float]:
    """One class's linear SVM (weights, bias) on scaled features: ``positives`` [P, D] and each
    training image's ``negatives`` [n_i, D]. With ``hard_negatives`` (Section 2.3), the first image's
    negatives start the cache, each later image adds those scoring above -1, easy ones (below -1.2)
    are evicted, and the SVM is retrained after 2,000 additions and after the last image; without,
    one SVM on all negatives."""
    from sklearn.svm import LinearSVC

    dimension = positives.shape[1] if positives.ndim == 2 else 0
    if len(positives) == 0:
        raise ValueError("an SVM needs at least one positive example")

    def train(negative: np.ndarray) -> tuple[np.ndarray, float]:
        if len(negative) == 0:
            raise ValueError("an SVM needs at least one negative example")
        features = np.concatenate([positives, negative]).astype(np.float64)
        labels = np.concatenate([np.ones(len(positives)), -np.ones(len(negative))])
        svm = LinearSVC(
            C=C,
            loss="hinge",
            dual=True,
            class_weight={1: positive_weight, -1: 1.0},
            intercept_scaling=bias_feature,
            tol=0.1,  # liblinear's own defaults (ε = 0.1, 1000 iterations), as the authors ran it
            max_iter=1000,
        )
        svm.fit(features, labels)
        return svm.coef_[0].astype(np.float32), float(svm.intercept_[0])

    pool = [np.asarray(n, dtype=np.float32).reshape(-1, dimension) for n in negatives]
    if not hard_negatives:
        return train(np.concatenate(pool) if pool else np.zeros((0, dimension), np.float32))
    non_empty = [n for n in pool if len(n)]
    if not non_empty:
        raise ValueError("an SVM needs at least one negative example")
    cache = non_empty[0]
    weight, bias = train(cache)
    added = 0
    for index, image_negatives in enumerate(non_empty[1:], start=2):
        hard = image_negatives[image_negatives @ weight + bias > HARD_SCORE]
        cache = np.concatenate([cache, hard])
        added += len(hard)
        if added > RETRAIN_LIMIT or (index == len(non_empty) and added):
            weight, bias = train(cache)
            added = 0
            cache = cache[cache @ weight + bias >= EASY_SCORE]
    return weight, bias


def fit_regressor(
    features: np.ndarray, targets: np.ndarray, *, alpha: float = RIDGE_LAMBDA
) -> tuple[np.ndarray, np.ndarray]:
    """One class's box regressor (weights [4, D], bias [4]): ridge regression of the targets [N, 4]
    (tx, ty, tw, th of Appendix C) on scaled pool5 features [N, D], λ = ``alpha``."""
    from sklearn.linear_model import Ridge

    if len(features) == 0:
        return np.zeros((4, features.shape[1]), np.float32), np.zeros(4, np.float32)
    ridge = Ridge(alpha=alpha).fit(features.astype(np.float64), targets.astype(np.float64))
    return ridge.coef_.astype(np.float32), np.asarray(ridge.intercept_, dtype=np.float32)


class RCNN(nn.Module):
    """R-CNN as a detector: ``model(images, proposals=None)`` → torchvision's ``[{boxes, scores,
    labels}]`` for images [3, H, W] in [0, 1] of any sizes. Each image's proposals (boxes [P, 4] in its
    pixels; default: selective search's fast mode, up to 2,000) are warped with context, their
    fc7 features scored by each class's SVM (scores are SVM margins), their pool5 features
    regressed to boxes, and per class suppressed by NMS at ``box_nms_thresh``; regions scoring at
    most ``box_score_thresh`` are dropped. :meth:`fit` fits the heads first."""

    def __init__(
        self,
        network: nn.Module,
        *,
        warp_size: int,
        context_padding: int = CONTEXT_PADDING,
        box_score_thresh: float = 0.0,
        box_nms_thresh: float = NMS_IOU,
        box_detections_per_img: int = 100,
        proposal_mode: str = "fast",
        max_proposals: int = 2000,
        regions_per_batch: int = 64,
        heads: LinearHeads | None = None,
    ):
        super().__init__()
        context_boxes(torch.zeros(0, 4), warp_size, context_padding)  # refuses a padding that does not fit
        self.network = network
        self.warp_size = int(warp_size)
        self.context_padding = int(context_padding)
        self.box_score_thresh = float(box_score_thresh)
        self.box_nms_thresh = float(box_nms_thresh)
        self.box_detections_per_img = int(box_detections_per_img)
        self.proposal_mode = proposal_mode
        self.max_proposals = int(max_proposals)
        self.regions_per_batch = int(regions_per_batch)
        self.heads = heads
        self.box_coder = BoxCoder((1.0, 1.0, 1.0, 1.0))  # Appendix C's targets, unweighted

    @property
    def label_names(self) -> list[str] | None:
        """The name of each label the fitted heads give, the background's first."""
        return list(self.heads.classes) if self.heads is not None else None

    def propose(self, image: Tensor) -> Tensor:
        """Selective search's proposals on ``image``, clipped to it."""
        from papers.proposals import image_proposals

        boxes = image_proposals(image, mode=self.proposal_mode, max_proposals=self.max_proposals)
        return torch.from_numpy(boxes)

    @torch.no_grad()
    def features(self, image: Tensor, boxes: Tensor) -> tuple[np.ndarray, np.ndarray]:
        """pool5 [K, D5] and fc7 [K, D7] of the warped boxes [K, 4] of ``image``, in eval mode."""
        training = self.network.training
        self.network.eval()
        pool5, fc7 = [], []
        try:
            for start in range(0, len(boxes), self.regions_per_batch):
                regions = warp_regions(
                    image, boxes[start : start + self.regions_per_batch],
                    size=self.warp_size, padding=self.context_padding,
                )  # fmt: skip
                first, second = self.network(regions)
                pool5.append(first.flatten(1).float().cpu().numpy())
                fc7.append(second.flatten(1).float().cpu().numpy())
        finally:
            self.network.train(training)
        if not pool5:
            return np.zeros((0, 0), np.float32), np.zeros((0, 0), np.float32)
        return np.concatenate(pool5), np.concatenate(fc7)

    def fit(
        self,
        images: Sequence[Tensor],
        targets: Sequence[Mapping[str, Tensor]],
        proposals: Sequence[Tensor] | None = None,
        *,
        classes: Sequence[str] | None = None,
        hard_negatives: bool = True,
        ridge_lambda: float = RIDGE_LAMBDA,
        svm_c: float = SVM_C,
    ) -> RCNN:
        """Fit the SVMs and regressors on the network's features of ``images`` with ``targets``
        (``boxes`` [G, 4], ``labels`` [G] from 1; 0 is the background) and their ``proposals``
        (default: selective search's). ``classes``: the label names, the background's first."""
        if len(images) != len(targets) or (proposals is not None and len(proposals) != len(images)):
            raise ValueError("fit takes one target and one set of proposals per image")
        if not images:
            raise ValueError("fit needs at least one image")
        highest = max((int(t["labels"].max()) for t in targets if len(t["labels"])), default=0)
        names = list(classes) if classes is not None else ["__background__"]
        names += [f"class_{i}" for i in range(len(names), highest + 1)]
        if highest < 1 or highest >= len(names):
            raise ValueError("fit needs labelled boxes, labels from 1 (0 is the background)")
        count = len(names) - 1
        per_image = []
        for index, (image, target) in enumerate(zip(images, targets, strict=True)):
            truth = target["boxes"].float().reshape(-1, 4)
            labels = target["labels"].long().reshape(-1)
            boxes = proposals[index] if proposals is not None else self.propose(image)
            boxes = torch.as_tensor(boxes, dtype=torch.float32).reshape(-1, 4)
            everything = torch.cat([truth, boxes])
            pool5, fc7 = self.features(image, everything)
            per_image.append((truth, labels, everything, pool5, fc7))
        fc7_all = np.concatenate([item[4] for item in per_image])
        pool5_all = np.concatenate([item[3] for item in per_image])
        fc7_scale, pool5_scale = feature_scale(fc7_all), feature_scale(pool5_all)
        svm_weight = np.zeros((count, fc7_all.shape[1]), np.float32)
        svm_bias = np.full(count, -1.0, np.float32)  # a class never seen scores below 0 everywhere
        regression_weight = np.zeros((count, 4, pool5_all.shape[1]), np.float32)
        regression_bias = np.zeros((count, 4), np.float32)
        for k in range(count):
            label = k + 1
            positives, negatives, examples, wanted = [], [], [], []
            for truth, labels, everything, pool5, fc7 in per_image:
                own = labels == label
                positives.append(fc7[: len(truth)][own.numpy()])
                overlap = torch.zeros(len(everything))
                if own.any():
                    overlap = box_iou(everything, truth[own]).amax(dim=1)
                negative = (overlap < NEGATIVE_IOU).numpy()
                negative[: len(truth)] = False  # ground-truth boxes of other classes are not sampled
                negatives.append(fc7[negative] * fc7_scale)
                if len(truth):
                    iou = box_iou(everything, truth)
                    best, match = iou.max(dim=1)
                    chosen = (best > REGRESSION_IOU) & (labels[match] == label)
                    if chosen.any():
                        examples.append(pool5[chosen.numpy()] * pool5_scale)
                        wanted.append(
                            self.box_coder.encode_single(truth[match[chosen]], everything[chosen]).numpy()
                        )
            positive = np.concatenate(positives) * fc7_scale
            if len(positive) and any(len(n) for n in negatives):
                svm_weight[k], svm_bias[k] = fit_svm(
                    positive, negatives, hard_negatives=hard_negatives, C=svm_c
                )
            if examples:
                regression_weight[k], regression_bias[k] = fit_regressor(
                    np.concatenate(examples), np.concatenate(wanted), alpha=ridge_lambda
                )
        self.heads = LinearHeads(
            names, svm_weight, svm_bias, fc7_scale, regression_weight, regression_bias, pool5_scale
        )
        return self

    @torch.no_grad()
    def detect(self, image: Tensor, proposals: Tensor | None = None) -> dict[str, Tensor]:
        """One image's detections ``{boxes [D, 4], scores [D], labels [D]}``, best first."""
        if self.heads is None:
            raise ValueError("R-CNN detects with fitted SVMs and regressors: call fit or load them first")
        boxes = self.propose(image) if proposals is None else torch.as_tensor(proposals, dtype=torch.float32)
        boxes = boxes.reshape(-1, 4)
        size = (int(image.shape[-2]), int(image.shape[-1]))
        if len(boxes) == 0:
            return _empty()
        pool5, fc7 = self.features(image, boxes)
        scores = torch.from_numpy(self.heads.scores(fc7))  # [N, K]
        deltas = torch.from_numpy(self.heads.deltas(pool5))  # [N, K, 4]
        count = scores.shape[1]
        moved = self.box_coder.decode_single(deltas.reshape(-1, 4), boxes.repeat_interleave(count, 0))
        moved = clip_boxes_to_image(moved, size)
        flat_scores = scores.reshape(-1)
        labels = torch.arange(1, count + 1).repeat(len(boxes))
        keep = flat_scores > self.box_score_thresh
        keep &= (moved[:, 2] > moved[:, 0]) & (moved[:, 3] > moved[:, 1])
        moved, flat_scores, labels = moved[keep], flat_scores[keep], labels[keep]
        kept = batched_nms(moved, flat_scores, labels, self.box_nms_thresh)[: self.box_detections_per_img]
        return {"boxes": moved[kept], "scores": flat_scores[kept].float(), "labels": labels[kept]}

    def forward(
        self, images: Sequence[Tensor], proposals: Sequence[Tensor] | None = None
    ) -> list[dict[str, Tensor]]:
        if proposals is not None and len(proposals) != len(images):
            raise ValueError(f"{len(images)} images but proposals for {len(proposals)}")
        return [
            self.detect(image, None if proposals is None else proposals[i]) for i, image in enumerate(images)
        ]

    def save_heads(
        self, path: str | Path, *, network: str | None = None, options: Mapping[str, Any] | None = None
    ) -> Path:
        """Write the fitted heads to ``path`` (safetensors); ``network``: the weights file they go with
        (None: the seed-0 initialised network), ``options``: the build options of the network."""
        from safetensors.torch import save_file

        if self.heads is None:
            raise ValueError("no fitted heads to save: call fit first")
        heads = self.heads
        tensors = {
            name: torch.from_numpy(np.ascontiguousarray(getattr(heads, name)))
            for name in ("svm_weight", "svm_bias", "regression_weight", "regression_bias")
        }
        metadata = {
            "classes": heads.classes,
            "fc7_scale": heads.fc7_scale,
            "pool5_scale": heads.pool5_scale,
            "network": network,
            "options": dict(options or {}),
            "warp_size": self.warp_size,
            "context_padding": self.context_padding,
        }
        path = Path(path)
        save_file(tensors, str(path), metadata={"rcnn": json.dumps(metadata)})
        return path


def _empty() -> dict[str, Tensor]:
    return {"boxes": torch.zeros(0, 4), "scores": torch.zeros(0), "labels": torch.zeros(0, dtype=torch.int64)}


def heads_file(weights: str | Path) -> Path:
    """Where the heads of a network's ``weights`` are: ``model.safetensors`` → ``model.rcnn.safetensors``."""
    weights = Path(weights)
    if weights.name.endswith(HEADS_SUFFIX):
        return weights
    return weights.with_name(weights.name.split(".")[0] + HEADS_SUFFIX)


def read_heads(path: str | Path) -> tuple[LinearHeads, dict[str, Any]]:
    """The heads saved in ``path`` and their metadata; a bad file is a :class:`PapersError` naming it."""
    from safetensors import safe_open

    file = str(path)
    if not Path(file).is_file():
        raise PapersError(
            "no R-CNN heads file (the SVMs and box regressors RCNN.save_heads writes beside the weights)",
            file=file,
        )
    try:
        with safe_open(file, "np") as opened:
            metadata = json.loads((opened.metadata() or {})["rcnn"])
            arrays = {name: opened.get_tensor(name) for name in opened.keys()}  # noqa: SIM118 (no __iter__)
    except KeyError:
        raise PapersError("not an R-CNN heads file: no `rcnn` metadata", file=file) from None
    except Exception as exc:  # safetensors raises its own errors for a damaged file
        raise PapersError(f"cannot read the R-CNN heads: {str(exc).splitlines()[0]}", file=file) from None
    try:
        heads = LinearHeads(
            list(metadata["classes"]), arrays["svm_weight"], arrays["svm_bias"], float(metadata["fc7_scale"]),
            arrays["regression_weight"], arrays["regression_bias"], float(metadata["pool5_scale"]),
        )  # fmt: skip
    except (KeyError, TypeError, ValueError) as exc:
        raise PapersError(f"an R-CNN heads file lacks {exc}", file=file, field="rcnn") from None
    count = len(heads.classes) - 1
    if heads.svm_weight.shape[0] != count or heads.regression_weight.shape[0] != count:
        raise PapersError(
            f"{len(heads.classes)} classes but SVMs for {heads.svm_weight.shape[0]}",
            file=file,
            field="classes",
        )
    return heads, metadata


DETECTOR_OPTIONS = (
    "box_score_thresh",
    "box_nms_thresh",
    "box_detections_per_img",
    "proposal_mode",
    "max_proposals",
    "regions_per_batch",
    "context_padding",
)
"""Build options of the detector; the others are the graph's parameters."""


def rcnn(variant: str = "rcnn_alexnet", *, device: Any = "cpu", **options: Any) -> RCNN:
    """An R-CNN variant of the registry as a detector, heads not yet fitted; ``options`` are the
    detector's keyword arguments or the graph's parameters (``warp_size``)."""
    import papers

    settings = {k: v for k, v in options.items() if k in DETECTOR_OPTIONS}
    graph = {k: v for k, v in options.items() if k not in DETECTOR_OPTIONS}
    network = papers.build_model(variant, device=device, **graph)
    warp_size = graph.get("warp_size", _graph_param(variant, "warp_size"))
    return RCNN(network, warp_size=int(warp_size), **settings)


def _graph_param(variant: str, name: str) -> Any:
    from papers.registry import get_registry

    entry, spec_variant = get_registry().variant(variant)
    if name in spec_variant.args:
        return spec_variant.args[name]
    return entry.spec.graphs[spec_variant.graph or ""].params[name]


def load_rcnn(variant: str, weights: str | None, **options: Any) -> RCNN:
    """R-CNN with fitted heads: ``weights`` is the network's weights with its heads file beside them
    (:func:`heads_file`), or the heads file itself, whose metadata names the network's weights (none:
    the seed-0 initialised network they were fitted on). ``options`` override the saved build options."""
    from papers.evaluate import fit_weights, load_weights

    if weights is None:
        raise PapersError(
            "R-CNN detects with fitted SVMs and box regressors: give --weights (the heads file "
            f"<name>{HEADS_SUFFIX}, or the network's weights with it beside them)",
            field="--weights",
        )
    heads_path = heads_file(weights)
    heads, metadata = read_heads(heads_path)
    network_file: str | None
    if Path(weights).name.endswith(HEADS_SUFFIX):
        named = metadata.get("network")
        network_file = str(heads_path.parent / named) if named else None
    else:
        network_file = str(weights)
    built = {**metadata.get("options", {}), **options}
    torch.manual_seed(0)
    model = rcnn(variant, **built)
    if network_file is not None:
        fit_weights(model.network, load_weights(network_file), file=network_file)
    if model.warp_size != int(metadata.get("warp_size", model.warp_size)):
        raise PapersError(
            f"the heads were fitted on {metadata['warp_size']}-pixel regions; "
            f"the network takes {model.warp_size}",
            file=str(heads_path),
            field="warp_size",
        )
    pool5, fc7 = model.features(torch.zeros(3, 8, 8), torch.tensor([[0.0, 0.0, 8.0, 8.0]]))
    wanted = (heads.regression_weight.shape[2], heads.svm_weight.shape[1])
    if (pool5.shape[1], fc7.shape[1]) != wanted:
        raise PapersError(
            f"the heads take {wanted[1]}-d fc7 and {wanted[0]}-d pool5 features; "
            f"the network gives {fc7.shape[1]} and {pool5.shape[1]}",
            file=str(heads_path),
            field="svm_weight",
        )
    model.heads = heads
    model.eval()
    return model
