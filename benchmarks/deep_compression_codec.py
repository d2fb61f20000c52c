"""Deep Compression's file for VGG-16-sized weights, timed: ``python benchmarks/deep_compression_codec.py``.

Random weights in VGG-16's shapes (torchvision's ``vgg16``, 138 M parameters) are pruned by magnitude
at ``deep_compression-vgg16``'s per-layer kept fractions (the paper's Table 5) and their kept values
rounded to 2^bits values spaced evenly between the layer's extremes (8 bits for convolutions, 5 for
fully connected layers, as the variant's ``kmeans_quantize`` settings; the codec's time depends on
how many values and indices there are, not on where k-means puts the centroids). Then the registry's
container (``papers.compression``: relative indices and Huffman codes) encodes the state into a
safetensors file and decodes it back, and the decoded state is checked equal to the quantized one.
Prints the bytes, the ratio to the dense float32 weights, and the encode and decode times (median of
``--repeats``); it reports and never fails.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch


def _quantized_vgg16() -> dict[str, torch.Tensor]:
    import torchvision

    import papers

    spec = papers.get_spec("deep_compression")
    variant = next(v for v in spec.variants if v.id == "deep_compression-vgg16")
    settings = {m.name: m.settings for m in variant.methods}
    kept = settings["magnitude_prune"]["kept"]
    bits = settings["kmeans_quantize"]
    torch.manual_seed(0)
    state = torchvision.models.vgg16().state_dict()
    for name, tensor in state.items():
        layer = name.rsplit(".", 1)[0]
        if not name.endswith(".weight") or layer not in kept:
            continue
        flat = tensor.reshape(-1)
        count = max(1, round(kept[layer] * flat.numel()))
        threshold = flat.abs().kthvalue(flat.numel() - count + 1).values
        mask = flat.abs() >= threshold
        levels = 2 ** (bits["conv_bits"] if tensor.dim() == 4 else bits["fc_bits"])
        low, high = flat[mask].min(), flat[mask].max()
        step = (high - low) / (levels - 1)
        quantized = torch.where(mask, low + torch.round((flat - low) / step) * step, torch.zeros(()))
        state[name] = quantized.reshape(tensor.shape)
    return state


def main() -> None:
    from safetensors.torch import load_file

    from papers.compression import decode_state, write_container

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    state = _quantized_vgg16()
    dense = sum(t.numel() * t.element_size() for t in state.values())
    encode_times, decode_times = [], []
    with tempfile.TemporaryDirectory() as scratch:
        path = Path(scratch) / "model.safetensors"
        for _ in range(args.repeats):
            started = time.perf_counter()
            _, encoding = write_container(path, state, {})
            encode_times.append(time.perf_counter() - started)
            started = time.perf_counter()
            decoded = decode_state(load_file(str(path)), encoding)
            decode_times.append(time.perf_counter() - started)
        size = path.stat().st_size
    assert all(torch.equal(decoded[name], tensor) for name, tensor in state.items())
    kinds = sorted({e["kind"] for e in encoding.values()})
    print(
        f"Deep Compression container, VGG-16 ({dense:,} bytes dense): {size:,} bytes ({dense / size:.1f}×), "
        f"encodings {', '.join(kinds)}; encode {statistics.median(encode_times):.2f} s, "
        f"decode {statistics.median(decode_times):.2f} s (median of {args.repeats}, "
        f"{torch.get_num_threads()} threads); decoded == quantized"
    )


if __name__ == "__main__":
    main()
