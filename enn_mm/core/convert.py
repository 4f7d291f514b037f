"""Conversion of dense models to ENN and back, in place."""
import fnmatch
import types
from contextlib import contextmanager
from typing import Iterable, Optional, Sequence, Tuple, Union

import torch
from torch import nn
from torch.nn.utils import parametrize

from .eigenbasis import Eigenbasis, eigenbasis, enn_modules, factors, is_enn
from .factored import enn_forward
from .share import share_groups, tie_group

__all__ = [
    'SUPPORTED_TYPES', 'convert_to_enn', 'export_dense', 'is_enn', 'enn_modules',
    'factors', 'register_eigenbasis', 'dense_view'
]

# Layers whose weight is (out, in/groups, *kernel) and that read it as
# ``self.weight``. Transposed convs store (in, out/groups, ...) and stay dense.
SUPPORTED_TYPES = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)
_TYPE_NAMES = {t.__name__: t for t in SUPPORTED_TYPES}

TypeSpec = Union[type, str]


def _load_dense_weight(module, state_dict, prefix, local_metadata, strict,
                       missing_keys, unexpected_keys, error_msgs):
    """Load-state-dict pre-hook: factor a dense ``weight`` entry by SVD.

    This is what lets a dense (e.g. pretrained) checkpoint load into an ENN
    model with unchanged outputs.
    """
    key = prefix + 'weight'
    if key not in state_dict or not is_enn(module):
        return
    eig = eigenbasis(module)
    if eig.share:
        error_msgs.append(f'{key}: a dense weight cannot be loaded into a layer with a '
                          f'shared basis (group {eig.share[0]!r}); load dense '
                          "checkpoints through init_cfg=dict(type='Pretrained', ...), which "
                          'factors and re-shares them, or before sharing.')
        return
    weight = state_dict[key]
    if tuple(weight.shape) != tuple(eig.shape):
        error_msgs.append(f'size mismatch for {key}: the checkpoint has a dense '
                          f'weight of shape {tuple(weight.shape)}, the ENN layer '
                          f'stands for shape {tuple(eig.shape)}.')
        return
    del state_dict[key]
    for i, t in enumerate(eig.right_inverse(weight)):
        state_dict[f'{prefix}parametrizations.weight.original{i}'] = t


def _bind_forward(module: nn.Module) -> None:
    # An instance attribute, not a class change: deep copies rebind it to the
    # copy, and the dense class is untouched (see _to_dense).
    module.forward = types.MethodType(enn_forward, module)


def register_eigenbasis(module: nn.Module) -> nn.Module:
    """Reparameterize ``module.weight`` in place by its SVD (same outputs).

    Registers an :class:`Eigenbasis` parametrization on ``weight`` (one basis
    pair per group, from ``module.groups`` if it has one), binds the ENN
    forward (:func:`enn_mm.core.factored.enn_forward`) to the instance and,
    once per module, a load-state-dict pre-hook that factors a dense
    ``weight`` entry of a checkpoint by SVD.

    Args:
        module (nn.Module): A Linear/Conv layer whose ``weight`` is
            ``(out, in/groups, *kernel)``, modified in place.

    Returns:
        nn.Module: ``module`` itself.
    """
    groups = getattr(module, 'groups', 1)
    parametrize.register_parametrization(
        module, 'weight', Eigenbasis(module.weight.shape, groups))
    _bind_forward(module)
    if not hasattr(module, '_enn_load_hook'):
        module._enn_load_hook = module.register_load_state_dict_pre_hook(_load_dense_weight)
    return module


def _resolve_types(types: Iterable[TypeSpec]) -> Tuple[type, ...]:
    resolved = []
    for t in types:
        cls = _TYPE_NAMES.get(t) if isinstance(t, str) else t
        if cls is None or not isinstance(cls, type) or not issubclass(cls, SUPPORTED_TYPES):
            name = t if isinstance(t, str) else getattr(t, '__name__', repr(t))
            raise ValueError(
                f'ENN cannot convert layers of type {name!r}: it factors the '
                f'weights of {", ".join(_TYPE_NAMES)} (and their subclasses). '
                f'Remove {name!r} from `types`; such layers stay dense.')
        resolved.append(cls)
    return tuple(resolved)


def _check_convertible(name: str, module: nn.Module) -> None:
    """Reject layers whose weight cannot be reparameterized, naming the fix."""
    weight = getattr(module, 'weight', None)
    if isinstance(weight, nn.parameter.UninitializedParameter):
        raise ValueError(f'layer {name!r} ({type(module).__name__}) is not '
                         'initialized yet (lazy module): run one forward pass '
                         'before converting, or exclude it.')
    if parametrize.is_parametrized(module, 'weight'):
        raise ValueError(f'layer {name!r} already has a parametrization on its '
                         'weight (e.g. weight or spectral norm); ENN cannot be '
                         'stacked on it. Add it to `exclude`.')
    if isinstance(module, nn.modules.conv._ConvNd) and module.transposed:
        raise ValueError(f'layer {name!r} is a transposed conv, which ENN does '
                         'not support. Add it to `exclude`.')


def convert_to_enn(model: nn.Module,
                   include: Optional[Sequence[str]] = None,
                   exclude: Optional[Sequence[str]] = None,
                   types: Sequence[TypeSpec] = (nn.Conv2d, nn.Linear)) -> nn.Module:
    """Reparameterize the Conv/Linear weights of ``model`` in place.

    Each selected layer gets ``W = Q·diag(λ)·Pᵀ`` from the SVD of its current
    weight, so the model computes what it computed before. Layers that are
    already ENN are left as they are; norms, embeddings and loose parameters
    (cls tokens, position embeddings) are never touched.

    Args:
        model (nn.Module): The model, modified in place.
        include (Sequence[str], optional): Glob patterns (``fnmatch``) on
            module names, e.g. ``['backbone.*']``; only matching layers
            convert. Defaults to all layers of the selected types.
        exclude (Sequence[str], optional): Glob patterns of layers to keep
            dense, e.g. ``['head.*']``.
        types (Sequence[type | str]): Layer types to convert, classes or
            names among Linear, Conv1d, Conv2d, Conv3d.

    Returns:
        nn.Module: ``model`` itself.

    Raises:
        ValueError: A pattern that matches no layer of the selected types, a
            type ENN cannot factor, or a selected layer it cannot convert.
    """
    types = _resolve_types(types)
    include, exclude = list(include or []), list(exclude or [])
    candidates = [(n, m) for n, m in model.named_modules()
                  if isinstance(m, types) and getattr(m, 'weight', None) is not None]
    names = [n for n, _ in candidates]
    for kind, patterns in (('include', include), ('exclude', exclude)):
        for pat in patterns:
            if not fnmatch.filter(names, pat):
                raise ValueError(
                    f'ENN {kind} pattern {pat!r} matches no '
                    f'{"/".join(t.__name__ for t in types)} layer of '
                    f'{type(model).__name__}. Patterns are globs on module '
                    f'names such as {names[:3]}; fix or remove it.')

    def selected(name):
        if include and not any(fnmatch.fnmatchcase(name, p) for p in include):
            return False
        return not any(fnmatch.fnmatchcase(name, p) for p in exclude)

    for name, module in candidates:
        if selected(name) and not is_enn(module):
            _check_convertible(name, module)
            register_eigenbasis(module)
    return model


_ENN_CLASSES = {}  # ENNConv2d -> nn.Conv2d etc., filled by layers.py


# torch's remove_parametrizations() deletes the ``weight`` property from the
# class that register_parametrization() injected; deep copies (EMA models,
# ``export_dense(copy.deepcopy(m))``) share that class object, so removing it
# on one model breaks every copy. These two helpers swap a layer between its
# ENN and dense form without touching any class object.
def _to_dense(module: nn.Module) -> Tuple[type, nn.Module]:
    """Turn an ENN layer into its plain class with a dense weight, in place."""
    if len(module.parametrizations) != 1:
        raise ValueError('ENN layers with other parametrizations besides the '
                         'weight cannot be made dense.')
    with torch.no_grad():
        weight = module.weight.detach().clone()
    requires_grad = factors(module)[0].requires_grad
    enn_cls, plist = type(module), module._modules.pop('parametrizations')
    module.__class__ = enn_cls.__bases__[0]  # the class before injection
    module.__dict__.pop('forward', None)
    module.register_parameter('weight', nn.Parameter(weight, requires_grad))
    return enn_cls, plist


def _to_enn(module: nn.Module, enn_cls: type, plist: nn.Module) -> None:
    """Undo :func:`_to_dense`, factoring the (maybe new) dense weight into
    the same factor Parameters."""
    weight = module._parameters.pop('weight')
    module._modules['parametrizations'] = plist
    module.__class__ = enn_cls
    _bind_forward(module)
    with torch.no_grad():
        for param, value in zip(factors(module), plist.weight[0].right_inverse(weight)):
            param.copy_(value)


def export_dense(model: nn.Module) -> nn.Module:
    """Materialize every ENN layer back into a plain dense weight, in place.

    The result holds ordinary ``nn.Conv2d`` / ``nn.Linear`` modules whose
    ``state_dict`` loads into the original (non-ENN) model definition. Copies
    of the model (``copy.deepcopy``) are not affected.

    Args:
        model (nn.Module): The model, modified in place. Layers built as
            ``ENNConv2d`` / ``ENNLinear`` become ``nn.Conv2d`` / ``nn.Linear``.

    Returns:
        nn.Module: ``model`` itself.

    Raises:
        ValueError: An ENN layer has parametrizations on other tensors than
            its weight.
    """
    for _, module in list(enn_modules(model)):
        _to_dense(module)
        module._enn_load_hook.remove()
        del module._enn_load_hook
        if type(module) in _ENN_CLASSES:
            module.__class__ = _ENN_CLASSES[type(module)]
    return model


@contextmanager
def dense_view(model: nn.Module):
    """Show ENN layers as dense layers for the duration of the block.

    Weight initializers (mmengine's ``init_cfg``, ``nn.init`` on
    ``module.weight``) write into a dense weight; in an ENN layer that weight
    is computed, so writes would be lost. Inside this context each ENN layer
    has a plain dense ``weight``; on exit the (possibly re-initialized) weight
    is factored again by SVD *into the same Parameter objects*, so optimizers,
    DDP and EMA that already hold them stay valid.

    Shared bases (:func:`enn_mm.core.share_bases`) are re-tied on exit from
    the new dense weights of each group.

    Args:
        model (nn.Module): The model whose ENN layers to show dense.

    Yields:
        nn.Module: ``model`` itself, its ENN layers dense inside the block.

    Raises:
        ValueError: An ENN layer has parametrizations on other tensors than
            its weight.
    """
    groups = share_groups(model)
    saved = [(module, *_to_dense(module)) for _, module in list(enn_modules(model))]
    try:
        yield model
    finally:
        dense = {module: module.weight.detach().clone() for module, _, _ in saved}
        for module, enn_cls, plist in saved:
            _to_enn(module, enn_cls, plist)
        for members in groups.values():  # shared bases: re-tie from the new weights
            tie_group(members, eigenbasis(members[0]).share[1], dense)
