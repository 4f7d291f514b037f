"""Local heads: what predicts the label from a block's output in training.

Three kinds, chosen by ``type``:

- ``frozen_linear``: a fixed random linear map of the flattened feature map
  (the authors' head). It is stored as buffers: checkpointed, never trained.
  It grows with the feature map, hence the parameter budget.
- ``pool_linear``: global average pooling, then a trainable linear layer.
- ``conv_aux``: conv-BN-ReLU, global pooling, linear (an InfoPro/DGL style
  auxiliary net), trainable.

A feature is ``(N, C, H, W)`` (pooled over ``H, W``), ``(N, L, C)`` tokens
(pooled over ``L``) or ``(N, C)``.
"""
import math
from typing import Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ['FrozenLinearHead', 'PoolLinearHead', 'ConvAuxHead', 'build_local_head',
           'HEAD_TYPES']


def _pool(x: Tensor) -> Tensor:
    if x.dim() == 4:
        return x.mean(dim=(2, 3))
    if x.dim() == 3:
        return x.mean(dim=1)
    return x.flatten(1)


def _channels(shape: Tuple[int, ...]) -> int:
    # (C, H, W) -> C ; (L, C) tokens -> C ; (C,) -> C
    return shape[0] if len(shape) in (1, 3) else shape[-1]


class FrozenLinearHead(nn.Module):
    """A fixed random ``nn.Linear`` on the flattened feature.

    Initialised as ``nn.Linear`` is (uniform, bound ``1/sqrt(in_features)``);
    weight and bias are buffers, so no optimizer ever sees them.
    """

    def __init__(self, in_shape: Sequence[int], num_classes: int):
        super().__init__()
        in_features = math.prod(in_shape)
        bound = 1 / math.sqrt(in_features)
        weight = torch.empty(num_classes, in_features).uniform_(-bound, bound)
        self.register_buffer('weight', weight)
        self.register_buffer('bias', torch.empty(num_classes).uniform_(-bound, bound))

    @staticmethod
    def num_params(in_shape, num_classes, **kwargs) -> int:
        return (math.prod(in_shape) + 1) * num_classes

    def forward(self, x: Tensor) -> Tensor:
        return F.linear(x.flatten(1), self.weight, self.bias)


class PoolLinearHead(nn.Module):
    """Global average pooling, then an ``nn.Linear``.

    Args:
        in_shape (Sequence[int]): Feature shape without the batch dimension.
        num_classes (int): Number of classes.
        frozen (bool): Keep the linear map at its random initialization
            (as the authors' heads are): no gradients and no optimizer state
            for it, which matters with many classes (1000 classes × the
            channels of every block). Defaults to False.
    """

    def __init__(self, in_shape: Sequence[int], num_classes: int, frozen: bool = False):
        super().__init__()
        self.fc = nn.Linear(_channels(tuple(in_shape)), num_classes)
        self.fc.requires_grad_(not frozen)

    @staticmethod
    def num_params(in_shape, num_classes, **kwargs) -> int:
        return (_channels(tuple(in_shape)) + 1) * num_classes

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(_pool(x))


class ConvAuxHead(nn.Module):
    """conv(k×k)-BN-ReLU, global average pooling, ``nn.Linear``.

    Args:
        in_shape (Sequence[int]): ``(C, H, W)`` of the block output.
        num_classes (int): Number of classes.
        channels (int, optional): Conv output channels. Defaults to ``C``.
        kernel_size (int): Conv kernel size. Defaults to 3.
        stride (int): Conv stride (2 quarters the head's compute on large
            maps). Defaults to 1.
    """

    def __init__(self, in_shape: Sequence[int], num_classes: int, channels: int = None,
                 kernel_size: int = 3, stride: int = 1):
        super().__init__()
        if len(in_shape) != 3:
            raise ValueError(f'conv_aux local head needs (C, H, W) feature maps, got a '
                             f'feature of shape {tuple(in_shape)}; use pool_linear.')
        c = in_shape[0]
        channels = channels or c
        self.conv = nn.Conv2d(c, channels, kernel_size, stride, kernel_size // 2, bias=False)
        self.bn = nn.BatchNorm2d(channels)
        self.fc = nn.Linear(channels, num_classes)

    @staticmethod
    def num_params(in_shape, num_classes, channels=None, kernel_size=3, **kwargs) -> int:
        c = in_shape[0]
        channels = channels or c
        return c * channels * kernel_size**2 + 2 * channels + (channels + 1) * num_classes

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(_pool(F.relu(self.bn(self.conv(x)))))


HEAD_TYPES = {
    'frozen_linear': FrozenLinearHead,
    'pool_linear': PoolLinearHead,
    'conv_aux': ConvAuxHead,
}


def build_local_head(cfg: dict, in_shape: Sequence[int], num_classes: int,
                     max_params: int, where: str) -> nn.Module:
    """Build one local head, refusing it if it is over the parameter budget.

    Args:
        cfg (dict): ``dict(type=<one of HEAD_TYPES>, **options)``.
        in_shape (Sequence[int]): Feature shape without the batch dimension.
        num_classes (int): Number of classes.
        max_params (int): Largest allowed number of head parameters (frozen
            ones included: they take memory all the same).
        where (str): The block, for error messages.
    """
    cfg = dict(cfg)
    kind = cfg.pop('type', None)
    if kind not in HEAD_TYPES:
        raise KeyError(f'unknown local head type {kind!r}; choose one of {sorted(HEAD_TYPES)}.')
    cls = HEAD_TYPES[kind]
    n = cls.num_params(tuple(in_shape), num_classes, **cfg)
    if n > max_params:
        raise ValueError(
            f'the {kind} local head of {where} on its {tuple(in_shape)} output '
            f'would have {n:,} parameters, over the budget max_head_params='
            f'{max_params:,}. Use local_head=dict(type=\'pool_linear\') or '
            '\'conv_aux\', a smaller input size, or raise max_head_params.')
    return cls(tuple(in_shape), num_classes, **cfg)
