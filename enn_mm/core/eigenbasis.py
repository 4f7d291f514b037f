"""The eigenbasis parametrization ``W = Q · diag(λ) · Pᵀ``.

It is a ``torch.nn.utils.parametrize`` parametrization: registered on a
layer's ``weight``, it replaces the dense tensor by three trainable tensors
and recomputes ``W`` whenever the layer reads ``self.weight``. Any layer whose
forward reads its weight through the attribute therefore works unchanged.

Shapes, with ``g`` groups (1 for Linear and ordinary convs; a grouped or
depthwise conv factors each group's kernel separately, batched)::

    Q: (g, d_out, r)    λ: (g, r)    P: (g, d_in, r)    r = min(d_out, d_in)

where ``d_out = out_channels / g`` and ``d_in = in_channels / g · prod(kernel)``.

``P`` is kept in the memory layout of ``Pᵀ`` (strides ``(r·d_in, 1, d_in)``):
``Pᵀ`` is then the contiguous ``(g·r, in_channels / g, *kernel)`` kernel of the
factored forward's first conv, and ``W = (Q·diag(λ))·Pᵀ`` multiplies
contiguous operands, so neither the forward nor the gradient's way back into
``P`` copies a transposed basis. Optimizer state, checkpoints, ``to()`` and
``deepcopy`` keep the layout (PyTorch preserves a dense tensor's strides);
the values are those of ``P`` whatever the layout.
"""
import math
from typing import Dict, Iterator, Optional, Sequence, Set, Tuple

import torch
from torch import Tensor, nn
from torch.nn.utils import parametrize

__all__ = ['Eigenbasis', 'factorize', 'is_enn', 'enn_modules', 'factors', 'eigenbasis',
           'factor_names']


def factorize(weight: Tensor, groups: int = 1) -> Tuple[Tensor, Tensor, Tensor]:
    """Economy SVD of a dense weight, per group.

    Args:
        weight (Tensor): A weight of shape ``(out, in/groups, *kernel)`` or
            ``(out, in)``.
        groups (int): Number of groups the output dimension splits into.

    Returns:
        tuple: ``(Q, λ, P)`` with ``Q·diag(λ)·Pᵀ`` equal to ``weight`` per
        group, in the dtype of ``weight`` (the SVD itself runs in fp64 so
        the reconstruction error stays at the rounding level). ``P`` is
        stored as the transpose of a contiguous ``(g, r, d_in)`` tensor
        (see :class:`Eigenbasis`).

    Raises:
        ValueError: ``weight.shape[0]`` is not divisible by ``groups``.
    """
    out = weight.shape[0]
    if out % groups:
        raise ValueError(f'out dimension {out} is not divisible by groups={groups}')
    w = weight.detach().reshape(groups, out // groups, -1)
    # fp64 SVD: conversion is one-off, and it keeps the reconstruction at the
    # fp32 rounding level even for large layers.
    work = w.double()
    U, S, Vh = torch.linalg.svd(work, full_matrices=False)
    return (U.to(weight.dtype).contiguous(), S.to(weight.dtype).contiguous(),
            Vh.to(weight.dtype).contiguous().transpose(1, 2))


class Eigenbasis(nn.Module):
    """Parametrization ``(Q, λ, P) -> W`` for a weight of a fixed shape.

    It is also the one place where a layer's ENN options live (reach it with
    :func:`eigenbasis`); the functions named below set them.

    Args:
        shape (Sequence[int]): Shape of the dense weight it stands for.
        groups (int): Groups of the layer; one basis pair per group.

    Attributes:
        compute (str): How the layer computes its output: ``'auto'``
            (default), ``'materialize'`` or ``'factored'``
            (:func:`enn_mm.core.set_compute`).
        share (tuple, optional): ``(group name, 'P' | 'Q' | 'PQ')`` when
            the layer shares bases with others of its group
            (:func:`enn_mm.core.share_bases`), else None.
        retract_interval (int): Optimizer steps between QR retractions of
            the layer's Q and P (:func:`enn_mm.core.enable_retraction`); 0,
            the default, for none. A basis shared by several layers follows
            the layer ``enable_retraction`` saw last. A copy (``deepcopy``)
            starts at 0: its bases are new Parameters the retraction hook
            does not know, so it does not retract until
            ``enable_retraction`` is called on it.
    """

    def __init__(self, shape: Sequence[int], groups: int = 1) -> None:
        super().__init__()
        self.shape = torch.Size(shape)
        self.groups = groups
        self.d_out = self.shape[0] // groups
        self.d_in = math.prod(self.shape[1:])
        self.rank = min(self.d_out, self.d_in)
        self.compute: str = 'auto'
        self.share: Optional[Tuple[str, str]] = None
        self.retract_interval: int = 0

    def __getstate__(self):
        # deepcopy goes through here. The retraction hook finds a basis by its
        # Parameter object (enn_mm/core/ortho.py), and a copy's are new ones,
        # so a copy does not retract (torch's Parameter.__deepcopy__ never
        # carried the former per-Parameter setting either); its interval
        # says so rather than claiming the original's.
        state = self.__dict__.copy()
        state['retract_interval'] = 0
        return state

    def forward(self, Q: Tensor, lam: Tensor, P: Tensor) -> Tensor:
        """Materialize ``W = Q·diag(λ)·Pᵀ`` per group, in fp32 under autocast.

        Args:
            Q (Tensor): Output bases, ``(g, d_out, r)``.
            lam (Tensor): Spectra, ``(g, r)``.
            P (Tensor): Input bases, ``(g, d_in, r)``.

        Returns:
            Tensor: The dense weight, of shape :attr:`shape`.
        """
        # Materialize in fp32 even under autocast: a bf16 product of the factors
        # would lose the precision the factorization is meant to keep. The layer
        # casts W itself afterwards, as autocast does for a dense weight.
        dev = Q.device.type
        if torch.is_autocast_enabled(dev):
            with torch.autocast(dev, enabled=False):
                return self.forward(Q.float(), lam.float(), P.float())
        return torch.matmul(Q * lam.unsqueeze(1), P.transpose(1, 2)).reshape(self.shape)

    @torch.no_grad()
    def right_inverse(self, weight: Tensor) -> Tuple[Tensor, Tensor, Tensor]:
        """Factor a dense weight into ``(Q, λ, P)`` (:func:`factorize`).

        Called by ``parametrize`` when the parametrization is registered and
        when ``weight`` is assigned to.

        Args:
            weight (Tensor): A dense weight of shape :attr:`shape`.

        Returns:
            tuple: ``(Q, λ, P)`` with ``Q·diag(λ)·Pᵀ`` equal to ``weight``.

        Raises:
            ValueError: ``weight`` does not have shape :attr:`shape`.
        """
        if weight.shape != self.shape:
            raise ValueError(f'expected a weight of shape {tuple(self.shape)}, '
                             f'got {tuple(weight.shape)}')
        return factorize(weight, self.groups)

    def extra_repr(self) -> str:
        return (f'shape={tuple(self.shape)}, groups={self.groups}, '
                f'rank={self.rank}')


# The basic lookups, next to the parametrization they look for: every other
# core module builds on these and on nothing above them.
def is_enn(module: nn.Module) -> bool:
    """Whether ``module.weight`` is parametrized by an :class:`Eigenbasis`.

    Args:
        module (nn.Module): Any module.

    Returns:
        bool: True for an ENN layer.
    """
    return (parametrize.is_parametrized(module, 'weight')
            and isinstance(module.parametrizations.weight[0], Eigenbasis))


def enn_modules(model: nn.Module) -> Iterator[Tuple[str, nn.Module]]:
    """Yield ``(name, module)`` for every ENN layer of ``model``.

    Args:
        model (nn.Module): Any module; it is included itself if it is an ENN
            layer (name ``''``).

    Yields:
        tuple: ``(name, module)`` in ``model.named_modules()`` order.
    """
    for name, module in model.named_modules():
        if is_enn(module):
            yield name, module


def factors(module: nn.Module) -> Tuple[Tensor, Tensor, Tensor]:
    """The trainable ``(Q, λ, P)`` of an ENN layer.

    Args:
        module (nn.Module): An ENN layer (see :func:`is_enn`).

    Returns:
        tuple: The Parameters ``(Q, λ, P)`` (``original0`` to ``original2``
        of ``module.parametrizations.weight``), not copies.
    """
    p = module.parametrizations.weight
    return p.original0, p.original1, p.original2


def eigenbasis(module: nn.Module) -> Eigenbasis:
    """The :class:`Eigenbasis` of an ENN layer: its shape, rank and options.

    Args:
        module (nn.Module): An ENN layer.

    Returns:
        Eigenbasis: The layer's parametrization object.

    Raises:
        TypeError: ``module`` is not an ENN layer.
    """
    if not is_enn(module):
        raise TypeError(f'{type(module).__name__} is not an ENN layer (its weight has no '
                        'Eigenbasis parametrization).')
    return module.parametrizations.weight[0]


def factor_names(model: nn.Module, suffix: bool = False) -> Dict[str, Set[str]]:
    """The parameter names of the ENN factors of ``model``.

    The factors are found by identity through :func:`factors`, so the names
    are those of exactly the Q and P (``'basis'``) and λ (``'spectrum'``)
    Parameters.

    Args:
        model (nn.Module): Any module.
        suffix (bool): If False, full names as
            ``model.named_parameters(remove_duplicate=False)`` gives them (a
            shared basis under every layer that holds it). If True, each
            factor's name below its layer's ``parametrizations``, with a
            leading dot (``'.weight.original0'``): the part of the full name
            that is the same in every ENN layer.

    Returns:
        dict: ``{'basis': set of names, 'spectrum': set of names}``.
    """
    names: Dict[str, Set[str]] = {'basis': set(), 'spectrum': set()}
    role = {}
    for _, module in enn_modules(model):
        Q, lam, P = factors(module)
        role.update({id(Q): 'basis', id(P): 'basis', id(lam): 'spectrum'})
        if suffix:
            for name, param in module.parametrizations.named_parameters(remove_duplicate=False):
                if param is Q or param is P or param is lam:
                    names[role[id(param)]].add('.' + name)
    if not suffix:
        for name, param in model.named_parameters(remove_duplicate=False):
            if id(param) in role:
                names[role[id(param)]].add(name)
    return names
