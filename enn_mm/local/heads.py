"""Local heads: what predicts the label from a block's output in training.

A local head is an ``nn.Module`` built as ``cls(in_shape, num_classes,
**options)`` that maps a block's output to class logits. The heads here are
registered in MMPretrain's ``MODELS`` under their class names (a config
names them, e.g. ``local_head=dict(type='ENNPoolLinearLocalHead')``, and a
user registers their own the same way):

============================  ===============================================
registered name               what it is
============================  ===============================================
``ENNFrozenLinearLocalHead``  a fixed random linear map of the flattened
                              feature (the authors' head)
``ENNPoolLinearLocalHead``    global average pooling, linear
``ENNConvAuxLocalHead``       conv-BN-ReLU, pooling, linear
``ENNAuxNetLocalHead``        InfoPro "1c2f" / DGL MLP-SR auxiliary net: conv
                              stages, pooling, an MLP
``ENNDownstreamLocalHead``    AugLocal: fresh copies of some of the network's
                              own later blocks (optionally narrower: ``width``),
                              pool, linear
``ENNRandomProjectionLocalHead``  SLL-style: pooling, then a fixed seeded
                              random projection to the classes (no trained
                              weights at all)
``ENNMomentumLocalHead``      MAN: an exponential moving average of the
                              network's own next units (no gradient, no
                              optimizer state), a learnable per-channel
                              scale and bias, pool, linear
============================  ===============================================

A feature is ``(N, C, H, W)`` (pooled over ``H, W``), ``(N, L, C)`` tokens
(pooled over ``L``) or ``(N, C)``. A head class may define
``num_params(in_shape, num_classes, **options)`` (checked against
``max_head_params`` before it is built) and a classmethod
``from_network(network, k, in_shape, num_classes, **options)`` if it is built
from the network itself (as ``ENNDownstreamLocalHead`` is). A head that
follows the network's weights defines ``momentum_update(modules)``, which
``ENNLocalClassifier`` calls at the start of every training step with the
model's modules by name (as ``ENNMomentumLocalHead`` does).
"""
import copy
import inspect
import math
from typing import Dict, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from mmpretrain.registry import MODELS
from torch import Tensor, nn

from ..core import export_dense
from .partition import probing

__all__ = ['ENNFrozenLinearLocalHead', 'ENNPoolLinearLocalHead', 'ENNConvAuxLocalHead',
           'ENNAuxNetLocalHead', 'ENNDownstreamLocalHead', 'ENNRandomProjectionLocalHead',
           'ENNMomentumLocalHead', 'build_local_head',
           'registered_modules', 'LocalNetwork']


def _pool(x: Tensor) -> Tensor:
    if x.dim() == 4:
        return x.mean(dim=(2, 3))
    if x.dim() == 3:
        return x.mean(dim=1)
    return x.flatten(1)


def _channels(shape: Tuple[int, ...]) -> int:
    # (C, H, W) -> C ; (L, C) tokens -> C ; (C,) -> C
    return shape[0] if len(shape) in (1, 3) else shape[-1]


def _need_map(kind: str, in_shape, fix: str = 'use ENNPoolLinearLocalHead'):
    if len(in_shape) != 3:
        raise ValueError(f'the local head {kind} needs (C, H, W) feature maps, got a '
                         f'feature of shape {tuple(in_shape)}; {fix}.')


@MODELS.register_module()
class ENNFrozenLinearLocalHead(nn.Module):
    """A fixed random ``nn.Linear`` on the flattened feature.

    Initialised as ``nn.Linear`` is (uniform, bound ``1/sqrt(in_features)``);
    weight and bias are buffers, so no optimizer ever sees them.

    Args:
        in_shape (Sequence[int]): Feature shape without the batch dimension;
            the input size is its product.
        num_classes (int): Number of classes.
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
        """Size of the head (its weight and bias buffers) without building it.

        Args:
            in_shape (Sequence[int]): Feature shape without the batch
                dimension.
            num_classes (int): Number of classes.
            **kwargs: Ignored.

        Returns:
            int: ``(prod(in_shape) + 1) * num_classes``.
        """
        return (math.prod(in_shape) + 1) * num_classes

    def forward(self, x: Tensor) -> Tensor:
        """Apply the fixed linear map to the flattened feature.

        Args:
            x (Tensor): Block output, ``(N, ...)`` with ``prod(in_shape)``
                numbers per sample.

        Returns:
            Tensor: Logits ``(N, num_classes)``.
        """
        return F.linear(x.flatten(1), self.weight, self.bias)


@MODELS.register_module()
class ENNPoolLinearLocalHead(nn.Module):
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
        """Parameters of the head without building it (counted whether or
        not they are frozen).

        Args:
            in_shape (Sequence[int]): Feature shape without the batch
                dimension; its channels are ``C`` of ``(C, H, W)`` or
                ``(C,)``, the last entry of ``(L, C)``.
            num_classes (int): Number of classes.
            **kwargs: Other head options (``frozen``); ignored.

        Returns:
            int: ``(C + 1) * num_classes``.
        """
        return (_channels(tuple(in_shape)) + 1) * num_classes

    def forward(self, x: Tensor) -> Tensor:
        """Pool the feature and apply the linear layer.

        Args:
            x (Tensor): Block output ``(N, C, H, W)`` (averaged over ``H, W``),
                ``(N, L, C)`` (averaged over ``L``) or ``(N, C)``.

        Returns:
            Tensor: Logits ``(N, num_classes)``.
        """
        return self.fc(_pool(x))


def _pool_to(x: Tensor, pool_size: int) -> Tensor:
    """``(N, C, H, W)`` averaged to ``pool_size × pool_size`` and flattened;
    tokens and vectors as :func:`_pool`."""
    if x.dim() == 4 and pool_size > 1:
        return F.adaptive_avg_pool2d(x, pool_size).flatten(1)
    return _pool(x)


@MODELS.register_module()
class ENNRandomProjectionLocalHead(nn.Module):
    """A fixed, seeded random projection of the pooled feature to the class
    logits, as in Stochastic Layer-wise Learning (SLL): the block learns to
    make its feature separable through a map that nobody trains.

    The feature is average-pooled to ``pool_size × pool_size`` (tokens over
    the sequence), flattened to ``D`` numbers and multiplied by ``R``, a
    ``D × num_classes`` matrix with orthonormal columns (rows if ``D`` is
    smaller) drawn from its own generator seeded with ``seed`` and scaled by
    ``sqrt(D / num_classes)``, so that a feature keeps its norm on average
    (a Johnson-Lindenstrauss map), then by ``scale``. ``R`` is a buffer: no
    gradient, no optimizer state; the head costs one small matmul.

    Args:
        in_shape (Sequence[int]): Feature shape without the batch dimension:
            ``(C, H, W)``, ``(L, C)`` tokens or ``(C,)``.
        num_classes (int): Number of classes.
        pool_size (int): Side of the pooled map of a ``(C, H, W)`` feature
            (1: global average pooling). Defaults to 1.
        scale (float): Factor on the logits (a fixed temperature).
            Defaults to 1.
        seed (int): Seed of the projection's own generator (the global
            random stream is not used). Defaults to 0.

    Raises:
        ValueError: ``pool_size`` < 1 or ``scale`` <= 0.
    """

    def __init__(self, in_shape: Sequence[int], num_classes: int, pool_size: int = 1,
                 scale: float = 1.0, seed: int = 0):
        super().__init__()
        if pool_size < 1 or not scale > 0:
            raise ValueError(f'ENNRandomProjectionLocalHead: pool_size={pool_size} must be >= 1 '
                             f'and scale={scale} > 0.')
        self.pool_size = pool_size
        d = self.features(tuple(in_shape), pool_size)
        g = torch.Generator().manual_seed(seed)
        gauss = torch.randn(max(d, num_classes), min(d, num_classes), generator=g,
                            dtype=torch.float64)
        q, r = torch.linalg.qr(gauss)
        q = q * torch.sign(torch.diagonal(r))  # the Haar-distributed draw
        weight = q if d >= num_classes else q.T
        self.register_buffer('weight', (weight * scale * math.sqrt(d / num_classes)).float())

    @staticmethod
    def features(in_shape, pool_size: int = 1) -> int:
        """Length ``D`` of the pooled, flattened feature.

        Args:
            in_shape (Sequence[int]): Feature shape without the batch
                dimension.
            pool_size (int): Side of the pooled map. Defaults to 1.

        Returns:
            int: ``C · pool_size²`` for ``(C, H, W)``, else ``C``.
        """
        c = _channels(tuple(in_shape))
        return c * pool_size * pool_size if len(in_shape) == 3 else c

    @classmethod
    def num_params(cls, in_shape, num_classes, pool_size=1, **kwargs) -> int:
        """Size of the fixed projection (a buffer; counted against
        ``max_head_params`` all the same).

        Args:
            in_shape (Sequence[int]): Feature shape without the batch
                dimension.
            num_classes (int): Number of classes.
            pool_size (int): Side of the pooled map. Defaults to 1.
            **kwargs: Other options (``scale``, ``seed``); ignored.

        Returns:
            int: ``D · num_classes``.
        """
        return cls.features(in_shape, pool_size) * num_classes

    def forward(self, x: Tensor) -> Tensor:
        """Pool, flatten, project.

        Args:
            x (Tensor): Block output ``(N, C, H, W)``, ``(N, L, C)`` or
                ``(N, C)``.

        Returns:
            Tensor: Logits ``(N, num_classes)``.
        """
        return _pool_to(x, self.pool_size) @ self.weight.to(x.dtype)


@MODELS.register_module()
class ENNConvAuxLocalHead(nn.Module):
    """conv(k×k)-BN-ReLU, global average pooling, ``nn.Linear``.

    Args:
        in_shape (Sequence[int]): ``(C, H, W)`` of the block output.
        num_classes (int): Number of classes.
        channels (int, optional): Conv output channels. Defaults to ``C``.
        kernel_size (int): Conv kernel size. Defaults to 3.
        stride (int): Conv stride (2 quarters the head's compute on large
            maps). Defaults to 1.

    Raises:
        ValueError: ``in_shape`` is not ``(C, H, W)``.
    """

    def __init__(self, in_shape: Sequence[int], num_classes: int, channels: int = None,
                 kernel_size: int = 3, stride: int = 1):
        super().__init__()
        _need_map('ENNConvAuxLocalHead', in_shape)
        c = in_shape[0]
        channels = channels or c
        self.conv = nn.Conv2d(c, channels, kernel_size, stride, kernel_size // 2, bias=False)
        self.bn = nn.BatchNorm2d(channels)
        self.fc = nn.Linear(channels, num_classes)

    @staticmethod
    def num_params(in_shape, num_classes, channels=None, kernel_size=3, **kwargs) -> int:
        """Parameters of the head without building it: conv weight, BN
        weight and bias, linear weight and bias.

        Args:
            in_shape (Sequence[int]): ``(C, H, W)`` of the block output.
            num_classes (int): Number of classes.
            channels (int, optional): Conv output channels. Defaults to ``C``.
            kernel_size (int): Conv kernel size. Defaults to 3.
            **kwargs: Other head options (``stride``); ignored, they do not
                change the count.

        Returns:
            int: The number of parameters.
        """
        c = in_shape[0]
        channels = channels or c
        return c * channels * kernel_size**2 + 2 * channels + (channels + 1) * num_classes

    def forward(self, x: Tensor) -> Tensor:
        """conv-BN-ReLU, global average pooling, linear.

        Args:
            x (Tensor): Block output ``(N, C, H, W)``.

        Returns:
            Tensor: Logits ``(N, num_classes)``.
        """
        return self.fc(_pool(F.relu(self.bn(self.conv(x)))))


def _aux_net_plan(in_shape, num_convs, channel_mult, min_size, pool_size, hidden):
    c, h, w = in_shape
    convs = []
    for _ in range(num_convs):
        stride = 2 if min(h, w) // 2 >= min_size else 1
        out = max(1, int(round(c * channel_mult)))
        convs.append((c, out, stride))
        c, h, w = out, (h - 1) // stride + 1, (w - 1) // stride + 1
    dims = [c * pool_size * pool_size, *hidden]
    return convs, dims


@MODELS.register_module()
class ENNAuxNetLocalHead(nn.Module):
    """An auxiliary net with spatial detail (InfoPro "1c2f", DGL MLP-SR).

    ``num_convs`` conv3×3-BN-ReLU stages, each with stride 2 while the map
    stays at least ``min_size`` wide (else stride 1) and ``channel_mult``
    times the channels, then adaptive average pooling to
    ``pool_size × pool_size``, then an MLP (``hidden`` widths, ReLU) and a
    linear classifier whose weight and bias start at zero (so a new head
    sends no noise into its block at the start). The defaults are InfoPro's
    "1c2f": one stride-2 conv doubling the channels, global pooling,
    FC(128)-ReLU-FC.

    Args:
        in_shape (Sequence[int]): ``(C, H, W)`` of the block output.
        num_classes (int): Number of classes.
        num_convs (int): Conv stages. Defaults to 1.
        channel_mult (float): Channel multiplier per conv stage. Defaults to 2.
        min_size (int): Smallest map a stride-2 conv may produce. Defaults to 2.
        pool_size (int): Side of the pooled map (DGL: 2). Defaults to 1.
        hidden (Sequence[int]): Hidden MLP widths. Defaults to ``(128,)``.

    Raises:
        ValueError: ``in_shape`` is not ``(C, H, W)``.
    """

    def __init__(self, in_shape: Sequence[int], num_classes: int, num_convs: int = 1,
                 channel_mult: float = 2.0, min_size: int = 2, pool_size: int = 1,
                 hidden: Sequence[int] = (128, )):
        super().__init__()
        _need_map('ENNAuxNetLocalHead', in_shape)
        convs, dims = _aux_net_plan(tuple(in_shape), num_convs, channel_mult, min_size,
                                    pool_size, tuple(hidden))
        layers = []
        for c_in, c_out, stride in convs:
            layers += [nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False),
                       nn.BatchNorm2d(c_out), nn.ReLU(inplace=True)]
        layers.append(nn.AdaptiveAvgPool2d(pool_size))
        layers.append(nn.Flatten(1))
        for d_in, d_out in zip(dims[:-1], dims[1:]):
            layers += [nn.Linear(d_in, d_out), nn.ReLU(inplace=True)]
        self.net = nn.Sequential(*layers)
        self.fc = nn.Linear(dims[-1], num_classes)
        nn.init.zeros_(self.fc.weight)
        nn.init.zeros_(self.fc.bias)

    @staticmethod
    def num_params(in_shape, num_classes, num_convs=1, channel_mult=2.0, min_size=2,
                   pool_size=1, hidden=(128, ), **kwargs) -> int:
        """Parameters of the head without building it: the convs (3×3, no
        bias) and their BN, the MLP and the classifier.

        Args:
            in_shape (Sequence[int]): ``(C, H, W)`` of the block output.
            num_classes (int): Number of classes.
            num_convs (int): Conv stages. Defaults to 1.
            channel_mult (float): Channel multiplier per conv stage.
                Defaults to 2.
            min_size (int): Smallest map a stride-2 conv may produce.
                Defaults to 2.
            pool_size (int): Side of the pooled map. Defaults to 1.
            hidden (Sequence[int]): Hidden MLP widths. Defaults to ``(128,)``.
            **kwargs: Ignored.

        Returns:
            int: The number of parameters; 0 if ``in_shape`` is not
            ``(C, H, W)`` (building the head then refuses it).
        """
        if len(in_shape) != 3:
            return 0  # refused with a clear message when built
        convs, dims = _aux_net_plan(tuple(in_shape), num_convs, channel_mult, min_size,
                                    pool_size, tuple(hidden))
        n = sum(a * b * 9 + 2 * b for a, b, _ in convs)
        n += sum((a + 1) * b for a, b in zip(dims[:-1], dims[1:]))
        return n + (dims[-1] + 1) * num_classes

    def forward(self, x: Tensor) -> Tensor:
        """Conv stages, pooling, MLP, then the classifier.

        Args:
            x (Tensor): Block output ``(N, C, H, W)``.

        Returns:
            Tensor: Logits ``(N, num_classes)``.
        """
        return self.fc(self.net(x))


class LocalNetwork:
    """What a head built from the network itself may look at.

    Args:
        model (nn.Module): The classifier (not yet cut into blocks).
        partition (Partition): Its checked partition.
        input_shape (tuple): ``(C, H, W)`` of the network input.
    """

    def __init__(self, model: nn.Module, partition, input_shape):
        self.model, self.partition, self.input_shape = model, partition, tuple(input_shape)
        self._order = None

    def units(self) -> List[str]:
        """The network's repeated blocks in forward order: the residual
        blocks of an MMPretrain ResNet, the layers of a ViT.

        Returns:
            list[str]: Their module names, e.g. ``'backbone.layer1.0'`` or
            ``'backbone.layers.0'``.

        Raises:
            TypeError: The backbone has neither ``res_layers`` nor a
                ``layers`` ``nn.ModuleList``.
        """
        backbone = getattr(self.model, 'backbone', None)
        layers = getattr(backbone, 'res_layers', None)
        if layers:
            return [f'backbone.{layer}.{i}' for layer in layers
                    for i in range(len(getattr(backbone, layer)))]
        if isinstance(getattr(backbone, 'layers', None), nn.ModuleList):
            return [f'backbone.layers.{i}' for i in range(len(backbone.layers))]
        raise TypeError(
            f'ENNDownstreamLocalHead copies the network\'s own blocks, but '
            f'{type(backbone).__name__} is neither an MMPretrain ResNet (`res_layers`) nor a '
            'ViT (`layers`); give the blocks to copy with units=[module names].')

    def probe(self, handles) -> None:
        """One forward pass of a random input in eval mode (running statistics
        untouched, its own random stream) for the hooks ``handles``, which
        are removed after.

        Args:
            handles (Iterable[RemovableHandle]): Hooks already registered on
                the model's modules; removed after the pass, even if it fails.
        """
        try:
            with probing(self.model) as device, torch.no_grad():
                self.model(torch.randn(1, *self.input_shape, device=device), mode='tensor')
        finally:
            for h in handles:
                h.remove()

    def order(self, names: Sequence[str]) -> Dict[str, int]:
        """``(name, position)`` of the first call of each module in ``names``
        and of each cut point, in one probe forward pass (eval mode, its own
        random stream).

        Args:
            names (Sequence[str]): Module names of the model.

        Returns:
            dict[str, int]: Position of the first call (events counted in
            order: a module's call starts, a cut point's ends) of each
            module of ``names`` that ran, and of each cut point that ran,
            keyed ``'cut:' + cut point name``.

        Raises:
            ValueError: A name in ``names`` is not a module of the model.
        """
        modules = dict(self.model.named_modules())
        missing = [n for n in names if n not in modules]
        if missing:
            raise ValueError(f'units {missing} are not modules of {type(self.model).__name__}.')
        seen: List[Tuple[str, int]] = []
        handles = [modules[n].register_forward_pre_hook(
            lambda m, a, n=n: seen.append((n, len(seen)))) for n in names]
        handles += [modules[c].register_forward_hook(
            lambda m, a, o, c=c: seen.append(('cut:' + c, len(seen))))
            for c in self.partition.cuts]
        self.probe(handles)
        first = {}
        for n, i in seen:
            first.setdefault(n, i)
        return first

    def downstream(self, k: int, units: Optional[Sequence[str]] = None) -> List[str]:
        """The units that run after block ``k``'s cut point, in forward order.

        Args:
            k (int): Index of a block with a cut point (not the last block).
            units (Sequence[str], optional): Module names of the candidate
                units. Defaults to :meth:`units`.

        Returns:
            list[str]: The units of ``units`` whose first call comes after
            the cut point of block ``k`` ends, in order of first call.

        Raises:
            TypeError: ``units`` is not given and the backbone has no known
                units (see :meth:`units`).
            ValueError: A unit is not a module of the model.
        """
        units = list(units) if units is not None else self.units()
        first = self.order(units)
        at = first['cut:' + self.partition.cuts[k]]
        return sorted((u for u in units if u in first and first[u] > at), key=first.get)


def _taper(depth: int, min_depth: int, k: int, num_local: int,
           tau: Optional[float] = None) -> int:
    if num_local <= 1:
        return depth
    t = k / (num_local - 1)
    if tau is not None:  # AugLocal: max(1, round(d(1 - iτ/(K-2)) + iτ/(K-2)))
        return max(1, round(depth * (1 - t * tau) + t * tau))
    return int(round(depth + (min_depth - depth) * t))


def _fresh(module: nn.Module) -> nn.Module:
    """A dense deep copy of ``module`` with newly initialized weights."""
    twin = export_dense(copy.deepcopy(module))
    for m in twin.modules():
        if hasattr(m, 'reset_parameters'):
            m.reset_parameters()
    for p in twin.parameters():
        p.requires_grad_(True)
    return twin


def _scaled(c: int, width: float) -> int:
    return max(1, int(round(c * width)))


def _narrowed_input(channels: int, width: float) -> nn.Module:
    """The 1×1 conv that takes the block output to the copies' width."""
    return nn.Conv2d(channels, _scaled(channels, width), 1, bias=False)


def _narrowed(module: nn.Module, width: float, name: str) -> nn.Module:
    """``module`` with every Conv2d and BatchNorm2d rebuilt (newly
    initialized) with ``width`` times the channels, in place."""
    for child_name, child in list(module.named_children()):
        if isinstance(child, nn.Conv2d):
            c_in, c_out = _scaled(child.in_channels, width), _scaled(child.out_channels, width)
            depthwise = child.groups == child.in_channels == child.out_channels
            if child.groups != 1 and not depthwise:
                raise ValueError(f'ENNDownstreamLocalHead: cannot narrow the grouped conv '
                                 f'{name}.{child_name} (groups={child.groups}); use width=1.')
            new = nn.Conv2d(c_in, c_out, child.kernel_size, child.stride, child.padding,
                            child.dilation, c_in if depthwise else 1, child.bias is not None,
                            child.padding_mode)
        elif isinstance(child, nn.BatchNorm2d):
            new = nn.BatchNorm2d(_scaled(child.num_features, width), child.eps, child.momentum,
                                 child.affine, child.track_running_stats)
        elif isinstance(child, (nn.Linear, nn.modules.conv._ConvNd, nn.modules.batchnorm._NormBase,
                                nn.GroupNorm, nn.LayerNorm)):
            raise ValueError(f'ENNDownstreamLocalHead: width != 1 narrows Conv2d and BatchNorm2d '
                             f'only, but the copied unit {name} has a {type(child).__name__} '
                             f'({name}.{child_name}); use width=1.')
        else:
            _narrowed(child, width, f'{name}.{child_name}')
            continue
        setattr(module, child_name, new.to(next(child.parameters(), torch.empty(0)).device))
    return module


@MODELS.register_module()
class ENNDownstreamLocalHead(nn.Module):
    """AugLocal: the head of block ``k`` is made of fresh copies of some of
    the network's own later blocks, then global pooling and a linear layer.

    The copies are chosen evenly among the units (residual blocks, ViT
    layers) that run after block ``k``, always keeping the units that change
    the feature's shape so that the copies chain: where more units than
    ``depth`` change the shape (a ResNet-50's first block has four stage
    transitions after it), all of those are copied. They are dense, newly
    initialized and share no tensor with the network. The number of copies
    tapers linearly from ``depth`` at the first block to ``min_depth`` at the
    last local block (AugLocal uses fewer near the output), or with ``tau``
    as AugLocal's pyramid: ``max(1, round(d(1 − iτ/(L−1)) + iτ/(L−1)))`` for
    local block ``i`` of ``L`` (τ = 0.5 in AugLocal).

    With ``width`` w != 1 the copies are w times as wide (every conv and
    batch norm of a copy has ``round(w·c)`` channels where the original has
    ``c``; AugLocal's ``aux_net_widen``), after a 1×1 conv that maps the
    block output's ``C`` channels to ``round(w·C)``: w = 0.5 costs about a
    quarter of the full-width copies. Conv units (ResNet blocks) only.

    Build it with :meth:`from_network` (``build_local_head`` does).

    Args:
        blocks (Sequence[nn.Module]): The copied units, in order; they run
            as an ``nn.Sequential``.
        in_shape (Sequence[int]): Feature shape of the block output (not
            used by the constructor).
        num_classes (int): Number of classes.
        out_channels (int): Channels of the last copy's output (of the
            block output if there are no copies): the input size of the
            linear layer.
    """

    def __init__(self, blocks: Sequence[nn.Module], in_shape: Sequence[int], num_classes: int,
                 out_channels: int):
        super().__init__()
        self.blocks = nn.Sequential(*blocks)
        self.fc = nn.Linear(out_channels, num_classes)

    @classmethod
    def from_network(cls, network: LocalNetwork, k: int, in_shape: Sequence[int],
                     num_classes: int, depth: Union[int, Sequence[int]] = 2,
                     min_depth: int = 1, units: Optional[Sequence[str]] = None,
                     num_local: Optional[int] = None,
                     width: float = 1.0,
                     tau: Optional[float] = None) -> 'ENNDownstreamLocalHead':
        """Build block ``k``'s head.

        Args:
            network (LocalNetwork): The network to copy units from.
            k (int): Index of the block the head belongs to.
            in_shape (Sequence[int]): Feature shape of block ``k``'s output,
                without the batch dimension.
            num_classes (int): Number of classes.
            depth (int | list[int]): Copies for the first local block (tapered
                to ``min_depth`` for the last), or an exact count per local
                block. Defaults to 2.
            min_depth (int): Copies for the last local block when tapering.
            units (list[str], optional): Module names of the units to copy
                from, in forward order. Defaults to the residual blocks of a
                ResNet or the layers of a ViT.
            num_local (int, optional): Number of local blocks (set by the
                builder). Defaults to the number of cut points.
            width (float): Width factor of the copies (see the class).
                Defaults to 1.
            tau (float, optional): AugLocal's pyramid factor in ``[0, 1]``:
                the copies taper from ``depth`` by its rule instead of
                linearly to ``min_depth`` (which is then not used). Defaults
                to None.

        Returns:
            ENNDownstreamLocalHead: The head; its ``copied`` attribute lists
            the module names of the units it copies.

        Raises:
            ValueError: ``tau`` outside ``[0, 1]``; ``width`` <= 0, or != 1
                on a feature that is not
                ``(C, H, W)`` or with a copied unit that has layers other
                than Conv2d and BatchNorm2d to narrow; ``depth`` or
                ``min_depth`` is negative, ``depth``
                (an int) exceeds the units after the first block, a
                ``depth`` list does not have one entry per local block or an
                entry exceeds the units after its block, or the copies do not
                chain on block ``k``'s output.
            TypeError: ``units`` is not given and the backbone has no known
                units.
        """
        if not width > 0:
            raise ValueError(f'ENNDownstreamLocalHead: width={width} must be > 0 (1: copies as '
                             'wide as the network, 0.5: half the channels).')
        if tau is not None and not 0 <= tau <= 1:
            raise ValueError(f'ENNDownstreamLocalHead: tau={tau} must be in [0, 1] (AugLocal '
                             'uses 0.5; 0 keeps depth for every block).')
        if width != 1:
            _need_map('ENNDownstreamLocalHead with width != 1', in_shape, 'use width=1')
        later = network.downstream(k, units)
        num_local = num_local or len(network.partition.cuts)
        if isinstance(depth, int):
            if depth < 0 or min_depth < 0:
                raise ValueError(f'ENNDownstreamLocalHead: depth {depth} and min_depth {min_depth} '
                                 'must be >= 0.')
            first_later = len(network.downstream(0, units))
            if depth > first_later:
                raise ValueError(
                    f'ENNDownstreamLocalHead: depth={depth} copies, but only {first_later} '
                    'units run after the first block; it reaches past the end of the network. Use '
                    f'depth <= {first_later}.')
            d = min(_taper(depth, min_depth, k, num_local, tau), len(later))
        else:
            if len(depth) != num_local:
                raise ValueError(f'ENNDownstreamLocalHead: {len(depth)} depths for {num_local} '
                                 'local blocks; give an int or one per local block.')
            d = int(depth[k])
            if d > len(later) or d < 0:
                raise ValueError(
                    f'ENNDownstreamLocalHead of {network.partition.describe(k)}: depth {d} reaches '
                    f'past the end of the network (only {len(later)} units run after it: '
                    f'{later}). Use at most {len(later)} there.')
        modules = dict(network.model.named_modules())
        chosen = _choose(later, d, network, in_shape, modules)
        copies = [_fresh(modules[n]) for n in chosen]
        if width != 1:
            copies = [_narrowed_input(in_shape[0], width),
                      *[_narrowed(m, width, n) for m, n in zip(copies, chosen)]]
        shapes = _chain_shapes(copies, in_shape, network.partition.describe(k), chosen)
        out_shape = shapes[-1] if shapes else tuple(in_shape)
        head = cls(copies, in_shape, num_classes, _channels(out_shape))
        head.copied = list(chosen)
        return head

    def forward(self, x: Tensor) -> Tensor:
        """Run the copies, pool their output and apply the linear layer.

        Args:
            x (Tensor): Block output, ``in_shape`` per sample.

        Returns:
            Tensor: Logits ``(N, num_classes)``.
        """
        return self.fc(_pool(self.blocks(x)))


def _frozen(module: nn.Module) -> nn.Module:
    """``module`` with every parameter turned into a buffer (no gradient, no
    optimizer state) and its batch norms normalizing with the statistics of
    the batch (no running statistics of their own), in place."""
    for m in module.modules():
        for name, p in list(m._parameters.items()):
            if p is not None:
                del m._parameters[name]
                m.register_buffer(name, p.detach().clone())
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.track_running_stats = False
            m.running_mean = m.running_var = m.num_batches_tracked = None
    return module


class _ChannelAffine(nn.Module):
    """A learnable per-channel scale (from 1) and bias (from 0)."""

    def __init__(self, channels: int):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))

    def forward(self, x: Tensor) -> Tensor:
        shape = (1, -1, 1, 1) if x.dim() == 4 else (1, ) * (x.dim() - 1) + (-1, )
        return x * self.weight.view(shape) + self.bias.view(shape)


@MODELS.register_module()
class ENNMomentumLocalHead(nn.Module):
    """MAN (Momentum Auxiliary Network): the head of block ``k`` runs an
    exponential moving average of the network's own units that follow block
    ``k``'s cut point, each followed by a learnable per-channel scale and
    bias, then global pooling and a linear layer.

    The averaged copies are buffers: the head's loss trains only the scale,
    bias and linear layer (and, through the head's input, block ``k``); it
    never changes the copies and no gradient reaches the units they follow.
    At the start of every training step, before any block trains,
    ``ENNLocalClassifier`` calls :meth:`momentum_update`: each copied tensor
    ``e`` moves toward the network's current dense weight ``w`` (the
    ``Q·diag(λ)·Pᵀ`` of an ENN layer) as ``e ← m·e + (1 − m)·w``; on the
    first step ``e ← w``, so the head starts from the network's initial
    weights. The copies' batch norms normalize with the batch's statistics.

    In a pipelined run the units a head follows must be trained by the same
    stage (``ENNPipelineParallel`` refuses the split otherwise).

    Build it with :meth:`from_network` (``build_local_head`` does).

    Args:
        blocks (Sequence[nn.Module]): Dense copies of the followed units, in
            order; their parameters become buffers.
        in_shape (Sequence[int]): Feature shape of the block output (not
            used by the constructor).
        num_classes (int): Number of classes.
        channels (Sequence[int]): Channels of each copy's output.
        momentum (float): ``m`` in ``[0, 1)``. Defaults to 0.99.
    """

    def __init__(self, blocks: Sequence[nn.Module], in_shape: Sequence[int], num_classes: int,
                 channels: Sequence[int], momentum: float = 0.99):
        super().__init__()
        # the followed tensors, as the dense copy names them ('conv1.weight')
        self.tracked = [[n for n, _ in b.named_parameters()] for b in blocks]
        self.blocks = nn.ModuleList(_frozen(b) for b in blocks)
        self.affine = nn.ModuleList(_ChannelAffine(c) for c in channels)
        self.fc = nn.Linear(channels[-1], num_classes)
        self.momentum = float(momentum)
        self.register_buffer('steps', torch.zeros((), dtype=torch.long))
        self.copied: List[str] = []

    @classmethod
    def from_network(cls, network: LocalNetwork, k: int, in_shape: Sequence[int],
                     num_classes: int, depth: int = 1, momentum: float = 0.99,
                     units: Optional[Sequence[str]] = None) -> 'ENNMomentumLocalHead':
        """Build block ``k``'s head.

        Args:
            network (LocalNetwork): The network whose units the head follows.
            k (int): Index of the block the head belongs to.
            in_shape (Sequence[int]): Feature shape of block ``k``'s output.
            num_classes (int): Number of classes.
            depth (int): How many of the units that run right after block
                ``k``'s cut point to follow. Defaults to 1 (MAN: the next
                block).
            momentum (float): EMA momentum ``m`` in ``[0, 1)``. Defaults to
                0.99.
            units (list[str], optional): Module names of the candidate
                units. Defaults to the residual blocks of a ResNet or the
                layers of a ViT.

        Returns:
            ENNMomentumLocalHead: The head; ``copied`` lists the module names
            of the units it follows.

        Raises:
            ValueError: ``momentum`` outside ``[0, 1)``, ``depth`` < 1, fewer
                than ``depth`` units run after block ``k`` (none: no later
                unit to follow), or the units do not chain on block ``k``'s
                output.
            TypeError: ``units`` is not given and the backbone has no known
                units.
        """
        if not 0 <= momentum < 1:
            raise ValueError(f'ENNMomentumLocalHead: momentum={momentum} must be in [0, 1) '
                             '(MAN: close to 1, e.g. 0.99).')
        if not isinstance(depth, int) or depth < 1:
            raise ValueError(f'ENNMomentumLocalHead: depth={depth!r} must be an int >= 1 (the '
                             'number of later units the head follows).')
        later = network.downstream(k, units)
        where = network.partition.describe(k)
        if len(later) < depth:
            raise ValueError(
                f'ENNMomentumLocalHead of {where}: it follows the {depth} unit(s) that run after '
                f'its cut point, but only {len(later)} do ({later}): there is no later block '
                'to average. Use a smaller depth, another head for this block (local_head as a '
                "list, e.g. dict(type='ENNPoolLinearLocalHead') there), or cut earlier.")
        chosen = later[:depth]
        modules = dict(network.model.named_modules())
        copies = [export_dense(copy.deepcopy(modules[n])) for n in chosen]
        channels = [_channels(shape) for shape in
                    _chain_shapes(copies, in_shape, where, chosen, 'ENNMomentumLocalHead')]
        head = cls(copies, in_shape, num_classes, channels, momentum)
        head.copied = list(chosen)
        return head

    @torch.no_grad()
    def momentum_update(self, modules: Dict[str, nn.Module]) -> None:
        """One EMA step toward the followed units' current weights (a copy
        on the first step).

        Args:
            modules (dict[str, nn.Module]): The model's modules by name
                (``dict(model.named_modules())``).
        """
        rate = 1.0 if int(self.steps) == 0 else 1.0 - self.momentum
        for name, copy_, tracked in zip(self.copied, self.blocks, self.tracked):
            source = modules[name]
            for path in tracked:
                owner, _, attr = path.rpartition('.')
                # an ENN layer's `weight` is its computed dense Q·diag(λ)·Pᵀ
                value = getattr(source.get_submodule(owner), attr)
                mine = copy_.get_buffer(path)
                mine.lerp_(value.detach().to(mine), rate)
        self.steps += 1

    def forward(self, x: Tensor) -> Tensor:
        """Run the averaged copies with their scales and biases, pool, and
        apply the linear layer.

        Args:
            x (Tensor): Block output, ``in_shape`` per sample.

        Returns:
            Tensor: Logits ``(N, num_classes)``.
        """
        for block, affine in zip(self.blocks, self.affine):
            x = affine(main_output(block(x)))
        return self.fc(_pool(x))


def _shape_changers(later, network, modules):
    """Units whose output shape differs from their input's (stride/width)."""
    shapes = {}
    def hook_for(n):
        def hook(module, args, output):  # returns None: the output is kept
            shapes.setdefault(n, (tuple(args[0].shape), tuple(main_output(output).shape)))
        return hook

    network.probe([modules[n].register_forward_hook(hook_for(n)) for n in later])
    return {n for n in later if n in shapes and shapes[n][0] != shapes[n][1]}


def _choose(later: List[str], d: int, network, in_shape, modules) -> List[str]:
    if d == 0:
        return []
    must = [n for n in later if n in _shape_changers(later, network, modules)]
    if len(must) >= d:
        return must
    rest = [n for n in later if n not in must]
    extra = d - len(must)
    # evenly spaced among the others, the last one included
    picks = {rest[int(round((i + 1) * len(rest) / extra)) - 1] for i in range(extra)}
    return [n for n in later if n in must or n in picks]


def _chain_shapes(copies, in_shape, where, names, kind='ENNDownstreamLocalHead'):
    """Output shape (without batch) of each of ``copies`` run in turn on an
    ``in_shape`` feature (eval mode, no gradient)."""
    x, shapes = torch.zeros(2, *in_shape), []
    try:
        with torch.no_grad():
            for m in copies:
                m.eval()
                x = main_output(m(x))
                m.train()
                shapes.append(tuple(x.shape[1:]))
    except RuntimeError as e:
        raise ValueError(f'{kind} of {where}: the copied units {names} do not '
                         f'chain on its {tuple(in_shape)} output ({str(e).splitlines()[0]}). Give '
                         'units= that take this feature in turn.') from None
    return shapes


def main_output(out):
    """The main output of a module call.

    Args:
        out (Any): A module's output.

    Returns:
        Any: ``out[0]`` if ``out`` is a tuple or list, else ``out``.
    """
    return out[0] if isinstance(out, (tuple, list)) else out


def registered_modules(suffix: str) -> List[str]:
    """The names of enn_mm's modules registered in ``MODELS`` whose name
    starts with ``ENN`` and ends with ``suffix`` (``'LocalHead'``,
    ``'Objective'``), sorted.

    Args:
        suffix (str): The name ending, e.g. ``'LocalHead'``.

    Returns:
        list[str]: The registered names of such ``nn.Module`` classes.
    """
    return sorted(key for key, cls in MODELS.module_dict.items()
                  if key.startswith('ENN') and key.endswith(suffix)
                  and isinstance(cls, type) and issubclass(cls, nn.Module))


def registered_class(kind, suffix: str, what: str) -> type:
    """The ``nn.Module`` class registered in ``MODELS`` as ``kind`` (or
    ``kind`` itself if it is one).

    Args:
        kind (str | type): The ``type`` of a head or objective config.
        suffix (str): The name ending of enn_mm's own ones, listed in the
            error if ``kind`` is unknown.
        what (str): ``'local head'`` or ``'local objective'``, for errors.

    Returns:
        type: The ``nn.Module`` subclass.

    Raises:
        KeyError: ``kind`` is neither an ``nn.Module`` class nor the name of
            one registered in ``MODELS``; the message lists the registered
            names ending with ``suffix``.
    """
    if isinstance(kind, type):
        cls = kind
    else:
        try:
            cls = MODELS.get(kind) if isinstance(kind, str) else None
        except RuntimeError:
            cls = None
    if isinstance(cls, type) and issubclass(cls, nn.Module):
        return cls
    names = registered_modules(suffix)
    squash = str(kind).replace('_', '').lower()
    near = [n for n in names if squash and squash in n.lower()]
    hint = f' Did you mean {near[0]!r}?' if len(near) == 1 else ''
    raise KeyError(f'unknown {what} type {kind!r}.{hint} The registered ENN {what}s are '
                   f'{names}; or register a module of your own in MMPretrain\'s MODELS and '
                   'give its registered name.')


def build_local_head(cfg: dict, in_shape: Sequence[int], num_classes: int,
                     max_params: int, where: str, network: Optional[LocalNetwork] = None,
                     k: int = 0, num_local: int = 1) -> nn.Module:
    """Build one local head, refusing it if it is over the parameter budget.

    Args:
        cfg (dict): ``dict(type=<MODELS name>, **options)``, e.g.
            ``dict(type='ENNPoolLinearLocalHead')``.
        in_shape (Sequence[int]): Feature shape without the batch dimension.
        num_classes (int): Number of classes.
        max_params (int): Largest allowed number of head parameters (frozen
            ones included: they take memory all the same).
        where (str): The block, for error messages.
        network (LocalNetwork, optional): For heads built from the network.
        k (int): The block's index.
        num_local (int): Number of blocks with a local head.

    Returns:
        nn.Module: The head. A head class with ``from_network`` is built
        with it (``num_local`` passed if it takes it) and counted after
        building (parameters and buffers); any other is counted with its
        ``num_params`` (if it has one) before building and then built as
        ``cls(in_shape, num_classes, **options)``.

    Raises:
        KeyError: ``cfg['type']`` is not a registered ``nn.Module``.
        TypeError: The head is built from the network but ``network`` is
            None, or the options do not fit the head's signature.
        ValueError: The head has more than ``max_params`` parameters (or
            ``from_network`` refuses its options).
    """
    cfg = dict(cfg)
    kind = cfg.pop('type', None)
    cls = registered_class(kind, 'LocalHead', 'local head')
    kind = kind if isinstance(kind, str) else cls.__name__
    if hasattr(cls, 'from_network'):
        if network is None:
            raise TypeError(f'the local head {kind} is built from the network; '
                            'build it through ENNLocalClassifier.')
        if 'num_local' in inspect.signature(cls.from_network).parameters:
            cfg.setdefault('num_local', num_local)
        head = cls.from_network(network, k, tuple(in_shape), num_classes, **cfg)
        n = sum(t.numel() for t in (*head.parameters(), *head.buffers()))
    else:
        try:
            inspect.signature(cls).bind(tuple(in_shape), num_classes, **cfg)
        except TypeError as e:
            raise TypeError(f'local head {kind!r}: {e}. Its options are '
                            f'{list(inspect.signature(cls).parameters)[2:]}.') from None
        counter = getattr(cls, 'num_params', None)
        n = counter(tuple(in_shape), num_classes, **cfg) if counter else None
        head = None
    if n is not None and n > max_params:
        raise ValueError(
            f'the local head {kind} of {where} on its {tuple(in_shape)} output '
            f'would have {n:,} parameters, over the budget max_head_params='
            f'{max_params:,}. Use local_head=dict(type=\'ENNPoolLinearLocalHead\') or '
            '\'ENNConvAuxLocalHead\', a smaller input size, or raise max_head_params.')
    return head if head is not None else cls(tuple(in_shape), num_classes, **cfg)
