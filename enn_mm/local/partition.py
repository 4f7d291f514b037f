"""Cut a classifier into consecutive blocks, and check the cut.

A partition is a list of *cut points*: names of modules whose output ends a
block. Block 0 runs from the input to the first cut point, block ``k`` from
cut point ``k - 1`` to cut point ``k``, and the last block from the last cut
point to the model's own loss. Which parameters a block owns is not guessed
from module names: one probe forward pass, with the output of every cut point
detached as in training, records the parameters each block's output depends
on. That is what the local learning rule needs, and it catches every way a
partition can be wrong (a name that does not exist, cut points out of
forward order, parameters that no block trains, parameters two blocks share).
"""
import difflib
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable, Dict, List, Sequence, Tuple, Union

import torch
from torch import Tensor, nn

__all__ = [
    'Partition', 'CUT_PRESETS', 'resolve_cuts', 'probe_partition', 'main_tensor',
    'detach_output', 'own_rng', 'probing'
]


def own_rng(device: torch.device):
    """Random draws within the context leave the global streams (CPU, and
    ``device``'s if it is a GPU) as they were: planning and probing must not
    change what training draws.

    Args:
        device (torch.device): The device whose CUDA stream is also saved and
            restored, if it is a CUDA device.

    Returns:
        contextmanager: ``torch.random.fork_rng`` over those devices.
    """
    return torch.random.fork_rng(devices=[device] if device.type == 'cuda' else [])


@contextmanager
def probing(model: nn.Module):
    """Set up a probe pass of ``model``: eval mode (running statistics
    untouched) and random draws that leave the global streams as they were;
    the mode is restored after. Yields the model's device.

    Args:
        model (nn.Module): The model to probe.

    Yields:
        torch.device: The device of the model's first parameter (CPU if it
        has none).
    """
    param = next(model.parameters(), None)
    device = param.device if param is not None else torch.device('cpu')
    training = model.training
    model.eval()
    try:
        with own_rng(device):
            yield device
    finally:
        model.train(training)


# ------------------------------------------------------------------- presets

def _resnet_stem_end(backbone: nn.Module) -> str:
    # mmpretrain's ResNet family ends its stem with a max-pool; the CIFAR
    # variant (3x3 stem, no pool) ends it with the backbone's own ReLU.
    if isinstance(getattr(backbone, 'maxpool', None), nn.Module):
        return 'backbone.maxpool'
    if isinstance(getattr(backbone, 'stem', None), nn.Module):
        return 'backbone.stem'
    return 'backbone.relu'


def _res_layers(model: nn.Module) -> List[str]:
    layers = getattr(getattr(model, 'backbone', None), 'res_layers', None)
    if not layers:
        raise TypeError(
            'the ResNet cut presets need an MMPretrain ResNet-family backbone '
            '(ResNet, ResNetV1c/d, ResNet_CIFAR, ResNeXt, SEResNet, ...: a '
            f'`res_layers` attribute); {type(getattr(model, "backbone", None)).__name__} '
            'has none. Give the cut points as a list of module names instead.')
    return list(layers)


def resnet_block_cuts(model: nn.Module) -> List[str]:
    """The paper's split: the stem, every residual block, the final FC.

    The last block is the neck and head (global pooling + FC).

    Args:
        model (nn.Module): A classifier with an MMPretrain ResNet-family
            backbone.

    Returns:
        list[str]: The end of the stem (``backbone.maxpool``,
        ``backbone.stem`` or ``backbone.relu``), then every residual block
        (``backbone.layer1.0``, ...).

    Raises:
        TypeError: The backbone has no ``res_layers``.
    """
    backbone = model.backbone
    cuts = [_resnet_stem_end(backbone)]
    for layer in _res_layers(model):
        cuts += [f'backbone.{layer}.{i}' for i in range(len(getattr(backbone, layer)))]
    return cuts


def resnet_stage_cuts(model: nn.Module) -> List[str]:
    """One block per stage: stem + stage 1, stage 2, ..., last stage + head.

    Args:
        model (nn.Module): A classifier with an MMPretrain ResNet-family
            backbone.

    Returns:
        list[str]: Every stage but the last (``backbone.layer1``, ...).

    Raises:
        TypeError: The backbone has no ``res_layers``.
    """
    return [f'backbone.{layer}' for layer in _res_layers(model)[:-1]]


def vit_cuts(model: nn.Module, every: int = 1) -> List[str]:
    """Every ``every`` transformer layers of a ViT-style backbone.

    The patch embedding joins the first block; the layers after the last cut
    join the final norm and the head.

    Args:
        model (nn.Module): A classifier whose backbone has a ``layers``
            ``nn.ModuleList``.
        every (int): Layers per block. Defaults to 1.

    Returns:
        list[str]: ``backbone.layers.{i}`` for ``i = every - 1, 2 * every -
        1, ...`` before the last layer.

    Raises:
        TypeError: The backbone has no ``layers`` ``nn.ModuleList``.
        ValueError: ``every`` is not a positive integer.
    """
    layers = getattr(getattr(model, 'backbone', None), 'layers', None)
    if not isinstance(layers, nn.ModuleList):
        raise TypeError('the vit cut preset needs a backbone with a `layers` '
                        'ModuleList of transformer layers (VisionTransformer, '
                        'DeiT, ...); give the cut points as a list instead.')
    if not isinstance(every, int) or every <= 0:
        raise ValueError(f'vit preset: `every` must be a positive integer, got {every!r}.')
    return [f'backbone.layers.{i}' for i in range(every - 1, len(layers) - 1, every)]


CUT_PRESETS: Dict[str, Callable[..., List[str]]] = {
    'resnet_block': resnet_block_cuts,
    'resnet_stage': resnet_stage_cuts,
    'vit': vit_cuts,
}


def resolve_cuts(model: nn.Module, cuts: Union[str, dict, Sequence[str]]) -> List[str]:
    """Turn a preset name, ``dict(preset=..., **kwargs)`` or a list into names.

    Args:
        model (nn.Module): The classifier the presets read.
        cuts (str | dict | Sequence[str]): A name of :data:`CUT_PRESETS`,
            ``dict(preset=name, **kwargs)`` (the kwargs go to the preset) or
            the cut point module names.

    Returns:
        list[str]: The cut point module names (not yet checked).

    Raises:
        KeyError: An unknown preset.
        TypeError: A list with a non-str entry (or a preset's error).
    """
    if isinstance(cuts, str):
        cuts = dict(preset=cuts)
    if isinstance(cuts, dict):
        cuts = dict(cuts)
        name = cuts.pop('preset', None)
        if name not in CUT_PRESETS:
            raise KeyError(f'unknown cut preset {name!r}; choose one of '
                           f'{sorted(CUT_PRESETS)} or give a list of module names.')
        return CUT_PRESETS[name](model, **cuts)
    if not all(isinstance(c, str) for c in cuts):
        raise TypeError(f'cut points must be module names (str), got {list(cuts)!r}.')
    return list(cuts)


# ------------------------------------------------------------ output helpers
def main_tensor(output, where: str = 'output') -> Tensor:
    """The feature a cut point hands on: the tensor itself, or the first
    floating-point tensor of a tuple/list (e.g. a patch embedding's
    ``(tokens, patch_resolution)``).

    Args:
        output (Any): A module's output.
        where (str): What ``output`` is, for the error message.

    Returns:
        Tensor: The feature.

    Raises:
        TypeError: ``output`` is neither a tensor nor a tuple/list holding a
            floating-point tensor.
    """
    if isinstance(output, Tensor):
        return output
    if isinstance(output, (tuple, list)):
        for item in output:
            if isinstance(item, Tensor) and item.is_floating_point():
                return item
    raise TypeError(f'{where} is a {type(output).__name__}, not a tensor or a '
                    'tuple/list holding one; it cannot be a cut point.')


def detach_output(output):
    """``output`` with every tensor detached (same structure).

    Args:
        output (Any): A tensor, a tuple/list (nested) of them, or anything
            else.

    Returns:
        Any: ``output`` with its tensors (also inside tuples and lists)
        detached; other objects as they are.
    """
    if isinstance(output, Tensor):
        return output.detach()
    if isinstance(output, (tuple, list)):
        return type(output)(detach_output(o) for o in output)
    return output


# ----------------------------------------------------------------- partition
@dataclass
class Partition:
    """A checked partition.

    Attributes:
        cuts (list[str]): Cut points in forward order (``K - 1`` of them).
        params (list[list[str]]): Names of the trainable parameters of each of
            the ``K`` blocks, in ``named_parameters`` order.
        shapes (list[tuple]): Shape (without batch) of the feature each cut
            point hands on, for building the local heads.
    """
    cuts: List[str]
    params: List[List[str]]
    shapes: List[Tuple[int, ...]]

    @property
    def num_blocks(self) -> int:
        return len(self.params)

    def describe(self, k: int) -> str:
        """Describe block ``k`` for messages.

        Args:
            k (int): Block index.

        Returns:
            str: E.g. ``"block 1 (from 'backbone.maxpool' to
            'backbone.layer1.0')"``; the first block starts at ``the
            input``, the last ends at ``the loss``.
        """
        start = 'the input' if k == 0 else repr(self.cuts[k - 1])
        end = repr(self.cuts[k]) if k < len(self.cuts) else 'the loss'
        return f'block {k} (from {start} to {end})'


def _check_names(model: nn.Module, cuts: List[str]) -> Dict[str, nn.Module]:
    modules = dict(model.named_modules())
    for name in cuts:
        if name not in modules or name == '':
            close = difflib.get_close_matches(name, list(modules), n=3)
            hint = f' Did you mean {close}?' if close else ''
            raise ValueError(f'cut point {name!r} is not a module of '
                             f'{type(model).__name__}.{hint} Cut points are '
                             'module names as in `model.named_modules()`.')
    dup = sorted({c for c in cuts if cuts.count(c) > 1})
    if dup:
        raise ValueError(f'cut points {dup} are listed more than once.')
    return modules


def probe_partition(model: nn.Module, cuts: Sequence[str],
                    input_shape: Sequence[int]) -> Partition:
    """Check ``cuts`` on ``model`` with one probe pass and assign parameters.

    The probe runs ``model(x, mode='tensor')`` in eval mode (running
    statistics untouched) on a random batch of two ``input_shape`` images,
    without consuming the global random stream.

    Args:
        model (nn.Module): An MMPretrain classifier (not yet cut).
        cuts (Sequence[str]): Cut point module names.
        input_shape (Sequence[int]): ``(C, H, W)`` of the network input after
            the data preprocessor.

    Returns:
        Partition: The cut points, each block's trainable parameter names
        and the shape each cut point hands on.

    Raises:
        TypeError: A cut point's output holds no floating-point tensor.
        ValueError: A name that is not a module or is listed twice; a cut
            point called never, or more than once, per forward pass; cut
            points out of forward order; a trainable parameter that no block
            uses or that two blocks use; a block without trainable
            parameters.
    """
    cuts = list(cuts)
    modules = _check_names(model, cuts)
    fired: List[Tuple[str, Tensor]] = []

    def hook_for(name):
        def hook(module, args, output):
            fired.append((name, main_tensor(output, f'the output of {name!r}')))
            return detach_output(output)
        return hook

    handles = [modules[c].register_forward_hook(hook_for(c)) for c in cuts]
    try:
        with probing(model) as device, torch.enable_grad():
            out = model(torch.randn(2, *input_shape, device=device), mode='tensor')
    finally:
        for h in handles:
            h.remove()

    order = [name for name, _ in fired]
    for name in cuts:
        n = order.count(name)
        if n != 1:
            raise ValueError(
                f'cut point {name!r} is called {n} times in a forward pass; a '
                'cut point must be a module that runs exactly once (not an '
                'unused or shared module).')
    if order != cuts:
        raise ValueError(f'cut points out of forward order: got {cuts}, but the '
                         f'forward pass reaches them in the order {order}. List '
                         'them in that order.')

    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    outputs = [t for _, t in fired] + [main_tensor(out, 'the model output')]
    owners: Dict[str, List[int]] = {}
    for k, t in enumerate(outputs):
        if not t.requires_grad:
            continue  # nothing trainable produced it: reported below
        # graphs kept: with a skip across a cut point two blocks share one
        grads = torch.autograd.grad(t.float().sum(), [p for _, p in named],
                                    allow_unused=True, retain_graph=True)
        for (n, _), g in zip(named, grads):
            if g is not None:
                owners.setdefault(n, []).append(k)

    shared = {n: ks for n, ks in owners.items() if len(ks) > 1}
    if shared:
        n, ks = next(iter(shared.items()))
        raise ValueError(
            f'parameter {n!r} is used by blocks {ks} ({len(shared)} such '
            'parameters): its gradient would cross a block boundary. Move the '
            'cut points so that a shared module or a skip connection lies '
            'inside one block.')
    outside = [n for n, _ in named if n not in owners]
    if outside:
        raise ValueError(
            f'{len(outside)} trainable parameters lie outside every block, e.g. '
            f'{outside[:4]}: no block output depends on them (for example a '
            'stage whose output the network discards, see `out_indices`). '
            'Remove or freeze them (requires_grad=False), or change the cut '
            'points.')
    blocks = [[n for n, _ in named if owners[n] == [k]] for k in range(len(outputs))]
    partition = Partition(cuts, blocks, [tuple(t.shape[1:]) for _, t in fired])
    for k, names in enumerate(blocks):
        if not names:
            raise ValueError(f'{partition.describe(k)} has no trainable '
                             'parameters; remove one of its cut points.')
    return partition
