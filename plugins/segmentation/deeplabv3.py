"""DeepLabv3: Rethinking Atrous Convolution for Semantic Image Segmentation (arXiv 1706.05587).

Everything about the paper is in its spec; its proxy check trains a narrow DeepLabv3 on a set of
``builtin:shapes``' generator (:func:`papers.train_segmentation.shapes_check`).
"""

from importlib.resources import files

from papers.hookspecs import hookimpl


@hookimpl
def papers_specs() -> list:
    return [files("papers_specs") / "segmentation" / "deeplabv3.yaml"]


PROXY_VARIANT = "deeplabv3_resnet101_os16"
PROXY_DATA = "builtin:shapes?images=5000"
"""builtin:shapes' generator at 5,000 images (3,000 training scenes). On the default set's 180 the
narrow DeepLabv3 is data-limited: 100 epochs end at 24.9% mIoU with the training loss still falling,
and neither DeepLabv3's random scaling (25.3%) nor a wider or deeper network moves it much
(``benchmarks/proxy_sweep.py``); on 1,800 scenes 15 epochs reach 60.7%."""
PROXY_OPTIONS = {"layers": [1, 1, 1, 1], "width": 8, "aspp_channels": 32}
"""DeepLabv3 at output stride 16 with multi-grid (1, 2, 4) on a ResNet of one bottleneck per stage at
an eighth of the width (bottleneck widths 8 to 64, outputs 32 to 256) and 32-filter ASPP branches."""
PROXY_RECIPE = {"epochs": 20, "lr": 0.05, "crop": 128}


@hookimpl
def papers_checks() -> list:
    from papers.shapes import split_sizes
    from papers.train_segmentation import shapes_check

    sizes = split_sizes(PROXY_DATA)
    return [
        shapes_check(
            "deeplabv3-shapes",
            PROXY_VARIANT,
            options=PROXY_OPTIONS,
            overrides=PROXY_RECIPE,
            min_miou=70.0,
            compares_with={"metric": "miou", "split": "val"},
            max_seconds=900.0,
            data=PROXY_DATA,
            proxy="DeepLabv3 (output stride 16, multi-grid, ASPP with image pooling) on a ResNet of one "
            "bottleneck per stage at an eighth of the width with 32-filter ASPP branches, trained "
            f"from scratch on {PROXY_DATA} ({sizes['train']:,} synthetic scenes of four shape classes, "
            f"{PROXY_RECIPE['epochs']} epochs of {PROXY_RECIPE['crop']}-pixel crops), scored on its "
            f"{sizes['val']} val scenes, not an ImageNet-initialised ResNet-101 on VOC 2012; passes at "
            "70% mIoU",
        )
    ]
