"""Local objectives: what each ENN-ℓ block minimizes besides its penalty.

An objective is an ``nn.Module`` built per block as
``cls(in_shape, num_classes, input_shape, **options)`` and called as
``objective(z, target, logits, image, loss_module)``:

- ``z``: the block's output (its gradient stays inside the block);
- ``target``: labels ``(N,)`` or soft scores ``(N, C)``;
- ``logits``: the block's local head on ``z``;
- ``image``: the network input after the data preprocessor (what the
  reconstruction objective rebuilds);
- ``loss_module``: the classification loss (the model head's, or the
  classifier's ``loss=``).

A block's loss is ``Σ_j w_j(k) · objective_j`` plus its orthogonality
penalty. Each objective's weight ``w_j(k)`` is a number, one number per local
block, or ``dict(start=a, end=b)``: linear in the block index from the first
local block to the last (InfoPro lowers the reconstruction weight and raises
the classification weight with depth). A block whose weight is 0 builds no
module for that objective.

Registered in MMPretrain's ``MODELS`` with short aliases:

==================  ===============================  ==========================
alias               registered name                  what it is
==================  ===============================  ==========================
``classification``  ``ENNClassificationObjective``   the loss of the local head
``reconstruction``  ``ENNReconstructionObjective``   InfoPro: a decoder rebuilds
                                                     the input image, MSE
``similarity``      ``ENNSimilarityObjective``       PredSim: the batch's feature
                                                     cosine-similarity matrix
                                                     matches the label one, MSE
==================  ===============================  ==========================
"""
import inspect
from typing import List, Optional, Sequence, Union

import torch.nn.functional as F
from torch import Tensor, nn

from mmpretrain.registry import MODELS
from .heads import module_class

__all__ = ['ClassificationObjective', 'ReconstructionObjective', 'SimilarityObjective',
           'OBJECTIVE_TYPES', 'block_weights', 'build_objectives', 'similarity_matrix']

Weight = Union[float, Sequence[float], dict]


def block_weights(weight: Weight, num_local: int, name: str) -> List[float]:
    """One weight per local block from a number, a list or ``dict(start, end)``."""
    if isinstance(weight, (int, float)):
        return [float(weight)] * num_local
    if isinstance(weight, dict):
        unknown = set(weight) - {'start', 'end'}
        if unknown or not {'start', 'end'} <= set(weight):
            raise KeyError(f'{name}: a weight schedule is dict(start=..., end=...), got '
                           f'{dict(weight)}.')
        a, b = float(weight['start']), float(weight['end'])
        if num_local == 1:
            return [a]
        return [a + (b - a) * k / (num_local - 1) for k in range(num_local)]
    weight = [float(w) for w in weight]
    if len(weight) != num_local:
        raise ValueError(f'{name}: {len(weight)} weights for {num_local} local blocks; give a '
                         'number, one per local block, or dict(start=..., end=...).')
    return weight


@MODELS.register_module(name='ENNClassificationObjective')
class ClassificationObjective(nn.Module):
    """The classification loss of the block's local head (the paper's)."""
    uses = ('logits', )

    def __init__(self, in_shape, num_classes, input_shape):
        super().__init__()

    def forward(self, z, target, logits, image, loss_module) -> Tensor:
        return loss_module(logits, target, avg_factor=logits.size(0))


@MODELS.register_module(name='ENNReconstructionObjective')
class ReconstructionObjective(nn.Module):
    """InfoPro's information-preserving term: rebuild the input from ``z``.

    The decoder upsamples ``z`` (bilinear) to ``size``, then
    conv3×3-BN-ReLU-conv3×3 to the input's channels; the loss is the mean
    squared error against the preprocessed input at that size (average-pooled
    when ``size`` is smaller than the input).

    Args:
        in_shape (Sequence[int]): ``(C, H, W)`` of the block output.
        num_classes (int): Unused.
        input_shape (Sequence[int]): ``(C, H, W)`` of the network input.
        size (int | tuple, optional): Decoder resolution. Defaults to the
            input's.
        hidden (int): Channels of the decoder's hidden conv. Defaults to 12
            (InfoPro's).
    """
    uses = ('image', )

    def __init__(self, in_shape, num_classes, input_shape, size=None, hidden: int = 12):
        super().__init__()
        if len(input_shape) != 3:
            raise ValueError(f'the reconstruction objective rebuilds an image, but the network '
                             f'input is {tuple(input_shape)}, not (C, H, W); use the '
                             'similarity or classification objective.')
        if len(in_shape) != 3:
            raise ValueError(f'the reconstruction objective decodes a (C, H, W) feature map, '
                             f'got a feature of shape {tuple(in_shape)}; use the similarity '
                             'or classification objective on this block.')
        size = input_shape[1:] if size is None else size
        self.size = (size, size) if isinstance(size, int) else tuple(size)
        if self.size[0] > input_shape[1] or self.size[1] > input_shape[2]:
            raise ValueError(f'reconstruction size {self.size} is larger than the input '
                             f'{tuple(input_shape[1:])}.')
        self.decoder = nn.Sequential(
            nn.Conv2d(in_shape[0], hidden, 3, 1, 1, bias=False), nn.BatchNorm2d(hidden),
            nn.ReLU(inplace=True), nn.Conv2d(hidden, input_shape[0], 3, 1, 1))

    def target(self, image: Tensor) -> Tensor:
        """The preprocessed input at the decoder's resolution."""
        if tuple(image.shape[-2:]) == self.size:
            return image
        return F.adaptive_avg_pool2d(image, self.size)

    def decode(self, z: Tensor) -> Tensor:
        if tuple(z.shape[-2:]) != self.size:
            z = F.interpolate(z, size=self.size, mode='bilinear', align_corners=False)
        return self.decoder(z)

    def forward(self, z, target, logits, image, loss_module) -> Tensor:
        if image is None:
            raise RuntimeError('the reconstruction objective needs the network input.')
        return F.mse_loss(self.decode(z), self.target(image).to(z.dtype))


def similarity_matrix(x: Tensor) -> Tensor:
    """Cosine similarity of the centred rows of ``x`` (flattened per sample),
    clamped to [-1, 1] (PredSim's)."""
    x = x.flatten(1)
    x = x - x.mean(dim=1, keepdim=True)
    x = x / (1e-8 + x.norm(dim=1, keepdim=True))
    return (x @ x.t()).clamp(-1, 1)


@MODELS.register_module(name='ENNSimilarityObjective')
class SimilarityObjective(nn.Module):
    """PredSim's similarity matching: a conv3×3 on ``z`` (average-pooled down
    to at most ``max_features`` numbers per sample), whose batch similarity
    matrix is pulled to the labels' (MSE).

    Args:
        in_shape (Sequence[int]): Feature shape of the block output.
        num_classes (int): Number of classes (for one-hot labels).
        input_shape (Sequence[int]): Unused.
        max_features (int): Largest feature per sample after pooling.
            Defaults to 2048 (PredSim's).
    """
    uses = ()

    def __init__(self, in_shape, num_classes, input_shape, max_features: int = 2048):
        super().__init__()
        self.num_classes = num_classes
        self.conv, self.pool = None, None
        if len(in_shape) == 3:
            c, h, w = in_shape
            self.conv = nn.Conv2d(c, c, 3, 1, 1)
            side = h
            while c * side * side > max_features and side > 1:
                side = (side + 1) // 2
            self.pool = (side, side) if side != h or w != h else None

    def forward(self, z, target, logits, image, loss_module) -> Tensor:
        h = z
        if self.conv is not None:
            h = self.conv(z)
            if self.pool is not None:
                h = F.adaptive_avg_pool2d(h, self.pool)
        y = target if target.dim() > 1 else F.one_hot(target, self.num_classes)
        return F.mse_loss(similarity_matrix(h.float()), similarity_matrix(y.float()))


OBJECTIVE_TYPES = {
    'classification': ClassificationObjective,
    'reconstruction': ReconstructionObjective,
    'similarity': SimilarityObjective,
}
DEFAULT_OBJECTIVES = (dict(type='classification', weight=1.0), )


def build_objectives(cfgs: Optional[Sequence[dict]], shapes: Sequence[tuple],
                     num_classes: int, input_shape: Sequence[int]):
    """Build every local block's objectives.

    Args:
        cfgs (list[dict], optional): ``dict(type=..., weight=..., **options)``
            each. Defaults to the classification loss alone, weight 1.
        shapes (list[tuple]): The output shape of each local block.
        num_classes (int): Number of classes.
        input_shape (tuple): ``(C, H, W)`` of the network input.

    Returns:
        tuple: ``(names, weights, modules)``: the objectives' aliases, a
        ``[block][objective]`` weight table and an ``nn.ModuleDict`` keyed
        ``block{k}`` holding, per objective, the module (``nn.Identity``
        where its weight is 0).
    """
    cfgs = list(DEFAULT_OBJECTIVES if cfgs is None else cfgs)
    if isinstance(cfgs, dict) or not cfgs or not all(isinstance(c, dict) for c in cfgs):
        raise TypeError('local_objectives is a non-empty list of dicts, e.g. '
                        "[dict(type='classification'), dict(type='reconstruction', "
                        'weight=dict(start=1.0, end=0.0))].')
    num_local = len(shapes)
    names, weights, per_block = [], [[] for _ in shapes], [nn.ModuleList() for _ in shapes]
    for cfg in cfgs:
        cfg = dict(cfg)
        kind = cfg.pop('type', None)
        cls = module_class(kind, OBJECTIVE_TYPES, 'local objective')
        name = kind if isinstance(kind, str) else cls.__name__
        if name in names:
            raise ValueError(f'local objective {name!r} is listed twice.')
        names.append(name)
        w = block_weights(cfg.pop('weight', 1.0), num_local, f'local objective {name!r}')
        try:  # (one block, no local one: nothing to build, the options still checked)
            inspect.signature(cls).bind(shapes[0] if shapes else (), num_classes,
                                        tuple(input_shape), **cfg)
        except TypeError as e:
            raise TypeError(f'local objective {name!r}: {e}. Its options are '
                            f'{list(inspect.signature(cls).parameters)[3:]} and weight.') from None
        for k, shape in enumerate(shapes):
            weights[k].append(w[k])
            per_block[k].append(cls(tuple(shape), num_classes, tuple(input_shape), **cfg)
                                if w[k] != 0 else nn.Identity())
    modules = nn.ModuleDict({f'block{k}': m for k, m in enumerate(per_block)})
    return names, weights, modules
