"""ENN layers built directly (e.g. as ``conv_cfg=dict(type='ENNConv2d')``)."""
from torch import nn

from .convert import _ENN_CLASSES, register_eigenbasis

__all__ = ['ENNConv2d', 'ENNLinear']


class ENNConv2d(nn.Conv2d):
    """``nn.Conv2d`` whose weight is ``Q·diag(λ)·Pᵀ`` per group.

    Takes exactly the arguments of ``nn.Conv2d``. The weight is drawn by the
    usual initializer and then factored by SVD, so at construction the layer
    computes what a freshly initialized ``nn.Conv2d`` computes. ``self.weight``
    is the materialized ``W``; assigning to it re-factors by SVD.

    Args:
        *args: Positional arguments of ``nn.Conv2d``.
        **kwargs: Keyword arguments of ``nn.Conv2d``.
    """

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        register_eigenbasis(self)


class ENNLinear(nn.Linear):
    """``nn.Linear`` whose weight is ``Q·diag(λ)·Pᵀ`` (see :class:`ENNConv2d`).

    Args:
        *args: Positional arguments of ``nn.Linear``.
        **kwargs: Keyword arguments of ``nn.Linear``.
    """

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        register_eigenbasis(self)


_ENN_CLASSES.update({ENNConv2d: nn.Conv2d, ENNLinear: nn.Linear})
