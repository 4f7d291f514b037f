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

Registered in MMPretrain's ``MODELS`` under their class names; a config
names them, e.g. ``dict(type='ENNReconstructionObjective', weight=0.5)``. In
logs (``block{k}.loss_<log name>``) and ``local_objective_names`` an
objective goes by its class's own ``log_name`` attribute, else by its
registered name:

===============================  ==================  =========================
registered name                  log name            what it is
===============================  ==================  =========================
``ENNClassificationObjective``   ``classification``  the loss of the local head
``ENNReconstructionObjective``   ``reconstruction``  InfoPro: a decoder rebuilds
                                                     the input image, MSE
``ENNSimilarityObjective``       ``similarity``      PredSim: the batch's feature
                                                     cosine-similarity matrix
                                                     matches the label one, MSE
===============================  ==================  =========================
"""
import inspect
from typing import List, Optional, Sequence, Union

import torch.nn.functional as F
from mmpretrain.registry import MODELS
from torch import Tensor, nn

from .heads import registered_class

__all__ = ['ENNClassificationObjective', 'ENNReconstructionObjective', 'ENNSimilarityObjective',
           'block_weights', 'build_objectives', 'log_name', 'similarity_matrix']

Weight = Union[float, Sequence[float], dict]


def block_weights(weight: Weight, num_local: int, name: str) -> List[float]:
    """One weight per local block from a number, a list or ``dict(start, end)``.

    Args:
        weight (float | Sequence[float] | dict): A number (the same for every
            local block), one number per local block, or
            ``dict(start=a, end=b)``: linear from ``a`` at the first local
            block to ``b`` at the last (``a`` alone with one local block).
        num_local (int): Number of local blocks.
        name (str): The objective, for error messages.

    Returns:
        list[float]: ``num_local`` weights.

    Raises:
        KeyError: A dict that does not have exactly the keys ``start`` and
            ``end``.
        ValueError: A list whose length is not ``num_local``.
    """
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


@MODELS.register_module()
class ENNClassificationObjective(nn.Module):
    """The classification loss of the block's local head (the paper's).

    Args:
        in_shape (Sequence[int]): Unused.
        num_classes (int): Unused.
        input_shape (Sequence[int]): Unused.
    """
    uses = ('logits', )
    log_name = 'classification'

    def __init__(self, in_shape, num_classes, input_shape):
        super().__init__()

    def forward(self, z, target, logits, image, loss_module) -> Tensor:
        """The classification loss of the local head's logits.

        Args:
            z (Tensor): The block's output (unused).
            target (Tensor): Labels ``(N,)`` or soft scores ``(N, C)``.
            logits (Tensor): The local head's logits ``(N, C)``.
            image (Tensor | None): The network input (unused).
            loss_module (nn.Module): The classification loss, called as
                ``loss_module(logits, target, avg_factor=N)``.

        Returns:
            Tensor: The loss.
        """
        return loss_module(logits, target, avg_factor=logits.size(0))


@MODELS.register_module()
class ENNReconstructionObjective(nn.Module):
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

    Raises:
        ValueError: ``input_shape`` or ``in_shape`` is not ``(C, H, W)``, or
            ``size`` is larger than the input.
    """
    uses = ('image', )
    log_name = 'reconstruction'

    def __init__(self, in_shape, num_classes, input_shape, size=None, hidden: int = 12):
        super().__init__()
        if len(input_shape) != 3:
            raise ValueError(f'ENNReconstructionObjective rebuilds an image, but the network '
                             f'input is {tuple(input_shape)}, not (C, H, W); use '
                             'ENNSimilarityObjective or ENNClassificationObjective.')
        if len(in_shape) != 3:
            raise ValueError(f'ENNReconstructionObjective decodes a (C, H, W) feature map, '
                             f'got a feature of shape {tuple(in_shape)}; use '
                             'ENNSimilarityObjective or ENNClassificationObjective on this '
                             'block.')
        size = input_shape[1:] if size is None else size
        self.size = (size, size) if isinstance(size, int) else tuple(size)
        if self.size[0] > input_shape[1] or self.size[1] > input_shape[2]:
            raise ValueError(f'ENNReconstructionObjective: size {self.size} is larger than '
                             f'the input {tuple(input_shape[1:])}.')
        self.decoder = nn.Sequential(
            nn.Conv2d(in_shape[0], hidden, 3, 1, 1, bias=False), nn.BatchNorm2d(hidden),
            nn.ReLU(inplace=True), nn.Conv2d(hidden, input_shape[0], 3, 1, 1))

    def target(self, image: Tensor) -> Tensor:
        """The preprocessed input at the decoder's resolution.

        Args:
            image (Tensor): The network input ``(N, C, H, W)`` after the data
                preprocessor.

        Returns:
            Tensor: ``image`` itself if it is already ``size``, else
            ``image`` adaptive-average-pooled to ``size``.
        """
        if tuple(image.shape[-2:]) == self.size:
            return image
        return F.adaptive_avg_pool2d(image, self.size)

    def decode(self, z: Tensor) -> Tensor:
        """Rebuild the input from ``z``.

        Args:
            z (Tensor): The block's output ``(N, C, H, W)``; upsampled
                (bilinear) to ``size`` if it is not that size already.

        Returns:
            Tensor: The reconstruction ``(N, input channels, *size)``.
        """
        if tuple(z.shape[-2:]) != self.size:
            z = F.interpolate(z, size=self.size, mode='bilinear', align_corners=False)
        return self.decoder(z)

    def forward(self, z, target, logits, image, loss_module) -> Tensor:
        """Mean squared error between :meth:`decode` of ``z`` and
        :meth:`target` of ``image`` (cast to ``z``'s dtype).

        Args:
            z (Tensor): The block's output ``(N, C, H, W)``.
            target (Tensor): The labels (unused).
            logits (Tensor): The local head's logits (unused).
            image (Tensor): The network input after the data preprocessor.
            loss_module (nn.Module): The classification loss (unused).

        Returns:
            Tensor: The loss.

        Raises:
            RuntimeError: ``image`` is None.
        """
        if image is None:
            raise RuntimeError('ENNReconstructionObjective needs the network input.')
        return F.mse_loss(self.decode(z), self.target(image).to(z.dtype))


def similarity_matrix(x: Tensor) -> Tensor:
    """Cosine similarity of the centred rows of ``x`` (flattened per sample),
    clamped to [-1, 1] (PredSim's).

    Args:
        x (Tensor): A batch ``(N, ...)``; each sample is flattened and its
            mean subtracted.

    Returns:
        Tensor: The ``(N, N)`` similarity matrix.
    """
    x = x.flatten(1)
    x = x - x.mean(dim=1, keepdim=True)
    x = x / (1e-8 + x.norm(dim=1, keepdim=True))
    return (x @ x.t()).clamp(-1, 1)


@MODELS.register_module()
class ENNSimilarityObjective(nn.Module):
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
    log_name = 'similarity'

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
        """Mean squared error between the similarity matrix of the features
        (after the conv and pooling, for a ``(C, H, W)`` output) and that of
        the targets (one-hot labels, or the soft scores).

        Args:
            z (Tensor): The block's output.
            target (Tensor): Labels ``(N,)`` or soft scores ``(N, C)``.
            logits (Tensor): The local head's logits (unused).
            image (Tensor | None): The network input (unused).
            loss_module (nn.Module): The classification loss (unused).

        Returns:
            Tensor: The loss.
        """
        h = z
        if self.conv is not None:
            h = self.conv(z)
            if self.pool is not None:
                h = F.adaptive_avg_pool2d(h, self.pool)
        y = target if target.dim() > 1 else F.one_hot(target, self.num_classes)
        return F.mse_loss(similarity_matrix(h.float()), similarity_matrix(y.float()))


DEFAULT_OBJECTIVES = (dict(type='ENNClassificationObjective', weight=1.0), )


def log_name(cls: type) -> str:
    """The name an objective class goes by in logs and
    ``local_objective_names``: its own ``log_name`` attribute (a subclass
    does not inherit it), else its class name (its registered name).

    Args:
        cls (type): An objective class.

    Returns:
        str: Its log name.
    """
    return vars(cls).get('log_name') or cls.__name__


def build_objectives(cfgs: Optional[Sequence[dict]], shapes: Sequence[tuple],
                     num_classes: int, input_shape: Sequence[int]):
    """Build every local block's objectives.

    Args:
        cfgs (list[dict], optional): ``dict(type=<MODELS name>, weight=...,
            **options)`` each. Defaults to the classification loss alone
            (``ENNClassificationObjective``), weight 1.
        shapes (list[tuple]): The output shape of each local block.
        num_classes (int): Number of classes.
        input_shape (tuple): ``(C, H, W)`` of the network input.

    Returns:
        tuple: ``(names, weights, modules)``: the objectives' log names, a
        ``[block][objective]`` weight table and an ``nn.ModuleDict`` keyed
        ``block{k}`` holding, per objective, the module (``nn.Identity``
        where its weight is 0).

    Raises:
        TypeError: ``cfgs`` is not a non-empty list of dicts, or an
            objective's options do not fit its signature.
        KeyError: An unknown objective ``type``, or a bad weight schedule.
        ValueError: An objective listed twice, two objectives with the same
            log name, a weight list of the wrong length, or options an
            objective refuses.
    """
    cfgs = list(DEFAULT_OBJECTIVES if cfgs is None else cfgs)
    if isinstance(cfgs, dict) or not cfgs or not all(isinstance(c, dict) for c in cfgs):
        raise TypeError('local_objectives is a non-empty list of dicts, e.g. '
                        "[dict(type='ENNClassificationObjective'), "
                        "dict(type='ENNReconstructionObjective', "
                        'weight=dict(start=1.0, end=0.0))].')
    num_local = len(shapes)
    names, weights, per_block = [], [[] for _ in shapes], [nn.ModuleList() for _ in shapes]
    classes = []
    for cfg in cfgs:
        cfg = dict(cfg)
        kind = cfg.pop('type', None)
        cls = registered_class(kind, 'Objective', 'local objective')
        name, what = log_name(cls), f'local objective {cls.__name__!r}'
        if name in names:
            other = classes[names.index(name)]
            if other is cls:
                raise ValueError(f'{what} is listed twice.')
            raise ValueError(f'local objectives {other.__name__!r} and {cls.__name__!r} both '
                             f'log as {name!r}; give one a log_name of its own.')
        names.append(name)
        classes.append(cls)
        w = block_weights(cfg.pop('weight', 1.0), num_local, what)
        try:  # (one block, no local one: nothing to build, the options still checked)
            inspect.signature(cls).bind(shapes[0] if shapes else (), num_classes,
                                        tuple(input_shape), **cfg)
        except TypeError as e:
            raise TypeError(f'{what}: {e}. Its options are '
                            f'{list(inspect.signature(cls).parameters)[3:]} and weight.') from None
        for k, shape in enumerate(shapes):
            weights[k].append(w[k])
            per_block[k].append(cls(tuple(shape), num_classes, tuple(input_shape), **cfg)
                                if w[k] != 0 else nn.Identity())
    modules = nn.ModuleDict({f'block{k}': m for k, m in enumerate(per_block)})
    return names, weights, modules
