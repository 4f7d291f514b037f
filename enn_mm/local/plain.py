"""ENN-ℓ checkpoint + config -> those of the plain classifier (no local heads).

The local heads (and local objectives) only train the blocks; the network
they train is the inner model of ``ENNLocalClassifier`` (an ``ENNModel`` or
a dense classifier). :func:`plain_checkpoint`, which
``tools/export_local.py`` calls, writes that model's checkpoint and config
and checks that it computes exactly what the ENN-ℓ model computes. If the
inner model is an ``ENNModel``, ``tools/export_dense.py OUT.py OUT.pth
DENSE.pth`` then gives a checkpoint for vanilla MMPretrain
(:func:`enn_mm.models.export_checkpoint`).
"""
import copy
from typing import Optional, Union

import torch
from mmengine.config import Config
from mmengine.logging import print_log

from ..models.dense_export import check_export, export_meta, load_model, save_export
from ..models.loading import LOCAL_PREFIXES

__all__ = ['plain_model_config', 'strip_local_heads', 'plain_config', 'plain_checkpoint']



def plain_model_config(model_cfg: dict) -> dict:
    """The model config without ENN-ℓ: the inner model's (ENN or dense).

    Args:
        model_cfg (dict): A model config.

    Returns:
        dict: A deep copy of the ``model`` of an ``ENNLocalClassifier``
        config, else of ``model_cfg`` itself.
    """
    model_cfg = copy.deepcopy(model_cfg)
    if model_cfg.get('type') == 'ENNLocalClassifier':
        model_cfg = model_cfg['model']
    return model_cfg


def strip_local_heads(state_dict: dict) -> dict:
    """``state_dict`` without the local heads' (and their loss's) entries.

    Args:
        state_dict (dict): An ENN-ℓ model's state dict.

    Returns:
        dict: Of ``state_dict``'s type, without the keys starting with
        ``local_heads.``, ``local_loss.`` or ``local_objectives.``.
    """
    return type(state_dict)((k, v) for k, v in state_dict.items()
                            if not k.startswith(LOCAL_PREFIXES))


def plain_config(cfg):
    """The full config for the plain classifier: inner model, one optimizer
    built by the rules constructor the blocks used, one schedule.

    Args:
        cfg (Config): The ENN-ℓ config.

    Returns:
        Config: A deep copy with the inner model
        (:func:`plain_model_config`); an ``ENNLocalOptimWrapperConstructor``
        replaced by its ``block_constructor`` (default
        ``ENNOptimWrapperConstructor`` for an ``ENNModel``, else
        ``DefaultOptimWrapperConstructor``); a ``param_scheduler`` dict of
        per-block lists replaced by its first list; ``load_from`` set to
        None.
    """
    cfg = copy.deepcopy(cfg)
    cfg.model = plain_model_config(cfg.model)
    optim = cfg.get('optim_wrapper', None)
    if optim and optim.get('constructor') == 'ENNLocalOptimWrapperConstructor':
        rules = optim.pop('block_constructor', None) or (
            'ENNOptimWrapperConstructor' if cfg.model.get('type') == 'ENNModel'
            else 'DefaultOptimWrapperConstructor')
        optim['constructor'] = rules
    sched = cfg.get('param_scheduler', None)
    if isinstance(sched, dict) and 'type' not in sched:  # one list per block
        cfg.param_scheduler = next(iter(sched.values()))
    cfg.load_from = None
    return cfg


def plain_checkpoint(config: Union[str, Config], checkpoint: str, out: str,
                     cfg_options: Optional[dict] = None, num_inputs: int = 4) -> dict:
    """Write ``out`` (the ENN-ℓ checkpoint's state dict without the local
    heads; loads with ``weights_only=True``) and ``out`` with ``.py``
    (:func:`plain_config`), and check the result.

    The check builds the plain model from the written config, loads the
    written checkpoint into it strictly and requires its ``'tensor'``
    output on a random batch to equal the ENN-ℓ model's exactly. The files
    are written before the check (and left in place if it fails).

    Args:
        config (str | Config): The ENN-ℓ config (an ``ENNLocalClassifier``
            model) the checkpoint was trained with, or its path.
        checkpoint (str): The ENN-ℓ checkpoint.
        out (str): Path of the plain checkpoint (``.pth``).
        cfg_options (dict, optional): Merged into the config (as
            ``--cfg-options``).
        num_inputs (int): Size of the random check batch. Defaults to 4.

    Returns:
        dict: ``checkpoint`` and ``config`` (the paths written) and
        ``dropped`` (the number of local-head entries left out).

    Raises:
        ValueError: The model is not an ``ENNLocalClassifier``.
        ExportCheckError: The plain model computes something else.
    """
    cfg = Config.fromfile(config) if isinstance(config, str) else copy.deepcopy(config)
    if cfg_options:
        cfg.merge_from_dict(cfg_options)
    if cfg.model.get('type') != 'ENNLocalClassifier':
        raise ValueError('the model is not an ENNLocalClassifier; there are no local '
                         'heads to drop.')
    model, ckpt = load_model(cfg, checkpoint)
    gen = torch.Generator().manual_seed(0)
    inputs = torch.randn(num_inputs, *model.local_input_shape, generator=gen)
    with torch.no_grad():
        ref = model(inputs, mode='tensor')

    out_cfg = plain_config(cfg)
    full = model.state_dict()
    state = strip_local_heads(full)
    cfg_out = save_export(out, state, export_meta(ckpt, checkpoint, 'enn_local'), out_cfg)
    check_export(out_cfg.model, out, inputs, ref, 0.0, 'plain export', 'ENN-ℓ model')
    dropped = len(full) - len(state)
    print_log(f'{checkpoint} -> {out}: {dropped} local-head entries dropped',
              logger='current')
    return dict(checkpoint=out, config=cfg_out, dropped=dropped)
