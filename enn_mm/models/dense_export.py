"""ENN checkpoint + config -> dense checkpoint + config for vanilla MMPretrain.

The model-level step, ``W = Q·diag(λ)·Pᵀ`` written back into plain
``Conv2d``/``Linear`` layers, is :func:`enn_mm.core.export_dense` (pure
PyTorch). This module adds what the MMPretrain side needs around it: the
config without the ENN lines (:func:`dense_config`) and the whole checkpoint
conversion with its output check (:func:`export_checkpoint`), which
``tools/export_dense.py`` calls.
"""
import copy
import os.path as osp
from typing import Optional

import torch
from mmengine.config import Config
from mmengine.logging import print_log
from mmengine.runner import load_checkpoint

from .. import __version__
from ..core import enn_modules, export_dense, orthogonality_error
from .enn_model import vanilla_class

__all__ = ['dense_config', 'export_checkpoint', 'ExportCheckError']

ENN_LAYER_TYPES = {'ENNConv2d': 'Conv2d', 'ENNLinear': 'Linear'}


class ExportCheckError(RuntimeError):
    """The exported dense model does not compute what the ENN model computes."""


def _is_plugin(type_name) -> bool:
    return isinstance(type_name, str) and type_name.startswith(('ENN', 'Faiss'))


def _plugin_types(node) -> set:
    found = set()
    if isinstance(node, dict):
        if _is_plugin(node.get('type')):
            found.add(node['type'])
        for value in node.values():
            found |= _plugin_types(value)
    elif isinstance(node, (list, tuple)):
        for value in node:
            found |= _plugin_types(value)
    return found


def dense_config(cfg: Config) -> Config:
    """The config without ENN: inner model, plain layers, no plugin import.

    ``ENNModel`` is replaced by the model it wraps, ``ENNConv2d`` /
    ``ENNLinear`` layer configs by ``Conv2d`` / ``Linear``; ENN hooks, the
    ENN optimizer constructor and ``load_from`` are dropped. ``custom_imports``
    goes too unless something else of the plugin (a Faiss metric, say) is
    still used, so that the dense config stays runnable.
    """
    cfg = copy.deepcopy(cfg)
    if cfg.model.get('type') == 'ENNModel':
        cfg.model = cfg.model.model

    def plain(node):
        if isinstance(node, dict):
            if node.get('type') in ENN_LAYER_TYPES:
                node['type'] = ENN_LAYER_TYPES[node['type']]
            for value in node.values():
                plain(value)
        elif isinstance(node, (list, tuple)):
            for value in node:
                plain(value)

    plain(cfg.model)
    cfg.custom_hooks = [h for h in cfg.get('custom_hooks', []) if not _is_plugin(h.get('type'))]
    if cfg.get('optim_wrapper', {}).get('constructor') == 'ENNOptimWrapperConstructor':
        cfg.optim_wrapper.pop('constructor')
    cfg.load_from = None
    leftovers = sorted(_plugin_types(cfg.to_dict()))
    if leftovers:
        print_log(f'the dense config still uses {leftovers} and keeps custom_imports; the '
                  'checkpoint itself loads without the plugin', logger='current')
    else:
        cfg.pop('custom_imports', None)
    return cfg


def _test_inputs(cfg: Config, model, n: int = 8):
    """A few real test images through the model's preprocessor, or None (with
    a log line) where the test data is not on this machine."""
    from mmengine.runner import Runner
    loader_cfg = copy.deepcopy(cfg.test_dataloader)
    loader_cfg.update(batch_size=n, num_workers=0, persistent_workers=False)
    try:
        data = next(iter(Runner.build_dataloader(loader_cfg)))
    except (OSError, RuntimeError) as err:  # missing files, failed download
        print_log(f'output check skipped: test data unavailable ({err})', logger='current')
        return None
    return model.data_preprocessor(data, False)['inputs']


def export_checkpoint(cfg: Config, checkpoint: str, out: str, check: bool = True,
                      tolerance: float = 1e-4) -> dict:
    """Write ``out`` (a dense state dict that loads with ``weights_only=True``
    into vanilla MMPretrain) and ``out`` with ``.py`` (:func:`dense_config`).

    Args:
        cfg (Config): The config the ENN checkpoint was trained with.
        checkpoint (str): The ENN checkpoint.
        out (str): Path of the dense checkpoint (``.pth``).
        check (bool): Build the vanilla model from the dense config, load the
            file safely and strictly, and compare its outputs with the ENN
            model's on a few test images (skipped, with a log line, only where
            the test data is not available).
        tolerance (float): Largest relative output difference accepted.

    Returns:
        dict: ``config`` (path of the dense config), ``orthogonality_error``
        and ``max_relative_difference`` (None when not checked).

    Raises:
        ValueError: The model has no ENN layer.
        ExportCheckError: The dense model computes something else.
    """
    from mmpretrain.registry import MODELS
    model = MODELS.build(cfg.model)
    ckpt = load_checkpoint(model, checkpoint, map_location='cpu', strict=True)
    model.eval()
    if not any(True for _ in enn_modules(model)):
        raise ValueError(f'{checkpoint}: the model has no ENN layers, there is nothing to '
                         'export.')
    ortho_err = orthogonality_error(model)
    inputs = _test_inputs(cfg, model) if check else None
    with torch.no_grad():
        ref = model(inputs, mode='tensor') if inputs is not None else None

    export_dense(model)
    model.__class__ = vanilla_class(model)
    dense_cfg = dense_config(cfg)
    meta = dict(dataset_meta=ckpt.get('meta', {}).get('dataset_meta'),
                enn_mm=dict(version=__version__, source=osp.abspath(checkpoint),
                            orthogonality_error=ortho_err))
    torch.save(dict(state_dict=model.state_dict(), meta=meta), out)
    cfg_out = osp.splitext(out)[0] + '.py'
    dense_cfg.dump(cfg_out)

    diff: Optional[float] = None
    if check:  # independent of the model above: built from the dense config
        vanilla = MODELS.build(dense_cfg.model).eval()
        state = torch.load(out, map_location='cpu', weights_only=True)['state_dict']
        vanilla.load_state_dict(state, strict=True)
        if ref is not None:
            with torch.no_grad():
                got = vanilla(inputs, mode='tensor')
            got, want = (o[-1] if isinstance(o, (tuple, list)) else o for o in (got, ref))
            diff = ((got - want).abs().max() / want.abs().max().clamp_min(1e-12)).item()
            print_log(f'dense export vs ENN model: max relative output difference {diff:.2e}',
                      logger='current')
            if diff > tolerance:
                raise ExportCheckError(f'the exported model differs from the ENN model '
                                       f'(relative difference {diff:.2e} > {tolerance:g})')
    return dict(config=cfg_out, orthogonality_error=ortho_err, max_relative_difference=diff)
