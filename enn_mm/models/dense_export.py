"""ENN checkpoint + config -> dense checkpoint + config for vanilla MMPretrain.

The model-level step, ``W = Q·diag(λ)·Pᵀ`` written back into plain
``Conv2d``/``Linear`` layers, is :func:`enn_mm.core.export_dense` (pure
PyTorch). This module adds what the MMPretrain side needs around it: the
config without the ENN lines (:func:`dense_config`) and the whole checkpoint
conversion with its output check (:func:`export_checkpoint`), which
``tools/export_dense.py`` calls.

The steps every checkpoint export takes (this one and ENN-ℓ's
:func:`enn_mm.local.plain_checkpoint`) are the helpers :func:`load_model`,
:func:`export_meta`, :func:`save_export`, :func:`check_export` and the
command line :func:`export_cli`.
"""
import argparse
import copy
import os.path as osp
from typing import Callable, Optional, Sequence

import torch
from mmengine.config import Config, DictAction
from mmengine.logging import print_log
from mmengine.registry import init_default_scope
from mmengine.runner import Runner
from mmpretrain.registry import MODELS

from .. import __version__
from ..core import enn_modules, export_dense, orthogonality_error
from .loading import init_model
from .mixin import vanilla_class

__all__ = ['dense_config', 'export_checkpoint', 'ExportCheckError', 'load_model',
           'export_meta', 'save_export', 'check_export', 'export_cli']

ENN_LAYER_TYPES = {'ENNConv2d': 'Conv2d', 'ENNLinear': 'Linear'}


class ExportCheckError(RuntimeError):
    """An exported model does not compute what its source model computes."""


# --------------------------------------------- the steps every export takes
def load_model(cfg: Config, checkpoint: str) -> tuple:
    """Build ``cfg.model`` as the Runner does and load ``checkpoint`` into
    it strictly on the CPU (:func:`enn_mm.models.init_model`).

    Args:
        cfg (Config): The config the checkpoint was trained with.
        checkpoint (str): The checkpoint (a path or URI).

    Returns:
        tuple: The model (in eval mode) and the loaded checkpoint dict.

    Raises:
        CheckpointMismatchError: The checkpoint does not fit the config.
    """
    return init_model(cfg, checkpoint)


def export_meta(ckpt: dict, checkpoint: str, key: str, **info) -> dict:
    """The meta of an exported checkpoint: the source's ``dataset_meta`` and,
    under ``key``, the source's absolute path and ``info``.

    Args:
        ckpt (dict): The loaded source checkpoint.
        checkpoint (str): The source checkpoint's path.
        key (str): The meta key of this export (``'enn_mm'``, say).
        **info: Further entries under ``key`` (version, orthogonality
            error, ...).

    Returns:
        dict: ``{'dataset_meta': ..., key: dict(source=..., **info)}``;
        ``dataset_meta`` is None when the source has none.
    """
    return {'dataset_meta': ckpt.get('meta', {}).get('dataset_meta'),
            key: dict(source=osp.abspath(checkpoint), **info)}


def save_export(out: str, state_dict: dict, meta: dict, cfg: Config) -> str:
    """Write ``out`` (``state_dict`` and ``meta``) and ``cfg`` next to it as
    ``out`` with ``.py``; returns the config's path.

    Args:
        out (str): Path of the checkpoint to write (``.pth``).
        state_dict (dict): The weights to save.
        meta (dict): The checkpoint's ``meta`` (:func:`export_meta`).
        cfg (Config): The config to dump next to ``out``.

    Returns:
        str: The path of the written config.
    """
    torch.save(dict(state_dict=state_dict, meta=meta), out)
    cfg_out = osp.splitext(out)[0] + '.py'
    cfg.dump(cfg_out)
    return cfg_out


def check_export(model_cfg: dict, out: str, inputs, ref, tolerance: float,
                 name: str, reference: str) -> Optional[float]:
    """Check a written export independently of the model it came from.

    Builds a fresh model from ``model_cfg`` (the exported config's), loads
    ``out`` into it safely (``weights_only=True``) and strictly, and, if
    ``inputs`` is given, compares its ``'tensor'`` output (the last stage of
    a tuple) with ``ref``, the source model's on the same inputs.

    Args:
        model_cfg (dict): The exported model config.
        out (str): The exported checkpoint.
        inputs (Tensor, optional): Model inputs; None: load check only.
        ref (Tensor | tuple, optional): The source model's ``'tensor'``
            output on ``inputs`` (of a tuple, the last item is compared).
        tolerance (float): Largest relative difference (largest absolute
            difference over the largest absolute reference value) accepted;
            0: the outputs must be equal.
        name (str): The export, for the log line ('dense export').
        reference (str): The source model, for the log line and the error
            ('ENN model').

    Returns:
        float | None: The relative difference (None without ``inputs``).

    Raises:
        ExportCheckError: The difference is above ``tolerance`` (or NaN).
    """
    model = MODELS.build(copy.deepcopy(model_cfg)).eval()
    state = torch.load(out, map_location='cpu', weights_only=True)['state_dict']
    model.load_state_dict(state, strict=True)
    if inputs is None:
        return None
    with torch.no_grad():
        got = model(inputs, mode='tensor')
    got, want = (o[-1] if isinstance(o, (tuple, list)) else o for o in (got, ref))
    diff = ((got - want).abs().max() / want.abs().max().clamp_min(1e-12)).item()
    print_log(f'{name} vs {reference}: max relative output difference {diff:.2e}',
              logger='current')
    if not diff <= tolerance:  # NaN included
        raise ExportCheckError(f'the exported model differs from the {reference} '
                               f'(relative difference {diff:.2e} > {tolerance:g})')
    return diff


def export_cli(export: Callable[[Config, str, str], dict], description: str,
               argv: Optional[Sequence[str]] = None) -> dict:
    """The command line of the export tools: ``CONFIG CHECKPOINT OUT.pth
    [--cfg-options ...]``; calls ``export(cfg, checkpoint, out)`` in the
    config's default scope and logs where the files went.

    Args:
        export (Callable): ``export(cfg, checkpoint, out)``, returning a dict
            with at least ``config`` (the written config's path).
        description (str): The description of the argument parser.
        argv (Sequence[str], optional): The arguments; None reads
            ``sys.argv``.

    Returns:
        dict: What ``export`` returned.

    Raises:
        SystemExit: ``export`` raised ``ValueError`` or
            :class:`ExportCheckError` (the message names both inputs), or
            the arguments are invalid (from ``argparse``).
    """
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument('config')
    parser.add_argument('checkpoint')
    parser.add_argument('out', help='output checkpoint path (.pth)')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction)
    args = parser.parse_args(argv)
    cfg = Config.fromfile(args.config)
    if args.cfg_options:
        cfg.merge_from_dict(args.cfg_options)
    init_default_scope(cfg.get('default_scope', 'mmpretrain'))
    try:
        result = export(cfg, args.checkpoint, args.out)
    except (ValueError, ExportCheckError) as err:
        raise SystemExit(f'{args.checkpoint} / {args.config}: {err}')
    print_log(f"exported {args.checkpoint} -> {args.out} (config {result['config']})",
              logger='current')
    return result


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

    Args:
        cfg (Config): The ENN config; not modified (a deep copy is changed).

    Returns:
        Config: The dense config.
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
    model, ckpt = load_model(cfg, checkpoint)
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
    meta = export_meta(ckpt, checkpoint, 'enn_mm', version=__version__,
                       orthogonality_error=ortho_err)
    cfg_out = save_export(out, model.state_dict(), meta, dense_cfg)
    diff: Optional[float] = None
    if check:  # independent of the model above: built from the dense config
        diff = check_export(dense_cfg.model, out, inputs, ref, tolerance,
                            'dense export', 'ENN model')
    return dict(config=cfg_out, orthogonality_error=ortho_err, max_relative_difference=diff)
