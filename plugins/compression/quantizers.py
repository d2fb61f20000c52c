"""Low-bit quantizers for training, with their straight-through estimators, and the layers that use
them: DoReFa-Net's k-bit weights, activations and gradients (Zhou et al. 2016), the Quantized Neural
Networks' k-bit linear quantization and the binarized networks' shift-based batch normalisation and
AdaMax (Hubara, Courbariaux et al. 2016). The binary layers are in
:mod:`papers_plugins.compression.binary`.

A quantized layer keeps float latent weights while it trains and quantizes them on each forward
pass; a method ends by writing the quantized weights themselves into the layer and setting its
``frozen`` buffer, after which the layer uses them as they are. Frozen weights are computed as a
float scale times integer codes (``(2c - n) * (1 / n)`` for DoReFa's k bits), which the container's
``grid`` or ``codebook`` encoding stores at the codes' bit width, exactly.

Hand-written: the quantizers are a few lines each of the papers' equations; no maintained library
has DoReFa's tanh-normalised weights or its noisy gradient quantizer for torch (Brevitas and
torch.ao quantize to an integer grid with observers, not these).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from papers_plugins.compression.binary import binarize, sign_ste

FULL = 32
"""A bit width of 32 leaves the tensor as it is (DoReFa's "32": not quantized)."""


class _RoundSTE(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        return torch.round(x)

    @staticmethod
    def backward(ctx, grad):
        return grad


def quantize_unit(x: torch.Tensor, bits: int) -> torch.Tensor:
    """DoReFa's quantize_k: ``x`` in [0, 1] rounded to the nearest of 2**bits evenly spaced levels,
    the gradient passed straight through (eq. 5)."""
    levels = (1 << bits) - 1
    return _RoundSTE.apply(x * levels) / levels


def dorefa_codes(weight: torch.Tensor, bits: int) -> torch.Tensor:
    """The integer codes ``c`` in [0, 2**bits - 1] of DoReFa's k-bit weights (eq. 9): the weights
    tanh-normalised into [0, 1] and rounded to 2**bits levels; the weights are ``(2c - n) / n``."""
    squashed = torch.tanh(weight)
    unit = squashed / (2 * squashed.abs().max().clamp(min=1e-12)) + 0.5
    return torch.round(unit * ((1 << bits) - 1))


def dorefa_weight(weight: torch.Tensor, bits: int) -> torch.Tensor:
    """DoReFa-Net's k-bit weights, for training: ``E(|W|) · sign(W)`` at one bit (eq. 7, one scale for
    the layer), else ``2 quantize_k(tanh(W) / (2 max|tanh(W)|) + 1/2) - 1`` (eq. 9); 32: ``W``."""
    if bits >= FULL:
        return weight
    if bits == 1:
        return weight.abs().mean().detach() * _SignIdentity.apply(weight)
    squashed = torch.tanh(weight)
    unit = squashed / (2 * squashed.abs().max().clamp(min=1e-12)) + 0.5
    return 2 * quantize_unit(unit, bits) - 1


class _SignIdentity(torch.autograd.Function):
    """DoReFa's sign: ``binarize`` forward, the gradient passed through unchanged (eq. 7)."""

    @staticmethod
    def forward(ctx, x):
        return binarize(x)

    @staticmethod
    def backward(ctx, grad):
        return grad


def frozen_dorefa_weight(weight: torch.Tensor, bits: int) -> torch.Tensor:
    """What :func:`dorefa_weight` gives, computed as a float scale times integer codes, so that the
    container stores it at ``bits`` bits: ``mean|W| · (±1)`` at one bit, ``(2c - n) · (1 / n)`` above."""
    with torch.no_grad():
        if bits >= FULL:
            return weight.clone()
        if bits == 1:
            return weight.abs().mean() * binarize(weight)
        levels = (1 << bits) - 1
        codes = 2 * dorefa_codes(weight, bits) - levels
        return codes * torch.tensor(1.0 / levels, dtype=weight.dtype)


def linear_weight(weight: torch.Tensor, bits: int) -> torch.Tensor:
    """QNN's linear quantization of weights: ``sign`` at one bit (the gradient passed where
    ``|W| <= 1``), else the codes of ``bits``-bit two's complement times a power of two (a shift).
    The paper's weights, trained from scratch, span [-1, 1] and its step is 2**(1 - bits); a trained
    network's are far smaller (LeNet's within ±0.3, all of which would round to zero at two bits),
    so the weights are first divided by the power of two at or above the layer's largest magnitude,
    and the step scaled back by it: still a power of two."""
    if bits >= FULL:
        return weight
    if bits == 1:
        return sign_ste(weight)
    scale = _power_of_two_above(weight)
    return _linear_levels(weight / scale, bits) * scale


def _power_of_two_above(weight: torch.Tensor) -> torch.Tensor:
    largest = weight.detach().abs().max().clamp(min=2.0**-60)
    return torch.exp2(torch.ceil(torch.log2(largest)))


def _linear_levels(x: torch.Tensor, bits: int) -> torch.Tensor:
    step = 2.0 ** (1 - bits)
    low, high = -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    clipped = x.clamp(-1.0, 1.0)  # its gradient is cancelled outside [-1, 1]
    return _RoundSTE.apply(clipped / step).clamp(low, high) * step


def frozen_linear_weight(weight: torch.Tensor, bits: int) -> torch.Tensor:
    with torch.no_grad():
        if bits >= FULL:
            return weight.clone()
        if bits == 1:
            return binarize(weight)
        scale = _power_of_two_above(weight)
        return _linear_levels(weight / scale, bits) * scale


def dorefa_activation(x: torch.Tensor, bits: int) -> torch.Tensor:
    """DoReFa's activations: clipped to [0, 1] (the gradient cancelled outside), then quantize_k."""
    clipped = x.clamp(0.0, 1.0)
    return clipped if bits >= FULL else quantize_unit(clipped, bits)


def linear_activation(x: torch.Tensor, bits: int) -> torch.Tensor:
    """QNN's activations: ``sign`` with hard tanh's gradient at one bit, else hard tanh quantized
    linearly at ``bits`` bits (the gradient cancelled where ``|x| > 1``)."""
    if bits >= FULL:
        return F.hardtanh(x)
    return sign_ste(x) if bits == 1 else _linear_levels(x, bits)


class _QuantizeGradient(torch.autograd.Function):
    """DoReFa's gradient quantizer (eq. 12): identity forward; backward, each instance's gradient
    ``dr`` becomes ``2 max|dr| (quantize_k(dr / (2 max|dr|) + 1/2 + N(k)) - 1/2)``, with the noise
    N(k) uniform in ±1/2 of one level."""

    @staticmethod
    def forward(ctx, x, bits):
        ctx.bits = bits
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):
        levels = (1 << ctx.bits) - 1
        dims = tuple(range(1, grad.dim()))
        largest = grad.abs().amax(dim=dims, keepdim=True).clamp(min=1e-30) if dims else grad.abs().max()
        unit = grad / (2 * largest) + 0.5 + (torch.rand_like(grad) - 0.5) / levels
        return 2 * largest * (torch.round(unit.clamp(0, 1) * levels) / levels - 0.5), None


def quantize_gradient(x: torch.Tensor, bits: int) -> torch.Tensor:
    """``x`` unchanged; the gradient flowing back through it quantized to ``bits`` bits (32: as is)."""
    return x if bits >= FULL else _QuantizeGradient.apply(x, bits)


WEIGHT_QUANTIZERS = {
    "dorefa": (dorefa_weight, frozen_dorefa_weight),
    "linear": (linear_weight, frozen_linear_weight),
}
ACTIVATION_QUANTIZERS = {"dorefa": dorefa_activation, "linear": linear_activation}


class _Quantized:
    """What the quantized convolution and linear layer share: bit widths, quantizers, ``frozen``."""

    weight: torch.Tensor
    frozen: torch.Tensor

    def __init__(
        self,
        *args: object,
        weight_bits: int = FULL,
        input_bits: int = FULL,
        gradient_bits: int = FULL,
        quantizer: str = "dorefa",
        **kwargs: object,
    ) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[call-arg]  # the torch layer's
        self._setup(weight_bits, input_bits, gradient_bits, quantizer)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, {self.bits_repr()}"

    def _setup(self, weight_bits: int, input_bits: int, gradient_bits: int, quantizer: str) -> None:
        for name, bits in (
            ("weight_bits", weight_bits),
            ("input_bits", input_bits),
            ("gradient_bits", gradient_bits),
        ):
            if not 1 <= bits <= FULL:
                raise ValueError(f"{name} is 1 to 32, not {bits}")
        if quantizer not in WEIGHT_QUANTIZERS:
            raise ValueError(f"quantizer is one of {', '.join(WEIGHT_QUANTIZERS)}, not {quantizer!r}")
        self.weight_bits, self.input_bits, self.gradient_bits = weight_bits, input_bits, gradient_bits
        self.quantizer = quantizer
        self.register_buffer("frozen", torch.zeros((), dtype=torch.bool))  # type: ignore[attr-defined]

    def reset_parameters(self) -> None:
        """The layer's default initialisation, and not frozen (the builder allocates the buffer empty
        and initialises a layer through this)."""
        super().reset_parameters()  # type: ignore[misc]
        if "frozen" in self._buffers:  # type: ignore[attr-defined]
            self.frozen.fill_(False)

    def is_frozen(self) -> bool:
        return self.frozen.device.type != "meta" and bool(self.frozen)

    def quantized_weight(self) -> torch.Tensor:
        if self.is_frozen():
            return self.weight
        return WEIGHT_QUANTIZERS[self.quantizer][0](self.weight, self.weight_bits)

    def freeze(self) -> None:
        """Write the quantized weights into ``weight`` (a scale times integer codes) and use them as
        they are from now on."""
        if self.is_frozen():
            return
        with torch.no_grad():
            self.weight.copy_(WEIGHT_QUANTIZERS[self.quantizer][1](self.weight, self.weight_bits))
            self.frozen.fill_(True)

    def quantized_input(self, x: torch.Tensor) -> torch.Tensor:
        return x if self.input_bits >= FULL else ACTIVATION_QUANTIZERS[self.quantizer](x, self.input_bits)

    def bits_repr(self) -> str:
        return (
            f"weight_bits={self.weight_bits}, input_bits={self.input_bits}, "
            f"gradient_bits={self.gradient_bits}, quantizer={self.quantizer}"
        )


class QuantConv2d(_Quantized, nn.Conv2d):
    """``nn.Conv2d`` with k-bit weights, optionally k-bit inputs and k-bit gradients (DoReFa's or
    QNN's quantizers); 32 bits leaves a tensor as it is."""

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        out = self._conv_forward(self.quantized_input(input), self.quantized_weight(), self.bias)
        return quantize_gradient(out, self.gradient_bits)


class QuantLinear(_Quantized, nn.Linear):
    """``nn.Linear`` with k-bit weights, optionally k-bit inputs and k-bit gradients."""

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        out = F.linear(self.quantized_input(input), self.quantized_weight(), self.bias)
        return quantize_gradient(out, self.gradient_bits)


class QuantActivation(nn.Module):
    """An activation quantized at ``bits`` bits: DoReFa's (clipped to [0, 1], replacing a ReLU) or
    QNN's (hard tanh, replacing a tanh-like activation)."""

    def __init__(self, bits: int, quantizer: str = "dorefa") -> None:
        super().__init__()
        if not 1 <= bits <= FULL:
            raise ValueError(f"bits is 1 to 32, not {bits}")
        if quantizer not in ACTIVATION_QUANTIZERS:
            raise ValueError(f"quantizer is one of {', '.join(ACTIVATION_QUANTIZERS)}, not {quantizer!r}")
        self.bits, self.quantizer = bits, quantizer

    def extra_repr(self) -> str:
        return f"bits={self.bits}, quantizer={self.quantizer}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return ACTIVATION_QUANTIZERS[self.quantizer](x, self.bits)


# -- shift-based batch normalisation and AdaMax (Courbariaux, Hubara et al. 2016, Algorithms 3-4) ----


class _AP2(torch.autograd.Function):
    """The power of two nearest ``x`` (in the log), with its sign; the gradient passed through."""

    @staticmethod
    def forward(ctx, x):
        return ap2(x)

    @staticmethod
    def backward(ctx, grad):
        return grad


def ap2(x: torch.Tensor) -> torch.Tensor:
    """``sign(x) · 2**round(log2|x|)``: a multiply by it is a shift (zero stays zero)."""
    magnitude = torch.exp2(torch.round(torch.log2(x.abs().clamp(min=1e-30))))
    return torch.where(x == 0, 0.0, torch.sign(x) * magnitude).to(x.dtype)


class ShiftBatchNorm(nn.modules.batchnorm._BatchNorm):
    """Shift-based batch normalisation (Algorithm 3): the variance from the centred inputs times
    their power-of-two approximations, the normalisation a shift by AP2 of 1/sqrt(var + eps), the
    scale a shift by AP2(γ). Running statistics as ``nn.BatchNorm``'s; any input rank (2-D or 4-D)."""

    def _check_input_dim(self, input: torch.Tensor) -> None:
        if input.dim() not in (2, 3, 4):
            raise ValueError(f"expected 2-D to 4-D input, got {input.dim()}-D")

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        self._check_input_dim(input)
        dims = [0, *range(2, input.dim())]
        shape = [1, -1, *([1] * (input.dim() - 2))]
        if self.training:
            mean = input.mean(dim=dims)
            centred = input - mean.view(shape)
            var = (centred * _AP2.apply(centred)).mean(dim=dims)
            with torch.no_grad():
                assert self.running_mean is not None and self.running_var is not None
                self.running_mean.lerp_(mean, self.momentum or 0.1)
                self.running_var.lerp_(var.clamp(min=0), self.momentum or 0.1)
        else:
            assert self.running_mean is not None and self.running_var is not None
            centred, var = input - self.running_mean.view(shape), self.running_var
        normalised = centred * _AP2.apply(torch.rsqrt(var.clamp(min=0) + self.eps)).view(shape)
        if self.affine:
            normalised = normalised * _AP2.apply(self.weight).view(shape) + self.bias.view(shape)
        return normalised


class ShiftAdaMax(torch.optim.Optimizer):
    """Shift-based AdaMax (Algorithm 4): AdaMax's update with its two multiplies replaced by shifts,
    the rate by AP2 of itself and 1/u by AP2 of 1/u."""

    def __init__(
        self, params: object, lr: float = 2.0**-10, betas: tuple[float, float] = (0.9, 0.999)
    ) -> None:
        super().__init__(params, {"lr": lr, "betas": betas})  # type: ignore[arg-type]

    @torch.no_grad()
    def step(self, closure: object = None) -> None:
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            for parameter in group["params"]:
                if parameter.grad is None:
                    continue
                state = self.state[parameter]
                if not state:
                    state["step"] = 0
                    state["m"] = torch.zeros_like(parameter)
                    state["u"] = torch.zeros_like(parameter)
                state["step"] += 1
                m, u = state["m"], state["u"]
                m.mul_(beta1).add_(parameter.grad, alpha=1 - beta1)
                torch.maximum(u * beta2, parameter.grad.abs(), out=u)
                rate = float(ap2(torch.tensor(group["lr"] / (1 - beta1 ** state["step"]))))
                parameter.sub_(rate * m * ap2(1.0 / u.clamp(min=1e-12)))


def clip_weights(module: nn.Module) -> None:
    """Clip the latent weights of every quantized or binary layer to [-1, 1] (BNN's Algorithm 1: a
    latent weight beyond ±1 no longer changes its sign's gradient)."""
    from papers_plugins.compression.binary import BinaryConv2d, BinaryLinear

    with torch.no_grad():
        for layer in module.modules():
            if isinstance(layer, BinaryConv2d | BinaryLinear | QuantConv2d | QuantLinear):
                layer.weight.clamp_(-1.0, 1.0)


__all__ = [
    "ACTIVATION_QUANTIZERS",
    "FULL",
    "QuantActivation",
    "QuantConv2d",
    "QuantLinear",
    "ShiftAdaMax",
    "ShiftBatchNorm",
    "ap2",
    "clip_weights",
    "dorefa_activation",
    "dorefa_weight",
    "frozen_dorefa_weight",
    "linear_activation",
    "linear_weight",
    "quantize_gradient",
    "quantize_unit",
]
