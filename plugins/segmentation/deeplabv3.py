"""DeepLabv3: Rethinking Atrous Convolution for Semantic Image Segmentation (arXiv 1706.05587).

Everything about the paper is in its spec; its proxy check trains a narrow DeepLabv3 on a set of
``builtin:shapes``' generator (:func:`papers.train_segmentation.shapes_check`).
"""

from importlib.resources import files

from papers.hookspecs import hookimpl


@hookimpl
def papers_specs() -> list:
    return [files("papers_specs") / "segmentation" / "deeplabv3.yaml"]


PROXY_VARIANT = "deeplabv3_resnet101_os8"
PROXY_DATA = "builtin:shapes?images=5000"
"""builtin:shapes' generator at 5,000 images (3,000 training scenes). On the default set's 180 the
narrow DeepLabv3 is data-limited: 100 epochs end at 24.9% mIoU with the training loss still falling,
and neither DeepLabv3's random scaling (25.3%) nor a wider or deeper network moves it much
(``benchmarks/proxy_sweep.py``). Output stride 8 (the paper's build option), not 16: at 16 the
bilinearly upsampled scores cannot follow these small shapes' outlines (an oracle scoring each 16-pixel
cell by its labels' shares reaches only 75.5% on the val split, 89.4% at stride 8;
``benchmarks/segmentation_proxies.py``), and the output-stride-16 proxy on these 3,000 scenes ended at
65.0% after 20 epochs (its weights after 15, evaluated at stride 8 as Table 6 evaluates the paper's,
gave 59.3% against 64.9% at 16)."""
PROXY_OPTIONS = {"layers": [1, 1, 1, 1], "width": 8, "aspp_channels": 32}
"""DeepLabv3 at output stride 8 with multi-grid (1, 2, 4) on a ResNet of one bottleneck per stage at
an eighth of the width (bottleneck widths 8 to 64, outputs 32 to 256) and 32-filter ASPP branches."""
PROXY_RECIPE = {
    "epochs": 8,
    "lr": 0.05,
    "crop": 128,
    "batch_size": 4,
    "channels_last": True,
    "val_interval": 8,
}
"""The registry's segmenter recipe (SGD with momentum 0.9, the poly schedule, random crops and flips) at
batch 4 for 8 epochs. Val mIoU after each epoch on the 3,000 scenes: 26.5, 33.3, 41.1, 61.2, 70.2, 74.3,
77.3, 77.8% (bar 70; ``benchmarks/proxy_sweep.py dl3_os8_5k_e8_b4``, about 80 s an epoch on one intra-op
thread of a loaded two-core machine); ``python benchmarks/segmentation_proxies.py --only deeplabv3`` on
two idle threads: 77.1% in 281 s channels-last, the val split scored after the last epoch only (388 s
scoring after each; 75.6% in 558 s in NCHW). Twice the steps per epoch is
what it needed: at the registry's batch of 8 the same 8 epochs ended at 60.2% (``dl3_os8_5k_e8``), 20
epochs at 75.9% (``dl3_os8_5k_e20``: 26.3, 29.6, 33.6, 39.5, 55.1, 54.5, 66.4, 71.4, 70.7, 74.9, 74.3,
74.8, 76.2, 74.9, 76.5, 76.7, 75.8, 76.1, 76.1, 75.9%), and 8 epochs at lr 0.1 at 77.4%
(``dl3_os8_5k_e8_lr1``); at batch 4, 5 epochs ended at 54.4% (``dl3_os8_5k_e5_b4``); at batch 2, 29.8%
after 3 of 5 epochs (``dl3_os8_5k_e5_b2``, stopped)."""


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
            max_seconds=600.0,
            data=PROXY_DATA,
            proxy="DeepLabv3 (output stride 8, multi-grid, ASPP with image pooling) on a ResNet of one "
            "bottleneck per stage at an eighth of the width with 32-filter ASPP branches, trained "
            f"from scratch on {PROXY_DATA} ({sizes['train']:,} synthetic scenes of four shape classes, "
            f"{PROXY_RECIPE['epochs']} epochs of {PROXY_RECIPE['crop']}-pixel crops in batches of "
            f"{PROXY_RECIPE['batch_size']}), scored on its "
            f"{sizes['val']} val scenes, not an ImageNet-initialised ResNet-101 on VOC 2012; passes at "
            "70% mIoU",
        )
    ]
