"""``papers compress``: apply a method variant to its base model with weights, write it, report.

The base model (the method variant's ``base``, with ``--weights`` or initialised from a fixed seed)
goes through each method in order: a rewrite gives a new model from the rewritten graph, holding the
previous weights cut to the new shapes (each tensor's leading block: the first channels); an apply
step changes the weights, or, where the weights decide the widths, returns a narrower model with its
graph (``papers.methods.Narrowed``), whose changed widths and removed nodes (a residual block
removed whole) the container's metadata keeps (``narrowed``, ``removed``) so that
:func:`load_compressed` builds the same model. What comes out is written as
one safetensors container, read back from the disk, checked against what was written, and measured
beside the base: parameters and non-zeros, bits per weight, bytes of the files on disk, multiply-adds
(the graph's, on the meta device), latency here, and top-1 on ``--data``. What is computed rather
than measured (multiply-adds that skip zero weights, energy) is kept apart, under ``theoretical``.

The container. Dense tensors are stored as they are, under their names, so any safetensors reader
sees them. A tensor is stored encoded where that takes fewer bytes: ``bitmask`` (a packed bit per
element saying which are non-zero, then the non-zero values) and ``codebook`` (the distinct values,
then each element's index into them, packed at ``bits`` bits); the values of a bitmask may
themselves be a codebook. ``grid`` stores low-bit weights at their bit width: a float scale per row
(the leading dimension: a filter, an output feature) and each element's integer code packed at
``bits`` bits, ``odd`` codes (±1, ±3, ...: binary weights ±α take one bit) or ``signed`` ones
(two's complement: int8 weights take eight), the value being ``scale × code`` in the tensor's
dtype; it is taken only where that product reproduces every value exactly. ``relative`` is the
pruning papers' sparse format: the kept values, each
with the count of zeros before it packed at 5 bits (matrices) or 8 bits (convolutions), filler
zeros bridging longer gaps. ``huffman`` is Deep Compression's storage (Han, Mao and Dally 2016,
Section 4): the relative layout with each entry's index into a codebook of the values, the gaps and
the indices each Huffman-coded (dahuffman's code lengths; the canonical code of those lengths, which
alone are stored, in the encoding), a CRC-32 of every 4 KiB of each stream and of what it decodes
to, so a damaged stream is refused naming the bytes, never decoded into other weights. Packed bits
and indices are ``uint8`` tensors named ``<tensor>#mask``, ``<tensor>#indices`` ...; the
``encoding`` entry of the metadata (JSON, as safetensors metadata values are strings) says how to
decode every tensor. Encodings are lossless (up to the sign of a
zero), so a masked model is decoded to the very weights the method left; which encoding a tensor
gets is chosen by size alone, whatever method produced it. Bits are packed least significant
first (numpy's ``bitorder="little"``). Hand-written: no maintained library stores masks and
codebooks in safetensors.
"""

from __future__ import annotations

import copy
import importlib.util
import json
import math
import os
import shutil
import statistics
import tempfile
import time
import zlib
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from papers.errors import GraphError, PapersError, PluginError
from papers.methods import MethodContext, Narrowed, Step, check_narrowed, rewrite_once, variant_steps
from papers.plugins import describe

if TYPE_CHECKING:
    import numpy as np
    import torch

FORMAT = "papers.compressed"
FORMAT_VERSION = "1"
BASE_FILE = "base.safetensors"
MODEL_FILE = "model.safetensors"
REPORT_FILE = "report.json"
LATENCY_BATCHES = (8,)
"""Batch sizes timed besides batch 1 (the report's ``latency`` list)."""

_ENTRY_BYTES = 160
"""About what one more stored tensor costs in the file: its header entry and its encoding's JSON.
An encoding that saves less than this per tensor it adds is not taken."""
_MAX_CODEBOOK = 256
RELATIVE_INDEX_BITS = {2: 5, 4: 8}
"""Bits of a relative index by the weight's rank: 5 for fully connected layers, 8 for convolutions
(Han et al. 2015, Section 4; Deep Compression, Section 2)."""
_CHUNK = 1 << 20  # elements packed or unpacked at a time (a multiple of 8: whole bytes per chunk)
_FLOATS = frozenset({"float16", "bfloat16", "float32", "float64"})

# Horowitz, "Computing's energy problem", ISSCC 2014 (45 nm), the figures Han et al. (2015) use.
_PJ_PER_MAC = 3.7 + 0.9  # a 32-bit float multiply and add
_PJ_PER_DRAM_WORD = 640.0  # a 32-bit word read from DRAM
ENERGY_MODEL = (
    "Horowitz (ISSCC 2014), 45 nm, as Han et al. (2015) use it: 4.6 pJ per 32-bit float multiply-add "
    "(zero weights skipped), 640 pJ per 32-bit word of stored weights read from DRAM once per image"
)


class ContainerError(PapersError):
    """A file that is not a compressed model written by ``papers compress``, or a damaged one."""


# -- the container ------------------------------------------------------------------------------


def encode_state(state: Mapping[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """The tensors to store and each state tensor's encoding (JSON-ready), every tensor encoded in as
    few bytes as the encodings allow."""
    tensors: dict[str, torch.Tensor] = {}
    encoding: dict[str, Any] = {}
    for name, tensor in state.items():
        stored, described = _encode_tensor(name, tensor.detach().cpu().contiguous())
        tensors.update(stored)
        encoding[name] = described
    return tensors, encoding


def _encode_tensor(name: str, tensor: torch.Tensor) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    dtype = str(tensor.dtype).removeprefix("torch.")
    dense = ({name: tensor}, {"kind": "dense", "tensor": name})
    if dtype not in _FLOATS or tensor.numel() == 0:
        return dense
    flat = tensor.reshape(-1)
    count, item = flat.numel(), flat.element_size()
    header = {"shape": list(tensor.shape), "dtype": dtype}
    best_size, best = count * item, dense
    whole = _codebook(name, flat)
    if whole is not None and whole[0] < best_size:
        best_size, best = whole[0], (whole[1], {**header, **whole[2]})
    grid = _grid(name, tensor)
    if grid is not None and grid[0] < best_size:
        best_size, best = grid[0], (grid[1], {**header, **grid[2]})
    mask = flat != 0
    nonzero = int(mask.sum())
    if nonzero == count:  # no zeros: a bitmask only adds its bits (a codebook of all was tried above)
        return best
    values = flat[mask]
    dense_values = ({f"{name}#values": values}, {"kind": "dense", "tensor": f"{name}#values"})
    values_size, values_encoded = nonzero * item + _ENTRY_BYTES, dense_values
    book = _codebook(f"{name}#values", values) if nonzero else None
    if book is not None and book[0] < values_size:
        values_size, values_encoded = book[0], (book[1], book[2])
    size = math.ceil(count / 8) + _ENTRY_BYTES + values_size
    if size < best_size:
        stored = {f"{name}#mask": _bits_tensor(_pack_mask(mask)), **values_encoded[0]}
        described = {**header, "kind": "bitmask", "mask": f"{name}#mask", "values": values_encoded[1]}
        best_size, best = size, (stored, described)
    bits = RELATIVE_INDEX_BITS.get(tensor.dim())
    if bits is not None and nonzero:
        gaps, values = _relative(mask, values, bits)
        packed = _pack(gaps, bits)
        size = packed.size + _ENTRY_BYTES + len(values) * item + _ENTRY_BYTES
        if size < best_size:
            stored = {f"{name}#gaps": _bits_tensor(packed), f"{name}#entries": values}
            described = {
                **header,
                "kind": "relative",
                "bits": bits,
                "entries": len(values),
                "gaps": f"{name}#gaps",
                "values": {"kind": "dense", "tensor": f"{name}#entries"},
            }
            best_size, best = size, (stored, described)
        huffman = _huffman(name, mask, flat[mask], bits, header)
        if huffman is not None and huffman[0] < best_size:
            best_size, best = huffman[0], huffman[1]()
    return best


def _relative(mask: torch.Tensor, values: torch.Tensor, bits: int) -> tuple[np.ndarray, torch.Tensor]:
    """The paper's relative indices (Han et al. 2015, Section 4; Deep Compression, Section 2): for each
    kept value the number of zeros before it since the previous entry, at most ``2**bits - 1``; a
    longer gap is bridged by filler entries, each a zero value ``2**bits - 1`` places on."""
    import numpy as np
    import torch

    positions = torch.nonzero(mask).flatten().numpy()
    gaps = np.diff(positions, prepend=-1) - 1
    span = 1 << bits
    fillers = gaps // span
    ends = np.cumsum(fillers + 1) - 1
    out_gaps = np.full(int(ends[-1]) + 1, span - 1, dtype=np.int64)
    out_gaps[ends] = gaps - fillers * span
    out_values = torch.zeros(len(out_gaps), dtype=values.dtype)
    out_values[torch.from_numpy(ends)] = values
    return out_gaps.astype(np.uint8), out_values


def _huffman(
    name: str, mask: torch.Tensor, values: torch.Tensor, bits: int, header: dict[str, Any]
) -> tuple[int, Any] | None:
    """The ``huffman`` encoding's size in bytes and a function that makes it (coding is slow in pure
    Python, so only the one chosen is coded); ``None`` where the values are more than 256 distinct (a
    codebook cannot hold them) or dahuffman is not installed."""
    import numpy as np
    import torch

    if importlib.util.find_spec("dahuffman") is None:
        return None
    if torch.unique(values[:4096]).numel() > _MAX_CODEBOOK:
        return None
    gaps, entries = _relative(mask, values, bits)
    book, inverse = torch.unique(entries, return_inverse=True)
    if book.numel() > _MAX_CODEBOOK + 1:  # 256 values and the fillers' zero: 8-bit weights of a conv
        return None
    streams = {"gaps": gaps.astype(np.int64), "indices": inverse.numpy()}
    lengths = {part: _huffman_lengths(symbols) for part, symbols in streams.items()}
    size = book.numel() * book.element_size() + 3 * _ENTRY_BYTES
    for part, symbols in streams.items():
        counts = np.bincount(symbols)
        payload = int(counts @ np.asarray(lengths[part][1 : len(counts) + 1]))
        size += payload // 8 + 1 + len(json.dumps(lengths[part])) + 12 * (payload // 8 // _BLOCK + 1)

    def build() -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        stored = {f"{name}#codebook": book.contiguous()}
        described = {**header, "kind": "huffman", "bits": bits, "entries": len(entries)}
        described["codebook"] = f"{name}#codebook"
        for part, symbols in streams.items():
            stream = _huffman_codec(lengths[part]).encode(symbols.tolist())
            stored[f"{name}#{part}"] = torch.frombuffer(bytearray(stream), dtype=torch.uint8)
            described[part] = f"{name}#{part}"
            described[f"{part}_code"] = {
                "lengths": lengths[part],
                "bytes": len(stream),
                "crc32": _block_crcs(stream),
                "decoded_crc32": zlib.crc32(symbols.astype(np.uint16).tobytes()),
            }
        return stored, described

    return size, build


_EOF = -1
"""The end-of-stream symbol of every Huffman code (the others are gap lengths and codebook indices)."""
_BLOCK = 4096
"""Bytes of a Huffman stream under one CRC-32: a damaged stream is refused naming the damaged block."""


def _huffman_lengths(symbols: np.ndarray) -> list[int]:
    """The code length of each symbol of a Huffman code for ``symbols`` (dahuffman's), ``_EOF`` first,
    then symbols 0, 1, ... (0: a symbol that does not occur). Only the lengths are stored: the codes
    are the canonical ones they give, as DEFLATE stores its codes."""
    import numpy as np
    from dahuffman import HuffmanCodec

    counts = np.bincount(symbols)
    frequencies = {int(s): int(c) for s, c in enumerate(counts) if c}
    table = HuffmanCodec.from_frequencies(frequencies, concat=list, eof=_EOF).get_code_table()
    lengths = [0] * (len(counts) + 1)
    for symbol, (bits, _) in table.items():
        lengths[symbol + 1] = int(bits)
    return lengths


def _huffman_codec(lengths: list[int]) -> Any:
    """dahuffman's codec of the canonical code of ``lengths`` (as :func:`_huffman_lengths` gives them):
    symbols in order of length, then of symbol, each code one more than the last, shifted left when
    the length grows. Hand-written: dahuffman builds codes from frequencies, not from lengths."""
    from dahuffman.huffmancodec import PrefixCodec

    if not lengths or not lengths[0] or sum(2.0**-n for n in lengths if n) > 1.0:  # lengths[0]: _EOF's
        raise ValueError("Huffman code lengths that form no prefix code with an end symbol")
    table, code, previous = {}, 0, 0
    for length, symbol in sorted((n, s - 1) for s, n in enumerate(lengths) if n):
        code <<= length - previous
        table[symbol] = (length, code)
        code, previous = code + 1, length
    return PrefixCodec(table, concat=list, check=False, eof=_EOF)


def _block_crcs(stream: bytes) -> list[int]:
    return [zlib.crc32(stream[start : start + _BLOCK]) for start in range(0, max(len(stream), 1), _BLOCK)]


def _decode_huffman(
    described: Mapping[str, Any], tensors: Mapping[str, torch.Tensor], count: int, dtype: str
) -> Any:
    """A ``huffman`` tensor's values; a stream that is cut, damaged or decodes to other symbols than
    were coded raises ``ValueError`` naming its tensor and, where a checksum fails, the bytes."""
    import numpy as np
    import torch

    if importlib.util.find_spec("dahuffman") is None:
        raise ValueError("decoding Huffman-coded weights needs dahuffman (pip install dahuffman)")
    bits, entries = int(described["bits"]), int(described["entries"])
    if not 1 <= bits <= 8 or not 0 < entries <= count + count // (1 << bits) + 1:
        raise ValueError(f"{entries} relative indices of {bits} bits for {count} values")
    book = tensors[described["codebook"]]
    if str(book.dtype).removeprefix("torch.") != dtype or book.dim() != 1:
        raise ValueError(f"a codebook of {book.dtype}, a 1-D one of {dtype} expected")
    alphabets = {"gaps": 1 << bits, "indices": book.numel()}
    decoded = {}
    for part, alphabet in alphabets.items():
        name, code = described[part], described[f"{part}_code"]
        stream = _uint8(tensors[name]).tobytes()
        if len(stream) != int(code["bytes"]):
            raise ValueError(f"{name}: {len(stream)} bytes, {code['bytes']} were written (cut short?)")
        crcs, blocks = [int(c) for c in code["crc32"]], _block_crcs(stream)
        if len(crcs) != len(blocks):
            raise ValueError(f"{name}: {len(crcs)} checksums for {len(blocks)} blocks of {_BLOCK} bytes")
        for block, (crc, expected) in enumerate(zip(blocks, crcs, strict=True)):
            if crc != expected:
                end = min(len(stream), (block + 1) * _BLOCK) - 1
                raise ValueError(f"{name}: bytes {block * _BLOCK}-{end} are damaged (their CRC-32 differs)")
        lengths = [int(n) for n in code["lengths"]]
        if len(lengths) > alphabet + 1 or not all(0 <= n <= 64 for n in lengths):
            raise ValueError(
                f"{name}: code lengths for {len(lengths) - 1} symbols of {alphabet}, or out of range"
            )
        symbols = np.asarray(_huffman_codec(lengths).decode(stream), dtype=np.int64)
        if symbols.size != entries:
            raise ValueError(f"{name}: decodes to {symbols.size} symbols, {entries} were coded")
        if zlib.crc32(symbols.astype(np.uint16).tobytes()) != int(code["decoded_crc32"]):
            raise ValueError(
                f"{name}: decodes to other symbols than were coded (its code lengths are damaged)"
            )
        decoded[part] = symbols
    positions = torch.from_numpy(np.cumsum(decoded["gaps"] + 1) - 1)
    if int(positions[-1]) >= count:
        raise ValueError(f"relative indices reach position {int(positions[-1])} of a tensor of {count}")
    values = torch.zeros(count, dtype=getattr(torch, dtype))
    values[positions] = book[torch.from_numpy(decoded["indices"])]
    return values


def _codebook(
    prefix: str, values: torch.Tensor
) -> tuple[int, dict[str, torch.Tensor], dict[str, Any]] | None:
    """``values`` as a codebook and packed indices, with its size in bytes (header entries included);
    ``None`` where they hold more than 256 distinct values."""
    import torch

    if torch.unique(values[:4096]).numel() > _MAX_CODEBOOK:  # most weights: decided on a sample
        return None
    book, inverse = torch.unique(values, return_inverse=True)
    if book.numel() > _MAX_CODEBOOK:
        return None
    bits = max(1, math.ceil(math.log2(book.numel())))
    packed = _pack(inverse.numpy().astype("uint8"), bits)
    size = book.numel() * book.element_size() + packed.size + 2 * _ENTRY_BYTES
    stored = {f"{prefix}#codebook": book.contiguous(), f"{prefix}#indices": _bits_tensor(packed)}
    described = {
        "kind": "codebook",
        "count": values.numel(),
        "bits": bits,
        "codebook": f"{prefix}#codebook",
        "indices": f"{prefix}#indices",
    }
    return size, stored, described


GRID_MAX_BITS = 16
"""The widest codes of the ``grid`` encoding (above that a float is about as small)."""
_GRID_SAMPLE = 2048
"""Values of each row whose gaps give its step."""
_GRID_DIVISORS = (1, 2, 3, 4)
"""A row's grid step is tried as its smallest gap between distinct values over each of these (a row
of odd levels, ±1 and ±3 steps, has gaps of 2 steps; a row missing levels, of more)."""


def _grid(name: str, tensor: torch.Tensor) -> tuple[int, dict[str, torch.Tensor], dict[str, Any]] | None:
    """``tensor`` as a scale per row (its leading dimension; one row for a vector) times integer codes
    packed at ``bits`` bits, with its size in bytes; ``None`` unless every value is reproduced exactly
    by the decoder's own product (``scales[row] * code``, in the tensor's dtype).

    Codes are ``odd`` (±1, ±3, ...: a binary row ±α is one bit, q = (code + 2**bits - 1) / 2) where
    every code is odd, else ``signed`` (two's-complement range, q = code + 2**(bits - 1)). Each row's
    step is found from its values: the smallest gap between its distinct values, or that over 2, 3
    or 4, the first of which all its values are integer multiples of; the scale is then the row's
    largest magnitude over its largest code, or a float a few units in the last place from it,
    whichever reproduces the row."""
    import torch

    rows = tensor.reshape(tensor.shape[0] if tensor.dim() > 1 else 1, -1)
    if rows.shape[1] < 2 or not bool(torch.isfinite(rows).all()):
        return None
    if torch.unique(rows[0, :4096]).numel() > 1 << GRID_MAX_BITS:  # most weights: decided on a sample
        return None
    if _grid_rows(rows[:2]) is None:  # most other tensors: decided on two rows
        return None
    found = _grid_rows(rows)
    if found is None:
        return None
    integers, scales = found
    if bool((integers % 2 == 1).all()):
        levels, bits = "odd", max(1, math.ceil(math.log2(int(integers.abs().max()) + 1)))
        unsigned = (integers + (1 << bits) - 1) // 2
    else:
        low, high = int(integers.min()), int(integers.max())
        levels, bits = "signed", 1
        while low < -(1 << (bits - 1)) or high > (1 << (bits - 1)) - 1:
            bits += 1
        unsigned = integers + (1 << (bits - 1))
    if bits > GRID_MAX_BITS:
        return None
    packed = _pack(unsigned.reshape(-1).numpy().astype("uint16" if bits > 8 else "uint8"), bits)
    size = scales.numel() * scales.element_size() + packed.size + 2 * _ENTRY_BYTES
    stored = {f"{name}#scales": scales.contiguous(), f"{name}#codes": _bits_tensor(packed)}
    described = {
        "kind": "grid",
        "rows": len(rows),
        "bits": bits,
        "levels": levels,
        "scales": f"{name}#scales",
        "codes": f"{name}#codes",
    }
    return size, stored, described


def _grid_rows(rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor] | None:
    """Each row's integer codes and scale (``scales[:, None] * codes`` equal to ``rows`` in their
    dtype), or ``None`` where some row has none (:func:`_grid`)."""
    import torch

    wide = rows.double()
    # Every gap between a row's grid values is a multiple of its step, so a sample's smallest serves.
    gaps = wide[:, :_GRID_SAMPLE].sort(dim=1).values.diff(dim=1)
    gaps = torch.where(gaps > 0, gaps, math.inf).min(dim=1).values
    largest = wide.abs().max(dim=1).values
    step = torch.where(torch.isfinite(gaps), gaps, largest)  # one distinct value: itself
    step = torch.where(step > 0, step, 1.0)  # a row of zeros: any step
    codes = torch.zeros_like(wide)
    pending = torch.arange(len(rows))
    tolerance = 4 * torch.finfo(rows.dtype).eps  # a value's rounding, relative to the largest code
    for divisor in _GRID_DIVISORS:
        values, unit = wide[pending], step[pending] / divisor
        # The gap is a rounded difference, off by up to an ulp of the values: refined over the row's
        # largest code, the step is as exact as the largest value is.
        top = (values / unit[:, None]).round().abs().max(dim=1).values.clamp(min=1)
        ratio = values / torch.where(largest[pending] > 0, largest[pending] / top, unit)[:, None]
        rounded = ratio.round()
        fits = ((ratio - rounded).abs() <= tolerance * (1 + top[:, None])).all(dim=1)
        codes[pending[fits]] = rounded[fits]
        pending = pending[~fits]
        if not len(pending):
            break
    if len(pending) or float(codes.abs().max()) >= 1 << GRID_MAX_BITS:
        return None
    top = codes.abs().max(dim=1).values
    scales = torch.where(top > 0, largest / top.clamp(min=1), 0.0).to(rows.dtype)
    codes_cast = codes.to(rows.dtype)
    wrong = torch.nonzero(~(scales[:, None] * codes_cast == rows).all(dim=1)).flatten()
    for ulps in (1, -1, 2, -2, 3, -3):  # largest / top rounded to the dtype may miss the scale by a few
        if not len(wrong):
            break
        nudged = scales[wrong]
        for _ in range(abs(ulps)):
            nudged = torch.nextafter(nudged, torch.full_like(nudged, math.inf if ulps > 0 else -math.inf))
        fits = (nudged[:, None] * codes_cast[wrong] == rows[wrong]).all(dim=1)
        scales[wrong[fits]] = nudged[fits]
        wrong = wrong[~fits]
    return None if len(wrong) else (codes.long(), scales)


def _decode_grid(
    described: Mapping[str, Any], tensors: Mapping[str, torch.Tensor], count: int, dtype: str
) -> Any:
    """A ``grid`` tensor's values, ``scales[row] * code``; packed codes or scales whose length is not
    the header's raise ``ValueError`` naming their tensor."""
    import torch

    bits, rows, levels = int(described["bits"]), int(described["rows"]), described["levels"]
    if not 1 <= bits <= GRID_MAX_BITS or levels not in ("odd", "signed") or rows < 1 or count % rows:
        raise ValueError(f"a grid of {rows} rows of {bits}-bit {levels} codes for {count} values")
    scales, name = tensors[described["scales"]], described["codes"]
    if scales.dim() != 1 or scales.numel() != rows or str(scales.dtype).removeprefix("torch.") != dtype:
        raise ValueError(
            f"{described['scales']}: {tuple(scales.shape)} {scales.dtype}, {rows} of {dtype} expected"
        )
    packed = _uint8(tensors[name])
    if packed.size != math.ceil(count * bits / 8):
        raise ValueError(
            f"{name}: {packed.size} bytes of codes, the header's {count} values of {bits} bits take "
            f"{math.ceil(count * bits / 8)}"
        )
    unsigned = torch.from_numpy(_unpack(packed, count, bits))
    codes = 2 * unsigned - ((1 << bits) - 1) if levels == "odd" else unsigned - (1 << (bits - 1))
    return (scales[:, None] * codes.view(rows, -1).to(scales.dtype)).reshape(-1)


def _bits_tensor(packed: np.ndarray) -> torch.Tensor:
    import torch

    return torch.from_numpy(packed.copy())


def _pack_mask(mask: torch.Tensor) -> np.ndarray:
    import numpy as np

    return np.packbits(mask.numpy(), bitorder="little")


def _pack(values: np.ndarray, bits: int) -> np.ndarray:
    """Unsigned integers below ``2**bits`` packed at ``bits`` bits each, least significant first."""
    import numpy as np

    if bits == 8:
        return values.astype(np.uint8)
    shifts = np.arange(bits, dtype=np.uint8)
    parts = []
    for start in range(0, len(values), _CHUNK):
        planes = (values[start : start + _CHUNK, None] >> shifts) & 1
        parts.append(np.packbits(planes.reshape(-1), bitorder="little"))
    return np.concatenate(parts) if parts else np.zeros(0, np.uint8)


def _unpack(packed: np.ndarray, count: int, bits: int) -> np.ndarray:
    import numpy as np

    if packed.size != math.ceil(count * bits / 8):
        raise ValueError(f"{packed.size} bytes of indices for {count} values of {bits} bits")
    if bits == 8:
        return packed.astype(np.int64)
    if bits == 1:
        return np.unpackbits(packed, count=count, bitorder="little").astype(np.int64)
    weights = 1 << np.arange(bits, dtype=np.int64)
    out = np.empty(count, np.int64)
    per_chunk = _CHUNK * bits // 8
    for index, start in enumerate(range(0, count, _CHUNK)):
        size = min(_CHUNK, count - start)
        chunk = packed[index * per_chunk : index * per_chunk + math.ceil(size * bits / 8)]
        planes = np.unpackbits(chunk, count=size * bits, bitorder="little").reshape(size, bits)
        out[start : start + size] = planes.astype(np.int64) @ weights
    return out


def decode_state(tensors: Mapping[str, torch.Tensor], encoding: Mapping[str, Any]) -> dict[str, torch.Tensor]:
    """The state dict a container's tensors and encoding describe (raises ``ValueError``,
    ``KeyError`` or ``TypeError`` on a damaged one)."""
    state = {}
    for name, described in encoding.items():
        if described.get("kind") == "dense":
            state[name] = tensors[described["tensor"]]
            continue
        shape = [int(dim) for dim in described["shape"]]
        if described["dtype"] not in _FLOATS:
            raise ValueError(f"{name}: unknown dtype {described['dtype']!r}")
        count = math.prod(shape)
        state[name] = _decode_values(described, tensors, count, described["dtype"]).reshape(shape)
    return state


def _decode_values(
    described: Mapping[str, Any], tensors: Mapping[str, torch.Tensor], count: int, dtype: str
) -> Any:
    import numpy as np
    import torch

    kind = described.get("kind")
    if kind == "dense":
        values = tensors[described["tensor"]].reshape(-1)
    elif kind == "codebook":
        bits = int(described["bits"])
        if not 1 <= bits <= 8 or int(described["count"]) != count:
            raise ValueError(f"a codebook of {described['count']} values at {bits} bits, {count} expected")
        book = tensors[described["codebook"]]
        indices = torch.from_numpy(_unpack(_uint8(tensors[described["indices"]]), count, bits))
        if count and int(indices.max()) >= book.numel():
            raise ValueError("an index past the end of its codebook")
        values = book[indices]
    elif kind == "relative":
        bits, entries = int(described["bits"]), int(described["entries"])
        if not 1 <= bits <= 8 or not 0 <= entries <= count + count // (1 << bits) + 1:
            raise ValueError(f"{entries} relative indices of {bits} bits for {count} values")
        gaps = _unpack(_uint8(tensors[described["gaps"]]), entries, bits)
        positions = torch.from_numpy(np.cumsum(gaps + 1) - 1)
        if entries and int(positions[-1]) >= count:
            raise ValueError(f"relative indices reach position {int(positions[-1])} of a tensor of {count}")
        values = torch.zeros(count, dtype=getattr(torch, dtype))
        values[positions] = _decode_values(described["values"], tensors, entries, dtype)
    elif kind == "huffman":
        values = _decode_huffman(described, tensors, count, dtype)
    elif kind == "grid":
        values = _decode_grid(described, tensors, count, dtype)
    elif kind == "bitmask":
        packed = _uint8(tensors[described["mask"]])
        if packed.size != math.ceil(count / 8):
            raise ValueError(f"{packed.size} bytes of mask for {count} values")
        mask = torch.from_numpy(np.unpackbits(packed, count=count, bitorder="little").astype(bool))
        nonzero = int(mask.sum())
        values = torch.zeros(count, dtype=getattr(torch, dtype))
        values[mask] = _decode_values(described["values"], tensors, nonzero, dtype)
    else:
        raise ValueError(f"unknown encoding {kind!r}")
    if values.numel() != count or str(values.dtype).removeprefix("torch.") != dtype:
        raise ValueError(f"{values.numel()} values of {values.dtype}, {count} of {dtype} expected")
    return values


def _uint8(tensor: torch.Tensor) -> np.ndarray:
    import torch

    if tensor.dtype != torch.uint8 or tensor.dim() != 1:
        raise ValueError("packed bits are a 1-D uint8 tensor")
    return tensor.numpy()


def stored_bytes(described: Mapping[str, Any], tensors: Mapping[str, torch.Tensor]) -> int:
    """The bytes of the stored tensors that encode one state tensor."""
    names = [
        value
        for key, value in described.items()
        if key in ("tensor", "mask", "codebook", "indices", "gaps", "scales", "codes")
    ]
    inner = described.get("values")
    extra = stored_bytes(inner, tensors) if isinstance(inner, Mapping) else 0
    return extra + sum(tensors[name].numel() * tensors[name].element_size() for name in names)


def write_container(
    path: Path, state: Mapping[str, torch.Tensor], metadata: Mapping[str, str]
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Write ``state`` encoded into one safetensors file; returns the stored tensors and the encoding."""
    from safetensors.torch import save

    tensors, encoding = encode_state(state)
    header = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        **metadata,
        "encoding": json.dumps(encoding, separators=(",", ":")),
    }
    path.write_bytes(save(tensors, metadata=header))  # as `papers build --out` writes (0644, not 0600)
    return tensors, encoding


def read_container(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """The decoded state dict and the metadata of a container written by ``papers compress``."""
    from safetensors import safe_open

    name = str(path)
    if not Path(path).is_file():
        raise ContainerError("no such file", file=name)
    try:
        with safe_open(name, framework="pt") as handle:
            metadata = handle.metadata() or {}
            tensors = {key: handle.get_tensor(key) for key in handle.keys()}  # noqa: SIM118
    except Exception as exc:  # safetensors raises its own error types on a damaged file
        raise ContainerError(f"cannot read: {describe(exc)}", file=name) from None
    if metadata.get("format") != FORMAT:
        raise ContainerError("not a compressed model written by papers compress", file=name)
    try:
        return decode_state(tensors, json.loads(metadata["encoding"])), metadata
    except (KeyError, ValueError, TypeError, AttributeError, RuntimeError, IndexError) as exc:
        raise ContainerError(f"damaged: {describe(exc)}", file=name) from None


def load_compressed(path: str | Path, *, device: Any = "cpu") -> torch.nn.Module:
    """The model in a container ``papers compress`` wrote: its method variant built with the options
    it was compressed with, holding the decoded weights."""
    from papers.api import build_model
    from papers.evaluate import fit_weights

    state, metadata = read_container(path)
    try:
        variant, options = metadata["variant"], json.loads(metadata.get("options", "{}"))
        narrowed = json.loads(metadata.get("narrowed", "{}"))
        removed = json.loads(metadata.get("removed", "{}"))
    except (KeyError, ValueError) as exc:
        raise ContainerError(f"damaged metadata: {describe(exc)}", file=str(path)) from None
    if narrowed or removed:  # an apply step chose the structure: the variant's graph as it changed it
        model = _build_narrowed(variant, options, narrowed, device, str(path), removed)
    else:
        model = build_model(variant, device=device, **options)
    fit_weights(model, state, file=str(path))
    return model


def _build_narrowed(
    variant: str,
    options: Mapping[str, Any],
    narrowed: Mapping[str, Any],
    device: Any,
    file: str,
    removed: Mapping[str, Any] | None = None,
) -> torch.nn.Module:
    """Method variant ``variant``'s graph with the node arguments an apply step changed (``narrowed``:
    ``{node: {argument: value}}``, the container's metadata) and the nodes it removed (``removed``:
    ``{node: the node read in its place, or None}``, :meth:`FlatGraph.bypass`), built."""
    from papers.api import expand_variant
    from papers.build import build
    from papers.registry import get_registry

    flat = expand_variant(variant, **options)
    names = {node.name for node in flat.nodes}
    if not isinstance(narrowed, dict) or not all(
        name in names and isinstance(args, dict) for name, args in narrowed.items()
    ):
        raise ContainerError("damaged metadata: narrowed widths that name no node of its graph", file=file)
    removed = {} if removed is None else removed
    if not isinstance(removed, dict) or not all(
        name in names and (target is None or target in names or target in flat.inputs)
        for name, target in removed.items()
    ):
        raise ContainerError("damaged metadata: removed nodes that name no node of its graph", file=file)
    nodes = tuple(
        replace(node, args={**node.args, **narrowed[node.name]}) if node.name in narrowed else node
        for node in flat.nodes
    )
    try:
        flat = replace(flat, nodes=nodes).bypass(removed)
    except GraphError as error:
        raise ContainerError(f"damaged metadata: {error.message}", file=file) from None
    return build(flat, get_registry().catalogue, device=device)


def _changes(static: Any, flat: Any) -> tuple[dict[str, dict[str, Any]], dict[str, str | None]]:
    """What ``flat`` changes from ``static``: the node arguments, as ``{node: {argument: value}}``, and
    the nodes it removes, as ``{node: the node read in its place, or None}`` (what
    :meth:`FlatGraph.bypass` takes). Raises :class:`PluginError` where ``flat`` changes anything else
    (adds a node, changes an op, reads another node than the removed one's replacement)."""
    old = {node.name: node for node in static.nodes}
    kept = [node.name for node in flat.nodes]
    left = set(kept)
    if [name for name in old if name in left] != kept:
        raise PluginError(
            "an apply step's narrowed graph adds or reorders nodes; it may change widths and remove "
            "nodes only"
        )
    removed: dict[str, str | None] = {name: None for name in old if name not in left}
    pairs = [(old[n.name].inputs, n.inputs) for n in flat.nodes]
    for before, after in (
        (static.outputs, flat.outputs),
        (static.features, flat.features),
        (static.aliases, flat.aliases),
    ):
        pairs.append((tuple(before.values()), tuple(after.get(k, "") for k in before)))
    for before, after in pairs:
        for was, now in zip(before, after, strict=False):
            if was != now and was in removed:
                removed[was] = now
    args = {
        node.name: {key: value for key, value in node.args.items() if old[node.name].args.get(key) != value}
        for node in flat.nodes
        if node.args != old[node.name].args
    }
    widened = replace(
        static, nodes=tuple(replace(n, args={**n.args, **args.get(n.name, {})}) for n in static.nodes)
    )
    try:
        rebuilt = widened.bypass(removed)
    except GraphError as error:
        raise PluginError(f"an apply step's narrowed graph: {error.message}") from None

    def shape(graph: Any) -> tuple[Any, ...]:
        nodes = tuple((n.name, n.op, dict(n.args), n.inputs, n.module) for n in graph.nodes)
        return nodes, dict(graph.outputs), dict(graph.features), dict(graph.aliases)

    if shape(rebuilt) != shape(flat):
        raise PluginError(
            "an apply step's narrowed graph changes more than widths and removed nodes (each removed "
            "node's readers must read one node in its place)"
        )
    return args, removed


# -- compressing a method variant ---------------------------------------------------------------


@dataclass(frozen=True)
class _Job:
    """What ``compress`` works on, every input resolved and checked before anything is written."""

    variant_id: str
    file: str
    base: str
    steps: list[Step]
    folder: Path
    device: Any
    options: dict[str, Any]
    weights: str | None
    state: dict[str, Any] | None
    data: str | None
    normalize: dict[str, list[float]] | None
    scores: Any
    """How the base's criterion reads its outputs as class scores (``papers.recipe.Criterion``)."""
    metric: str | None
    flat_before: Any
    flat_after: Any
    narrowed: dict[str, Any] | None = None
    """The node arguments an apply step changed from the variant's graph (:class:`Narrowed`)."""
    removed: dict[str, str | None] | None = None
    """The nodes an apply step removed from the variant's graph, each with the node read in its place."""


@dataclass
class _Written:
    """The two files in the scratch folder, the encoding, and the model decoded from the container."""

    base_path: Path
    model_path: Path
    tensors: dict[str, Any]
    encoding: dict[str, Any]
    methods: list[dict[str, Any]]
    model_after: Any


def compress(
    variant_id: str,
    *,
    out: str | Path,
    weights: str | Path | None = None,
    data: str | None = None,
    options: Mapping[str, Any] | None = None,
    device: str = "cpu",
    force: bool = False,
    latency_runs: int = 20,
) -> dict[str, Any]:
    """Apply method variant ``variant_id`` to its base (with ``weights``, else initialised from a fixed
    seed), write ``out/model.safetensors`` (the container), ``out/base.safetensors`` and
    ``out/report.json``, and return the report.

    ``data`` (``builtin:mnist5k``, an ImageFolder root) measures top-1 before and after, for
    classification variants. Bad input is refused before anything is written; the files appear only
    once everything is measured.
    """
    from papers.files import write_atomic

    job = _prepare(variant_id, out, weights, data, dict(options or {}), device, force)
    model_before, model, flat = _apply_methods(job)
    if flat is not job.flat_after:  # an apply step chose the widths (papers.methods.Narrowed)
        narrowed, removed = _changes(job.flat_after, flat)
        job = replace(job, flat_after=flat, narrowed=narrowed, removed=removed)
    with tempfile.TemporaryDirectory(prefix="papers-compress-") as scratch:
        written = _write(job, model_before, model, Path(scratch))
        measured = _measure(job, model_before, written, latency_runs)
        job.folder.mkdir(parents=True, exist_ok=True)
        for path in (written.base_path, written.model_path):
            shutil.move(str(path), str(job.folder / path.name))
    report = _report(job, written, measured)
    write_atomic(job.folder / REPORT_FILE, (json.dumps(report, indent=2) + "\n").encode())
    return report


def _prepare(
    variant_id: str,
    out: str | Path,
    weights: str | Path | None,
    data: str | None,
    options: dict[str, Any],
    device: str,
    force: bool,
) -> _Job:
    """Resolve and check every input: the variant and its methods, the folder, the device, the data,
    the weights (and the build options and normalisation of the run that trained them)."""
    from papers.api import expand_variant
    from papers.evaluate import CHECKPOINT_SUFFIXES, IMAGENET, load_weights
    from papers.registry import get_registry

    registry = get_registry()
    entry, variant = registry.variant(variant_id)
    if variant.base is None:
        raise PapersError(
            f"{variant_id!r} is not a method variant (it has a graph); compress takes one with a base "
            "and methods",
            field="VARIANT",
        )
    steps = variant_steps(variant_id)
    base_entry, base_variant = registry.variant(variant.base)
    folder = _check_out(out, force)
    run_on = _device(device)
    classification = "classification" in base_entry.spec.topics
    if data is not None:
        from papers.data import check_source

        check_source(data)
        if not classification:
            raise PapersError("top-1 on --data is measured for classification variants only", field="--data")
    normalize = state = None
    if weights is not None:
        state = load_weights(weights)
        record = _run_record(Path(weights))
        if record is not None:
            options = {**record.options, **options}
            normalize = record.normalize
    assert base_variant.graph is not None
    if data is not None and "num_classes" in base_entry.spec.graphs[base_variant.graph].params:
        options.setdefault("num_classes", _classes(data))
    try:
        json.dumps(options, allow_nan=False)
    except (TypeError, ValueError):
        raise PapersError("build options must be plain data (numbers, strings, lists)", field="-o") from None
    flat_before = expand_variant(variant.base, **options)
    channels = next(iter(flat_before.inputs.values()))[0]
    if normalize is None and weights is not None and Path(weights).suffix in CHECKPOINT_SUFFIXES:
        normalize = IMAGENET if channels == len(IMAGENET["mean"]) else None
    return _Job(
        variant_id=variant_id,
        file=entry.file,
        base=variant.base,
        steps=steps,
        folder=folder,
        device=run_on,
        options=options,
        weights=None if weights is None else str(weights),
        state=state,
        data=data,
        normalize=normalize,
        scores=_base_criterion(base_entry.spec, variant.base).scores,
        metric="top1_accuracy" if classification else None,
        flat_before=flat_before,
        flat_after=expand_variant(variant_id, **options),
    )


def _apply_methods(job: _Job) -> tuple[Any, Any, Any]:
    """The base model with its weights, the model the methods make of a copy of it, and its graph."""
    import torch

    from papers.api import build_model
    from papers.evaluate import fit_weights
    from papers.registry import get_registry

    catalogue = get_registry().catalogue
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model_before = build_model(job.base, device=job.device, **job.options).eval()
        if job.state is not None:
            fit_weights(model_before, job.state, file=str(job.weights))
        model, flat = copy.deepcopy(model_before), job.flat_before
        narrowed = False
        for step in job.steps:
            try:
                model, flat, by_apply = _run_step(step, model, flat, job.data, str(job.device), catalogue)
            except PapersError as error:
                raise error.located(file=job.file) from None
            narrowed = narrowed or by_apply
    if narrowed:
        return model_before, model.eval(), flat
    if flat != job.flat_after:  # the steps' graph is the method variant's, as `papers build` shows it
        raise PluginError(f"{job.variant_id}: a rewrite gives another graph on a second run (is it pure?)")
    return model_before, model.eval(), job.flat_after


def _write(job: _Job, model_before: Any, model: Any, scratch: Path) -> _Written:
    """Write the base's weights and the container into ``scratch``; read the container back from the
    disk into the method variant's model, checking it decodes to what was written."""
    import torch
    from safetensors.torch import save

    from papers.api import build_model
    from papers.evaluate import fit_weights

    base_path, model_path = scratch / BASE_FILE, scratch / MODEL_FILE
    base_path.write_bytes(save(_cpu_state(model_before)))  # as `papers build --out` writes weights
    methods = [{"name": s.method.name, "settings": s.settings.model_dump(mode="json")} for s in job.steps]
    state = _cpu_state(model)
    metadata = {
        "variant": job.variant_id,
        "base": job.base,
        "methods": json.dumps(methods),
        "options": json.dumps(job.options, sort_keys=True),
    }
    if job.narrowed:
        metadata["narrowed"] = json.dumps(job.narrowed, sort_keys=True)
    if job.removed:
        metadata["removed"] = json.dumps(job.removed, sort_keys=True)
    tensors, encoding = write_container(model_path, state, metadata)
    decoded, _ = read_container(model_path)
    for name, tensor in state.items():
        if name not in decoded or not _same(decoded[name], tensor):
            raise PapersError(f"{job.variant_id}: tensor {name!r} does not decode to what was written")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        if job.narrowed or job.removed:
            model_after = _build_narrowed(
                job.variant_id, job.options, job.narrowed or {}, job.device, "", job.removed
            ).eval()
        else:
            model_after = build_model(job.variant_id, device=job.device, **job.options).eval()
    fit_weights(model_after, decoded, file=str(model_path))
    return _Written(base_path, model_path, tensors, encoding, methods, model_after)


def _measure(job: _Job, model_before: Any, written: _Written, latency_runs: int) -> dict[str, Any]:
    """Counts, multiply-adds, latency and top-1 of the base and of the model decoded from the file."""
    from papers.measure import measure_graph
    from papers.registry import get_registry

    catalogue = get_registry().catalogue
    model_after = written.model_after
    before = measure_graph(job.base, job.flat_before, catalogue)
    after = measure_graph(job.variant_id, job.flat_after, catalogue)
    pair = [(model_before, job.flat_before), (model_after, job.flat_after)]
    shape = next(iter(job.flat_before.inputs.values()))
    parameters = {name for name, _ in model_after.named_parameters()}
    top1 = (
        [_top1(model, job.data, shape, job.normalize, job.scores, job.device) for model, _ in pair]
        if job.data is not None
        else [None, None]
    )
    return {
        "counts": (_counts(model_before), _counts(model_after)),
        "weight_bytes": (
            sum(p.numel() * p.element_size() for p in model_before.parameters()),
            sum(stored_bytes(written.encoding[name], written.tensors) for name in parameters),
        ),
        "macs": (before.macs, after.macs),
        "macs_nonzero": (_nonzero_macs(model_before, before), _nonzero_macs(model_after, after)),
        "latency": {
            batch: _latency_ms(pair, batch, job.device, latency_runs) for batch in (1, *LATENCY_BATCHES)
        },
        "latency_runs": latency_runs,
        "top1": top1,
    }


def _report(job: _Job, written: _Written, measured: dict[str, Any]) -> dict[str, Any]:
    """The report: one flat object, with the timings at other batch sizes as a list and what is
    computed rather than measured under ``theoretical``."""
    import torch

    bytes_before = os.path.getsize(job.folder / BASE_FILE)
    bytes_after = os.path.getsize(job.folder / MODEL_FILE)
    (params_before, nonzero_before), (params_after, nonzero_after) = measured["counts"]
    weight_bytes_before, weight_bytes_after = measured["weight_bytes"]
    macs_nonzero_before, macs_nonzero_after = measured["macs_nonzero"]
    energy_before = _energy_uj(macs_nonzero_before, weight_bytes_before)
    energy_after = _energy_uj(macs_nonzero_after, weight_bytes_after)
    latency = measured["latency"]
    top1_before, top1_after = measured["top1"]
    return {
        "variant": job.variant_id,
        "base": job.base,
        "methods": written.methods,
        "options": job.options,
        "weights": job.weights,
        "data": job.data,
        "file_before": BASE_FILE,
        "file_after": MODEL_FILE,
        "params_before": params_before,
        "params_after": params_after,
        "nonzero_before": nonzero_before,
        "nonzero_after": nonzero_after,
        "sparsity_after": round(1 - nonzero_after / params_after, 6) if params_after else 0.0,
        "bits_per_weight_before": _ratio(8 * weight_bytes_before, params_before),
        "bits_per_weight_after": _ratio(8 * weight_bytes_after, params_after),
        "bytes_before": bytes_before,
        "bytes_after": bytes_after,
        "compression_ratio": _ratio(bytes_before, bytes_after),
        "macs_before": measured["macs"][0],
        "macs_after": measured["macs"][1],
        "latency_ms_before": latency[1][0],
        "latency_ms_after": latency[1][1],
        "speedup": _ratio(latency[1][0], latency[1][1]),
        "latency_device": _device_name(job.device),
        "latency_threads": torch.get_num_threads(),
        "latency_runs": measured["latency_runs"],
        "latency": [
            {"batch": batch, "ms_before": before, "ms_after": after}
            for batch, (before, after) in latency.items()
            if batch != 1
        ],
        "metric": job.metric,
        "metric_before": top1_before,
        "metric_after": top1_after,
        "metric_change": None if top1_before is None else round(top1_after - top1_before, 4),
        "theoretical": {
            "macs_nonzero_before": macs_nonzero_before,
            "macs_nonzero_after": macs_nonzero_after,
            "speedup_nonzero": _ratio(macs_nonzero_before, macs_nonzero_after),
            "energy_uj_before": round(energy_before, 4),
            "energy_uj_after": round(energy_after, 4),
            "energy_ratio": _ratio(energy_before, energy_after),
            "note": "multiply-adds that skip zero weights, which needs a sparse kernel this machine's "
            f"dense kernels are not; energy: {ENERGY_MODEL}",
        },
    }


def _base_criterion(spec: Any, base: str) -> Any:
    """The criterion the base variant's own recipe names (LeNet-300-100's is cross-entropy, where the
    LeNet spec's default recipe reads LeNet-5's RBF penalties), else the spec's."""
    from papers.recipe import criterion_of, get_criterion

    recipe = spec.hyperparameters_of(base)
    if recipe is not None and recipe is not spec.hyperparameters:
        return get_criterion(recipe.criterion or "cross_entropy")
    return criterion_of(spec)


def _ratio(numerator: float, denominator: float) -> float | None:
    return round(numerator / denominator, 4) if denominator else None


def _run_step(
    step: Step, model: Any, flat: Any, data: str | None, device: str, catalogue: Any
) -> tuple[Any, Any, bool]:
    """One method on a model with weights: its rewrite (a new model holding the previous weights cut
    to the new shapes), then its apply step; whether the apply step narrowed the model itself."""
    from papers.build import build

    before = flat_before = None
    if step.method.rewrite is not None:
        rewritten = rewrite_once(flat, step, catalogue)
        narrowed = build(rewritten, catalogue, device=device).eval()
        _copy_leading(model, narrowed)
        before, flat_before, model, flat = model, flat, narrowed, rewritten
    if step.method.apply is not None:
        shapes = {name: tuple(t.shape) for name, t in model.state_dict().items()}
        context = MethodContext(flat=flat, data=data, before=before, device=device, flat_before=flat_before)
        where = f"method {step.method.name!r} ({step.origin})"
        try:
            applied = step.method.apply(model, step.settings, context)
        except PapersError as error:
            raise error.located(field=None if error.field else step.field) from None
        except Exception as exc:  # a plugin's code: what it raises is its failure, on one line
            raise PluginError(f"{where}: apply failed: {describe(exc)}", field=step.field) from exc
        if isinstance(applied, Narrowed):  # the weights chose the widths: a new model and its graph
            try:
                flat = check_narrowed(applied, flat, step, catalogue)
            except PapersError as error:
                raise error.located(field=None if error.field else step.field) from None
            return applied.model, flat, True
        if not hasattr(applied, "state_dict"):
            raise PluginError(
                f"{where}: apply returned {type(applied).__name__}, not a model", field=step.field
            )
        if {name: tuple(t.shape) for name, t in applied.state_dict().items()} != shapes:
            raise PluginError(
                f"{where}: apply changed the model's tensors; a change of shape is a rewrite or a "
                "papers.methods.Narrowed",
                field=step.field,
            )
        model = applied
    return model, flat, False


def _copy_leading(source: Any, target: Any) -> None:
    """Copy each of ``source``'s tensors into ``target``'s of the same name, cut to its shape (the
    leading block: the first channels, the first features). A narrowed layer keeps its first output
    channels and the next layer reads those same channels, so the cut is consistent across layers."""
    import torch

    old = source.state_dict()
    with torch.no_grad():
        for name, tensor in target.state_dict().items():
            previous = old.get(name)
            if previous is None or previous.dim() != tensor.dim():
                continue
            if all(new <= was for new, was in zip(tensor.shape, previous.shape, strict=True)):
                tensor.copy_(previous[tuple(slice(0, size) for size in tensor.shape)])


def _same(read: torch.Tensor, written: torch.Tensor) -> bool:
    """Equal values (a NaN where a NaN was written; a zero of either sign where a zero was)."""
    import torch

    if read.dtype != written.dtype or read.shape != written.shape:
        return False
    if not written.is_floating_point():
        return torch.equal(read, written)
    return bool(torch.allclose(read, written, rtol=0.0, atol=0.0, equal_nan=True))


def _cpu_state(model: Any) -> dict[str, torch.Tensor]:
    return {name: tensor.detach().cpu().contiguous().clone() for name, tensor in model.state_dict().items()}


def _counts(model: Any) -> tuple[int, int]:
    import torch

    parameters = list(model.parameters())
    return sum(p.numel() for p in parameters), sum(int(torch.count_nonzero(p)) for p in parameters)


def _nonzero_macs(model: Any, measurement: Any) -> int:
    """Multiply-adds with those of zero weights skipped: each layer's, times its weight's density."""
    import torch

    total = 0.0
    for layer in measurement.layers:
        try:
            weight = getattr(model.get_submodule(layer.name), "weight", None)
        except AttributeError:
            weight = None
        density = int(torch.count_nonzero(weight)) / weight.numel() if weight is not None else 1.0
        total += layer.macs * density
    return round(total)


def _energy_uj(macs: int, weight_bytes: int) -> float:
    return (macs * _PJ_PER_MAC + weight_bytes / 4 * _PJ_PER_DRAM_WORD) * 1e-6


def _latency_ms(models: list[tuple[Any, Any]], batch: int, device: Any, runs: int) -> tuple[float, ...]:
    """Each model's median time of ``runs`` forward passes at ``batch``, in milliseconds. The models'
    runs alternate (after three untimed runs each), so a machine that gets busier or warmer while they
    are timed slows them alike, instead of the one timed last."""
    import torch

    inputs = [
        [torch.randn(batch, *shape, device=device) for shape in flat.inputs.values()] for _, flat in models
    ]
    times: list[list[float]] = [[] for _ in models]
    with torch.inference_mode():
        for (model, _), given in zip(models, inputs, strict=True):
            for _ in range(3):
                model(*given)
        _synchronize(device)
        for _ in range(runs):
            for (model, _), given, timed in zip(models, inputs, times, strict=True):
                start = time.perf_counter()
                model(*given)
                _synchronize(device)
                timed.append(time.perf_counter() - start)
    return tuple(round(statistics.median(timed) * 1000, 4) for timed in times)


def _synchronize(device: Any) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _top1(model: Any, data: str, shape: tuple[int, ...], normalize: Any, scores: Any, device: Any) -> float:
    """Top-1 accuracy (percent) on ``data``'s held-out images, single central crop, as ``papers eval``."""
    import torch

    from papers.data import IN_MEMORY, image_folder, in_memory, readable, split_folder
    from papers.evaluate import count_correct, protocol_transform

    if data in IN_MEMORY:
        _, _, images, labels = in_memory(data, tuple(shape))  # type: ignore[arg-type]
        if normalize is not None:
            mean = torch.tensor(normalize["mean"]).view(1, -1, 1, 1)
            images = (images - mean) / torch.tensor(normalize["std"]).view(1, -1, 1, 1)
        dataset: Any = torch.utils.data.TensorDataset(images, labels)
    else:
        transform = protocol_transform("single_crop", (shape[1], shape[2]))
        if normalize is not None:
            from torchvision.transforms import v2

            transform = v2.Compose([transform, v2.Normalize(list(normalize["mean"]), list(normalize["std"]))])
        dataset = image_folder(split_folder(data, "val", "test") or Path(data), shape[0], transform)
    correct = seen = 0
    with torch.inference_mode(), readable(data):
        for images, labels in torch.utils.data.DataLoader(dataset, batch_size=64):
            output = model(images.to(device))
            if not isinstance(output, torch.Tensor):
                raise PapersError("top-1 needs a model whose output is one tensor of logits", field="--data")
            one, _ = count_correct(scores(output.cpu()), labels)
            correct, seen = correct + one, seen + len(labels)
    if seen == 0:
        raise PapersError("no images to evaluate", file=data)
    return round(100.0 * correct / seen, 4)


def _classes(data: str) -> int:
    if data in ("builtin:digits", "builtin:mnist5k"):
        return 10
    from papers.data import split_folder

    folder = split_folder(data, "val", "test") or Path(data)
    return sum(1 for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def _run_record(weights: Path) -> Any:
    """The run record (``recipe.json``) of weights ``papers train`` wrote: build options, normalisation."""
    from papers.train import RECIPE, RunRecord

    for folder in (weights.parent, weights.parent.parent):
        if (folder / RECIPE).is_file():
            try:
                return RunRecord.model_validate_json((folder / RECIPE).read_bytes())
            except (OSError, ValueError):
                return None
    return None


def _check_out(out: str | Path, force: bool) -> Path:
    """Refuse an ``--out`` that is a file, or a folder that holds files (unless ``force``)."""
    folder = Path(out)
    if folder.exists() and not folder.is_dir():
        raise PapersError("exists and is not a folder; --out names the folder to write", file=str(out))
    if folder.is_dir() and any(folder.iterdir()) and not force:
        raise PapersError(
            "is not empty; pass --force to replace the files compress writes there", file=str(out)
        )
    return folder


def _device(device: str) -> Any:
    import torch

    try:
        chosen = torch.device(device)
    except (RuntimeError, TypeError):
        raise PapersError(f"unknown device {device!r}; cpu or cuda[:N]", field="--device") from None
    if chosen.type not in ("cpu", "cuda"):
        raise PapersError(f"unknown device {device!r}; cpu or cuda[:N]", field="--device")
    if chosen.type == "cuda" and not torch.cuda.is_available():
        raise PapersError("no CUDA device on this machine", field="--device")
    return chosen


def _device_name(device: Any) -> str:
    import platform

    import torch

    if device.type == "cuda":
        return f"{device} ({torch.cuda.get_device_name(device)})"
    return f"cpu ({platform.machine()})"


__all__ = [
    "ContainerError",
    "compress",
    "decode_state",
    "encode_state",
    "load_compressed",
    "read_container",
    "write_container",
]
