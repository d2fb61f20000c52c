"""Binary convolutions: ±1 weights and activations packed into bits, convolved by XNOR and popcount.

A convolution of ±1 tensors is a count: at each output position and kernel offset, the dot product
of C channels of ±1 values is C - 2·(the number of channels where input and weight differ), and
where they differ is one XOR of their packed sign bits. :func:`pack_signs` packs the sign bits
along the channels, eight to a byte (a 1 bit for +1, channels padded with zero bits to a whole
byte, or to a whole 64-bit word where there are 64 channels or more, in which case the XOR runs on
``int64`` words). :func:`binary_conv2d` XORs each kernel offset's weight bits with the input's
shifted (and strided) slice, counts the differing bits and sums the counts over the offsets; a
position of the zero padding contributes nothing, as a zero does in ``F.conv2d``, through the count
of real input positions each output reads. The result equals ``F.conv2d`` on the ±1 tensors exactly
(integers; the tests compare them).

The popcount. torch has none. In torch code (``backend="torch"``, the default) it is, on 64-bit
words, the SWAR count (shifts, masks and one multiply, a dozen elementwise ops on ``int64``), and on
bytes (fewer than 64 channels) a 256-entry table gathered on the XOR's bytes. Measured here on one
thread on AlexNet conv3's XOR (169 × 384 × 4 words), the SWAR count took 5.4 ms, the table
gathered on its bytes 6.6 ms, the table indexed 38 ms (``benchmarks/binary_conv.py --popcount``
prints them); the whole torch kernel ran 10 to 40 times slower than float ``F.conv2d``. That is far
slower, so ``backend="native"`` is a small C++ extension (:data:`NATIVE_SOURCE`, compiled on first
use by ``torch.utils.cpp_extension.load_inline``, about 30 to 100 s, cached by torch afterwards)
whose loop XORs the packed words and counts them with the compiler's ``popcount`` builtin (the
``popcnt`` instruction), over output rows in parallel (``at::parallel_for``): on AlexNet conv3 it
took 0.8 ms where ``F.conv2d`` took 8.5 ms. It needs a C++ compiler, so it is opt-in (a layer's
``kernel: native``, the benchmark's default), and the torch kernel stays the one that runs anywhere.

Training (a gradient wanted) binarizes on the float path with the straight-through estimator: by
the sign, or, for a layer made with ``stochastic``, its inputs by stochastic binarization while the
layer is in training mode (:func:`stochastic_sign_ste`: +1 with probability clip((x + 1) / 2, 0, 1),
Courbariaux, Hubara et al. 2016, eq. 2, which the paper uses for activations at train time only); in
eval mode every layer is deterministic.

Hand-written: no maintained library has a bit-packed binary convolution for torch on the CPU (larq
and daBNN are for TensorFlow Lite and ARM; torch's quantized kernels stop at 8 bits).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

_BYTE_WEIGHTS = torch.tensor([1, 2, 4, 8, 16, 32, 64, 128], dtype=torch.uint8)
POPCOUNT_TABLE = torch.tensor([bin(byte).count("1") for byte in range(256)], dtype=torch.uint8)
"""The number of 1 bits of each byte value."""


def binarize(x: torch.Tensor) -> torch.Tensor:
    """+1 where ``x >= 0``, -1 elsewhere (a zero is +1: the sign bit packs no zero)."""
    return torch.where(x >= 0, 1.0, -1.0).to(x.dtype)


@dataclass(frozen=True)
class PackedSigns:
    """Sign bits packed along the channels: ``bits`` is (..., bytes) ``uint8``, the channels last."""

    bits: torch.Tensor
    channels: int

    @property
    def nbytes(self) -> int:
        return self.bits.numel() * self.bits.element_size()


def _packed_width(channels: int) -> int:
    """Bytes per position: whole bytes, or whole 64-bit words from 64 channels on."""
    width = math.ceil(channels / 8)
    return math.ceil(width / 8) * 8 if channels >= 64 else width


def pack_signs(x: torch.Tensor, dim: int = 1) -> PackedSigns:
    """The sign bits of ``x`` (1 for ``x >= 0``) along ``dim``, packed eight to a byte, least
    significant first, and moved last: an (N, C, H, W) input gives (N, H, W, bytes)."""
    moved = (x >= 0).movedim(dim, -1)
    channels = moved.shape[-1]
    width = _packed_width(channels)
    padded = F.pad(moved.to(torch.uint8), (0, width * 8 - channels))
    planes = padded.reshape(*moved.shape[:-1], width, 8)
    packed = (planes * _BYTE_WEIGHTS.to(x.device)).sum(-1, dtype=torch.uint8)
    return PackedSigns(packed.contiguous(), channels)


def unpack_signs(packed: PackedSigns, dim: int = 1) -> torch.Tensor:
    """The ±1 float tensor :func:`pack_signs` packed (its channels back at ``dim``)."""
    bits = packed.bits.unsqueeze(-1) & _BYTE_WEIGHTS.to(packed.bits.device)
    signs = (bits != 0).reshape(*packed.bits.shape[:-1], -1)[..., : packed.channels]
    return binarize(signs.float() - 0.5).movedim(-1, dim)


def popcount(x: torch.Tensor) -> torch.Tensor:
    """The number of 1 bits of each byte of ``x`` (viewed as ``uint8``), as ``uint8``: the table,
    gathered (``torch.gather`` is several times faster than indexing with the bytes)."""
    flat = x.contiguous().view(torch.uint8)
    counts = torch.gather(POPCOUNT_TABLE.to(x.device), 0, flat.reshape(-1).long())
    return counts.view(flat.shape)


def _count_bits(xor: torch.Tensor) -> torch.Tensor:
    """The 1 bits of ``xor`` summed over its last dimension, as ``int32``: SWAR on 64-bit words, the
    table on bytes."""
    if xor.dtype == torch.int64:
        return popcount_swar(xor).sum(-1, dtype=torch.int32)
    return popcount(xor).sum(-1, dtype=torch.int32)


def popcount_swar(x: torch.Tensor) -> torch.Tensor:
    """The number of 1 bits of each 64-bit word of ``x`` (``int64``): the shift-and-mask count, for
    comparison with the table (:func:`popcount`)."""
    x = x - ((x >> 1) & 0x5555555555555555)
    x = (x & 0x3333333333333333) + ((x >> 2) & 0x3333333333333333)
    x = (x + (x >> 4)) & 0x0F0F0F0F0F0F0F0F
    return (x * 0x0101010101010101) >> 56


def _words(bits: torch.Tensor) -> torch.Tensor:
    """Packed bytes as 64-bit words where they are whole words (the XOR then touches 8× fewer)."""
    return bits.view(torch.int64) if bits.shape[-1] % 8 == 0 else bits


NATIVE_SOURCE = r"""
#include <torch/extension.h>
#include <ATen/Parallel.h>

// The bits where the packed input and weights differ, counted: x (N, Hp, Wp, D) and w (O, KH, KW, D)
// hold 64 sign bits a word (the input zero-padded); gives (N, OH, OW, O) int32 counts.
torch::Tensor xor_popcount_conv(torch::Tensor x, torch::Tensor w, int64_t sh, int64_t sw, int64_t oh,
                                int64_t ow) {
  TORCH_CHECK(x.scalar_type() == torch::kInt64 && w.scalar_type() == torch::kInt64, "int64 words");
  auto xa = x.contiguous();
  auto wa = w.contiguous();
  const int64_t N = xa.size(0), Hp = xa.size(1), Wp = xa.size(2), D = xa.size(3);
  const int64_t O = wa.size(0), KH = wa.size(1), KW = wa.size(2);
  TORCH_CHECK(wa.size(3) == D && (oh - 1) * sh + KH <= Hp && (ow - 1) * sw + KW <= Wp, "shapes");
  auto out = torch::empty({N, oh, ow, O}, torch::dtype(torch::kInt32));
  const uint64_t* xp = reinterpret_cast<const uint64_t*>(xa.data_ptr<int64_t>());
  const uint64_t* wp = reinterpret_cast<const uint64_t*>(wa.data_ptr<int64_t>());
  int32_t* op = out.data_ptr<int32_t>();
  at::parallel_for(0, N * oh, 1, [&](int64_t begin, int64_t end) {
    for (int64_t row = begin; row < end; ++row) {
      const int64_t n = row / oh, i = row % oh;
      for (int64_t j = 0; j < ow; ++j) {
        int32_t* dst = op + ((n * oh + i) * ow + j) * O;
        for (int64_t o = 0; o < O; ++o) {
          int32_t count = 0;
          for (int64_t a = 0; a < KH; ++a) {
            // A kernel row's KW positions of D words each are contiguous in both tensors.
            const uint64_t* xr = xp + ((n * Hp + i * sh + a) * Wp + j * sw) * D;
            const uint64_t* wr = wp + (o * KH + a) * KW * D;
            for (int64_t k = 0; k < KW * D; ++k) count += __builtin_popcountll(xr[k] ^ wr[k]);
          }
          dst[o] = count;
        }
      }
    }
  });
  return out;
}
"""
"""The C++ of ``backend="native"``: XOR and the hardware popcount over 64-bit words."""

_NATIVE: list = []


def native_kernel() -> object:
    """The compiled extension (compiled on first use, then cached by torch); raises ``RuntimeError``
    saying why where it cannot be built (no C++ compiler)."""
    if not _NATIVE:
        from torch.utils.cpp_extension import load_inline

        try:
            _NATIVE.append(
                load_inline(
                    "papers_xnor_popcount",
                    cpp_sources=NATIVE_SOURCE,
                    functions=["xor_popcount_conv"],
                    extra_cflags=["-O3", "-march=native"],
                )
            )
        except Exception as exc:  # the compiler's or ninja's failure, whatever it raises
            raise RuntimeError(f"the native XNOR-popcount kernel cannot be built here: {exc}") from None
    return _NATIVE[0]


BACKENDS = ("torch", "native")


def binary_conv2d(
    input: PackedSigns,
    weight: PackedSigns,
    kernel: Sequence[int],
    stride: Sequence[int] = (1, 1),
    padding: Sequence[int] = (0, 0),
    *,
    backend: str = "torch",
) -> torch.Tensor:
    """``F.conv2d`` of ±1 tensors from their packed signs, as ``int32``: ``input`` packed from
    (N, C, H, W) (bits (N, H, W, bytes)), ``weight`` from (O, C, kh, kw) (bits (O, kh, kw, bytes));
    zero ``padding``, ``stride``. Gives (N, O, H', W'). ``backend``: torch code, or the C++
    extension (:func:`native_kernel`; packed bytes are padded to whole words for it)."""
    if backend not in BACKENDS:
        raise ValueError(f"backend is one of {', '.join(BACKENDS)}, not {backend!r}")
    if input.channels != weight.channels:
        raise ValueError(f"input has {input.channels} channels; the weights take {weight.channels}")
    (kh, kw), (sh, sw), (ph, pw) = tuple(kernel), tuple(stride), tuple(padding)
    batch, height, width, _ = input.bits.shape
    out_h, out_w = (height + 2 * ph - kh) // sh + 1, (width + 2 * pw - kw) // sw + 1
    if out_h < 1 or out_w < 1:
        raise ValueError(f"input {height}×{width} is smaller than the kernel {kh}×{kw} with its padding")
    bits = F.pad(input.bits, (0, 0, pw, pw, ph, ph)) if ph or pw else input.bits
    out_channels = weight.bits.shape[0]
    if backend == "native":
        whole = -bits.shape[-1] % 8  # zero bytes to whole words: equal in both, they never differ
        differ = native_kernel().xor_popcount_conv(  # type: ignore[attr-defined]
            F.pad(bits, (0, whole)).view(torch.int64),
            F.pad(weight.bits, (0, whole)).view(torch.int64),
            sh,
            sw,
            out_h,
            out_w,
        )
    else:
        words, weight_words = _words(bits), _words(weight.bits)
        differ = torch.zeros(batch, out_h, out_w, out_channels, dtype=torch.int32, device=bits.device)
        for i in range(kh):
            for j in range(kw):
                window = words[:, i : i + sh * (out_h - 1) + 1 : sh, j : j + sw * (out_w - 1) + 1 : sw]
                xor = window.unsqueeze(3) ^ weight_words[:, i, j]  # (N, H', W', O, words)
                differ += _count_bits(xor)
    # Each real (not padding) input position read gives C - 2·differ; a padding position gives 0, and
    # its bits (zeros) differ from the weight's where those are ones, which is subtracted back.
    real = _real_positions(height, width, (kh, kw), (sh, sw), (ph, pw), bits.device)
    counts = real.sum(-1, dtype=torch.int32)  # (H', W')
    out = input.channels * counts[None, :, :, None] - 2 * differ
    if ph or pw:
        ones = popcount(weight.bits).sum(-1, dtype=torch.int32).view(out_channels, kh * kw)  # (O, kh·kw)
        padded = (~real).to(torch.int32)  # (H', W', kh·kw)
        out += 2 * (padded @ ones.T)
    return out.permute(0, 3, 1, 2).contiguous()


def _real_positions(
    height: int,
    width: int,
    kernel: tuple[int, int],
    stride: tuple[int, int],
    padding: tuple[int, int],
    device,
) -> torch.Tensor:
    """(H', W', kh·kw) booleans: whether each output position's kernel offset reads the input (not
    the padding)."""
    ones = torch.ones(1, 1, height, width, device=device)
    patches = F.unfold(ones, kernel, padding=padding, stride=stride)  # (1, kh·kw, H'·W')
    out_h = (height + 2 * padding[0] - kernel[0]) // stride[0] + 1
    return (patches[0].T > 0).view(out_h, -1, kernel[0] * kernel[1])


def binary_linear(input: PackedSigns, weight: PackedSigns, *, backend: str = "torch") -> torch.Tensor:
    """``input @ weight.T`` of ±1 matrices from their packed signs (N, F) and (O, F), as ``int32``
    (``backend`` as :func:`binary_conv2d`'s: the native one runs it as a 1×1 convolution)."""
    if input.channels != weight.channels:
        raise ValueError(f"input has {input.channels} features; the weights take {weight.channels}")
    if backend == "native":
        batch, features = input.bits.shape
        as_image = PackedSigns(input.bits.view(batch, 1, 1, features), input.channels)
        as_filters = PackedSigns(weight.bits.view(-1, 1, 1, features), weight.channels)
        return binary_conv2d(as_image, as_filters, (1, 1), backend="native").view(batch, -1)
    xor = _words(input.bits).unsqueeze(1) ^ _words(weight.bits)  # (N, O, words)
    differ = _count_bits(xor)
    return input.channels - 2 * differ


# -- training: the sign with the straight-through estimator ------------------------------------------


class _SignSTE(torch.autograd.Function):
    """``binarize`` forward; backward, the gradient passed where ``|x| <= 1`` and cancelled elsewhere
    (the straight-through estimator of hard tanh: Courbariaux, Hubara et al. 2016, Section 1.3)."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return binarize(x)

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        return grad * (x.abs() <= 1).to(grad.dtype)


def sign_ste(x: torch.Tensor) -> torch.Tensor:
    """±1 forward; the gradient of hard tanh backward (cancelled where ``|x| > 1``)."""
    return _SignSTE.apply(x)


def hard_sigmoid(x: torch.Tensor) -> torch.Tensor:
    """σ(x) = clip((x + 1) / 2, 0, 1), the probability of +1 in stochastic binarization."""
    return ((x + 1) / 2).clamp(0, 1)


class _StochasticSignSTE(torch.autograd.Function):
    """Stochastic binarization forward (Courbariaux, Hubara et al. 2016, Section 1.1, eq. 2): +1 where
    the uniform draw ``noise`` falls below σ(x), -1 elsewhere; backward, :class:`_SignSTE`'s
    straight-through estimator."""

    @staticmethod
    def forward(ctx, x, noise):
        ctx.save_for_backward(x)
        return torch.where(noise < hard_sigmoid(x), 1.0, -1.0).to(x.dtype)

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        return grad * (x.abs() <= 1).to(grad.dtype), None


def stochastic_sign_ste(x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """+1 with probability σ(x) = clip((x + 1) / 2, 0, 1), else -1 (its mean is clip(x, -1, 1)); the
    gradient of hard tanh backward, as :func:`sign_ste`'s. The draws come from ``generator`` (default:
    torch's global one, so ``torch.manual_seed`` repeats them)."""
    noise = torch.rand(x.shape, generator=generator, device=x.device, dtype=x.dtype)
    return _StochasticSignSTE.apply(x, noise)


def binary_weight(weight: torch.Tensor, scaled: bool) -> torch.Tensor:
    """``α · sign(W)`` with α the mean of ``|W|`` over each output's filter (XNOR-Net's per-filter
    scale, Section 3.1), or ``sign(W)`` where ``scaled`` is false (BNN); the sign's gradient is the
    straight-through estimator, α's its own (the 1/n term of Rastegari et al.'s eq. 7)."""
    signs = sign_ste(weight)
    if not scaled:
        return signs
    alpha = weight.abs().mean(dim=tuple(range(1, weight.dim())), keepdim=True)
    return alpha * signs


def _cached(layer: nn.Module, name: str, make: Callable[[], object]) -> object:
    """``make()``, kept while the layer's weight is unchanged where no gradient is wanted (inference
    binarizes and packs the weights once, not on every call)."""
    weight = layer.weight
    if (torch.is_grad_enabled() and weight.requires_grad) or weight.device.type == "meta":
        return make()
    key = (weight._version, weight.data_ptr())
    cache = layer.__dict__.setdefault("_weight_cache", {})
    if name not in cache or cache[name][0] != key:
        cache[name] = (key, make())
    return cache[name][1]


INPUTS = ("real", "binary")
KERNELS = ("packed", "native", "float")
"""A binary layer's inference kernel: packed bits in torch code, packed bits in the C++ extension,
or ``F.conv2d`` on the ±1 tensors as floats."""


def _set_options(
    module: nn.Module, inputs: str, weight_scale: bool, input_scale: bool, kernel: str, stochastic: bool
) -> None:
    """A binary layer's options, checked (``inputs`` one of :data:`INPUTS`, ``kernel`` of :data:`KERNELS`,
    ``stochastic`` only with binary inputs)."""
    if inputs not in INPUTS:
        raise ValueError(f"inputs is one of {', '.join(INPUTS)}, not {inputs!r}")
    if kernel not in KERNELS:
        raise ValueError(f"kernel is one of {', '.join(KERNELS)}, not {kernel!r}")
    if stochastic and inputs != "binary":
        raise ValueError("stochastic binarization is of binary inputs (inputs: binary)")
    module.inputs, module.weight_scale, module.input_scale, module.kernel = (
        inputs,
        weight_scale,
        input_scale,
        kernel,
    )
    module.stochastic = stochastic


def _binary_input(module: nn.Module, input: torch.Tensor) -> torch.Tensor:
    """A binary layer's ±1 input on the float path: stochastic binarization in training mode where
    the layer asks for it (the paper's train-time use), the deterministic sign otherwise."""
    return stochastic_sign_ste(input) if module.stochastic and module.training else sign_ste(input)


def _draws(module: nn.Module, input: torch.Tensor) -> bool:
    """Whether the forward pass draws stochastic signs (then the float path runs, not the kernel)."""
    return module.stochastic and module.training and input.device.type != "meta"


class BinaryConv2d(nn.Conv2d):
    """``nn.Conv2d`` with binary weights (``α · sign(W)``, or ``sign(W)`` without ``weight_scale``)
    and, with ``inputs="binary"``, binary inputs (``sign(I)``, times XNOR-Net's K, the mean of
    ``|I|`` over the channels averaged over each kernel window, with ``input_scale``).

    Training (a gradient wanted) runs ``F.conv2d`` on the binarized tensors with the straight-through
    estimator. Inference with binary inputs runs the packed XNOR-popcount kernel
    (:func:`binary_conv2d`: in torch code, ``kernel="packed"``, or the C++ extension,
    ``"native"``) or ``F.conv2d`` on the ±1 tensors (``"float"``);
    the two give the same numbers. The weights stay a float ``weight`` (the latent weights while
    training; ``α · sign(W)`` itself once a method has binarized them, which this layer reproduces:
    their mean magnitude is α)."""

    def __init__(
        self,
        *args: object,
        inputs: str = "binary",
        weight_scale: bool = True,
        input_scale: bool = True,
        kernel: str = "packed",
        stochastic: bool = False,
        **kwargs: object,
    ) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        _set_options(self, inputs, weight_scale, input_scale, kernel, stochastic)
        if tuple(self.dilation) != (1, 1) or isinstance(self.padding, str):
            raise ValueError("a binary convolution has no dilation and numeric padding")

    def extra_repr(self) -> str:
        return (
            f"{super().extra_repr()}, inputs={self.inputs}, weight_scale={self.weight_scale}, "
            f"input_scale={self.input_scale}, kernel={self.kernel}{', stochastic=True' * self.stochastic}"
        )

    def packed_weight(self) -> list[PackedSigns]:
        """The weight's sign bits, (O / groups, kh, kw, bytes) per group: what the XNOR kernel reads
        (1 bit a weight)."""
        return _cached(
            self,
            "packed",
            lambda: [pack_signs(part, dim=1) for part in self.weight.detach().chunk(self.groups, dim=0)],
        )

    def _backend(self) -> str:
        return "native" if self.kernel == "native" else "torch"

    def _packed_forward(self, input: torch.Tensor) -> torch.Tensor:
        """The ±1 convolution's counts by the XNOR-popcount kernel, one group at a time."""
        parts = [
            binary_conv2d(
                pack_signs(part), weight, self.kernel_size, self.stride, self.padding, backend=self._backend()
            )
            for part, weight in zip(input.chunk(self.groups, dim=1), self.packed_weight(), strict=True)
        ]
        return torch.cat(parts, dim=1) if len(parts) > 1 else parts[0]

    def _alpha(self) -> torch.Tensor | None:
        if not self.weight_scale:
            return None
        return _cached(self, "alpha", lambda: self.weight.abs().mean(dim=(1, 2, 3)).view(1, -1, 1, 1))

    def _input_scale(self, input: torch.Tensor) -> torch.Tensor:
        """K: the mean of ``|I|`` over the channels (a group's), averaged over each kernel window
        (Section 3.2); one map per group, repeated over the group's output channels."""
        batch, channels, height, width = input.shape
        magnitude = input.abs().view(batch, self.groups, channels // self.groups, height, width).mean(2)
        k = F.avg_pool2d(magnitude, self.kernel_size, self.stride, self.padding, count_include_pad=True)
        return k if self.groups == 1 else k.repeat_interleave(self.out_channels // self.groups, dim=1)

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        wants_grad = torch.is_grad_enabled() and (input.requires_grad or self.weight.requires_grad)
        if self.inputs == "real":
            weight = _cached(self, "real", lambda: binary_weight(self.weight, self.weight_scale))
            return F.conv2d(input, weight, self.bias, self.stride, self.padding, groups=self.groups)
        if wants_grad or self.kernel == "float" or input.device.type == "meta" or _draws(self, input):
            weight = binary_weight(self.weight, False)
            binary = _binary_input(self, input)
            out = F.conv2d(binary, weight, None, self.stride, self.padding, groups=self.groups)
        else:
            out = self._packed_forward(input).to(input.dtype)
        alpha = self._alpha()
        if alpha is not None:
            out = out * alpha
        if self.input_scale:
            out = out * self._input_scale(input)
        if self.bias is not None:
            out = out + self.bias.view(1, -1, 1, 1)
        return out


class BinaryLinear(nn.Linear):
    """``nn.Linear`` with binary weights and, with ``inputs="binary"``, binary inputs: as
    :class:`BinaryConv2d`, K being the mean of ``|x|`` over each input's features."""

    def __init__(
        self,
        *args: object,
        inputs: str = "binary",
        weight_scale: bool = True,
        input_scale: bool = True,
        kernel: str = "packed",
        stochastic: bool = False,
        **kwargs: object,
    ) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        _set_options(self, inputs, weight_scale, input_scale, kernel, stochastic)

    def extra_repr(self) -> str:
        stochastic = ", stochastic=True" * self.stochastic
        return f"{super().extra_repr()}, inputs={self.inputs}, weight_scale={self.weight_scale}{stochastic}"

    def packed_weight(self) -> PackedSigns:
        """The weight's sign bits, (O, bytes)."""
        return _cached(self, "packed", lambda: pack_signs(self.weight.detach(), dim=1))

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        wants_grad = torch.is_grad_enabled() and (input.requires_grad or self.weight.requires_grad)
        if self.inputs == "real":
            weight = _cached(self, "real", lambda: binary_weight(self.weight, self.weight_scale))
            return F.linear(input, weight, self.bias)
        if (
            wants_grad
            or self.kernel == "float"
            or input.device.type == "meta"
            or input.dim() != 2
            or _draws(self, input)
        ):
            out = F.linear(_binary_input(self, input), binary_weight(self.weight, False))
        else:
            backend = "native" if self.kernel == "native" else "torch"
            out = binary_linear(pack_signs(input, dim=-1), self.packed_weight(), backend=backend)
            out = out.to(input.dtype)
        if self.weight_scale:
            out = out * _cached(self, "alpha", lambda: self.weight.abs().mean(dim=1))
        if self.input_scale:
            out = out * input.abs().mean(dim=-1, keepdim=True)
        if self.bias is not None:
            out = out + self.bias
        return out


__all__ = [
    "BACKENDS",
    "KERNELS",
    "NATIVE_SOURCE",
    "POPCOUNT_TABLE",
    "BinaryConv2d",
    "BinaryLinear",
    "PackedSigns",
    "binarize",
    "binary_conv2d",
    "binary_linear",
    "binary_weight",
    "hard_sigmoid",
    "native_kernel",
    "pack_signs",
    "popcount",
    "popcount_swar",
    "sign_ste",
    "stochastic_sign_ste",
    "unpack_signs",
]
