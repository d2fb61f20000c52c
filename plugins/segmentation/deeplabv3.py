"""DeepLabv3: Rethinking Atrous Convolution for Semantic Image Segmentation (arXiv 1706.05587).

Everything about the paper is in its spec; its proxy check trains a narrow DeepLabv3 on
``builtin:shapes`` (:func:`papers.train_segmentation.shapes_check`).
"""

from importlib.resources import files

from papers.hookspecs import hookimpl


@hookimpl
def papers_specs() -> list:
    return [files("papers_specs") / "segmentation" / "deeplabv3.yaml"]


PROXY_VARIANT = "deeplabv3_resnet101_os16"
PROXY_OPTIONS = {"layers": [1, 1, 1, 1], "width": 8, "aspp_channels": 32}
"""DeepLabv3 at output stride 16 with multi-grid (1, 2, 4) on a ResNet of one bottleneck per stage at
an eighth of the width (bottleneck widths 8 to 64, outputs 32 to 256) and 32-filter ASPP branches."""
PROXY_RECIPE = {"epochs": 20, "lr": 0.05, "crop": 128}


@hookimpl
def papers_checks() -> list:
    from papers.train_segmentation import shapes_check

    return [
        shapes_check(
            "deeplabv3-shapes",
            PROXY_VARIANT,
            options=PROXY_OPTIONS,
            overrides=PROXY_RECIPE,
            min_miou=70.0,
            compares_with={"metric": "miou"},
            max_seconds=900.0,
            proxy="DeepLabv3 (output stride 16, multi-grid, ASPP with image pooling) on a ResNet of one "
            "bottleneck per stage at an eighth of the width with 32-filter ASPP branches, trained "
            "from scratch on builtin:shapes (180 synthetic scenes of four shape classes, "
            f"{PROXY_RECIPE['epochs']} epochs of {PROXY_RECIPE['crop']}-pixel crops), scored on its "
            "60 val scenes, not an ImageNet-initialised ResNet-101 on VOC 2012; passes at 70% mIoU",
        )
    ]
