"""The forward of an ENN layer: build ``W`` or apply the factors, whichever is cheaper.

An ENN layer can compute its output two ways. *Materialized*: build
``W = Q·diag(λ)·Pᵀ`` (``d_out·r·d_in`` multiply-adds per group, independent of
the batch), then run the ordinary conv/linear (``N·d_out·d_in``, with ``N``
output positions: batch × output pixels, or batch × tokens). *Factored*: a
conv/linear with the ``r`` kernels of ``Pᵀ`` (same stride, padding, dilation,
groups), a scale by λ and a 1×1 conv/linear with ``Q`` (``N·r·(d_in + d_out)``).
Both are the same linear map. Materializing wins when ``N`` is large against
the layer (early, high-resolution layers); the factored form wins in late,
wide layers at small spatial size, where building ``W`` costs more than the
conv itself. ``'auto'`` picks the cheaper by that count on every call (the
backward pass scales the same way).
"""
import math

import torch.nn.functional as F
from torch import Tensor, nn

from .eigenbasis import eigenbasis, enn_modules

__all__ = ['COMPUTE_MODES', 'enn_forward', 'set_compute', 'output_positions']

COMPUTE_MODES = ('auto', 'materialize', 'factored')
_CONV = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}
# Layers whose forward is torch's own: a subclass with a forward of its own
# (e.g. mmcv's adaptive-padding conv) may do more than conv(x, W), so it
# always builds W and runs its own code.
_PLAIN_FORWARDS = {nn.Conv1d.forward, nn.Conv2d.forward, nn.Conv3d.forward, nn.Linear.forward}


def output_positions(module: nn.Module, x: Tensor) -> int:
    """``N``: output positions of ``module`` on ``x`` (batch included).

    Args:
        module (nn.Module): A Linear or Conv1d/2d/3d layer.
        x (Tensor): Its input.

    Returns:
        int: For Linear, ``x.numel() / in_features``; for a conv, the batch
        size times the number of output pixels its padding, dilation and
        stride give.
    """
    if isinstance(module, nn.Linear):
        return x.numel() // max(module.in_features, 1)
    dims = len(module.kernel_size)
    spatial = x.shape[-dims:]
    batch = x.numel() // max(math.prod(spatial) * module.in_channels, 1)
    if module.padding == 'same':
        return batch * math.prod(spatial)
    pad = (0,) * dims if module.padding == 'valid' else module.padding
    out = [(s + 2 * p - d * (k - 1) - 1) // st + 1 for s, p, d, k, st in
           zip(spatial, pad, module.dilation, module.kernel_size, module.stride)]
    return batch * math.prod(max(o, 0) for o in out)


def _factored_is_cheaper(eig, n: int) -> bool:
    d_in, d_out, r = eig.d_in, eig.d_out, eig.rank
    return n * r * (d_in + d_out) < n * d_out * d_in + d_out * r * d_in


def _factored(module: nn.Module, x: Tensor, n: int, Q: Tensor, lam: Tensor,
              P: Tensor) -> Tensor:
    g, d_out, r = Q.shape
    # λ scales whichever is smaller: the r-channel intermediate (n·r values
    # per group) or Q (d_out·r); its gradient costs the same as the product.
    scale_y = n < d_out
    if isinstance(module, nn.Linear):
        y = x @ P[0]
        if scale_y:
            return F.linear(y * lam[0], Q[0], module.bias)
        return F.linear(y, Q[0] * lam[0], module.bias)
    dims = len(module.kernel_size)
    conv = _CONV[dims]
    # Pᵀ as g·r kernels over the layer's own input window: a view of P's
    # storage (see enn_mm/core/eigenbasis.py), copied only for a P of
    # another layout
    k1 = P.transpose(1, 2).reshape(g * r, module.in_channels // g, *module.kernel_size)
    y = conv(x, k1, None, module.stride, module.padding, module.dilation, g)
    ones = [1] * dims
    if scale_y:
        y = y * lam.reshape(1, g * r, *ones)
        k2 = Q.reshape(g * d_out, r, *ones)
    else:
        k2 = (Q * lam.unsqueeze(1)).reshape(g * d_out, r, *ones)
    return conv(y, k2, module.bias, 1, 0, 1, g)


def enn_forward(self: nn.Module, x: Tensor) -> Tensor:
    """Forward of an ENN Conv/Linear layer (bound to the instance).

    Runs the layer's own class forward on the materialized ``W`` in
    ``'materialize'`` mode, for layers whose class has a forward of its own,
    for convs with a non-zero padding mode, and in ``'auto'`` mode when the
    factored form is not cheaper for ``x``; else applies the factors.

    Args:
        self (nn.Module): The ENN layer.
        x (Tensor): Its input.

    Returns:
        Tensor: The layer's output (the same linear map either way).
    """
    eig = self.parametrizations.weight[0]
    mode = eig.compute
    dense = type(self).forward
    if mode == 'materialize' or dense not in _PLAIN_FORWARDS or (
            isinstance(self, nn.modules.conv._ConvNd) and self.padding_mode != 'zeros'):
        return dense(self, x)
    n = output_positions(self, x)
    if mode == 'auto' and not _factored_is_cheaper(eig, n):
        return dense(self, x)
    p = self.parametrizations.weight
    return _factored(self, x, n, p.original0, p.original1, p.original2)


def set_compute(model: nn.Module, mode: str) -> nn.Module:
    """Choose how the ENN layers of ``model`` compute: ``'auto'`` (default:
    the cheaper of the two per call), ``'materialize'`` or ``'factored'``.
    Layers with a forward of their own (not torch's Conv/Linear forward)
    and convs with non-zero padding modes always materialize.

    Args:
        model (nn.Module): The model; the mode is set on each of its ENN
            layers (:attr:`Eigenbasis.compute`).
        mode (str): One of :data:`COMPUTE_MODES`.

    Returns:
        nn.Module: ``model`` itself.

    Raises:
        ValueError: ``mode`` is not one of :data:`COMPUTE_MODES`.
    """
    if mode not in COMPUTE_MODES:
        raise ValueError(f'unknown ENN compute mode {mode!r}; choose one of {COMPUTE_MODES}.')
    for _, module in enn_modules(model):
        eigenbasis(module).compute = mode
    return model
