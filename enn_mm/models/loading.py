"""Build a config's model and load a checkpoint into it as the Runner does.

Tools that run a trained model outside the Runner (retrieval evaluation, the
exports) go through :func:`init_model`, so they see what ``tools/test.py``
sees: the config's top-level ``data_preprocessor`` injected into the model
(the Runner does this, and so does ``mmpretrain.apis.get_model``; without it
images reach the network un-normalized), and every weight loaded, strictly.
A checkpoint that does not fit the config is refused with
:class:`CheckpointMismatchError`, which names the likely cause and the fix.
"""
import copy
import os.path as osp
from collections import OrderedDict
from typing import Tuple

from mmengine.config import Config
from mmengine.runner.checkpoint import _load_checkpoint
from mmpretrain.registry import MODELS
from torch.nn.modules.utils import consume_prefix_in_state_dict_if_present

__all__ = ['CheckpointMismatchError', 'build_model', 'load_model_checkpoint', 'init_model']

ENN_KEY = '.parametrizations.weight.original'
# what ENN-ℓ adds to a classifier's state dict (enn_mm.local.plain drops these)
LOCAL_PREFIXES = ('local_heads.', 'local_objectives.', 'local_loss.')


class CheckpointMismatchError(ValueError):
    """A checkpoint does not fit the model its config builds."""


def build_model(cfg: Config):
    """Build ``cfg.model`` with the config's ``data_preprocessor``, as the
    Runner does (a model config that sets its own keeps it).

    Args:
        cfg (Config): A full config (``model`` and, usually, a top-level
            ``data_preprocessor``), its default scope already set.

    Returns:
        nn.Module: The built model (not initialised, not loaded).
    """
    model_cfg = copy.deepcopy(cfg.model)
    if cfg.get('data_preprocessor') is not None:
        model_cfg.setdefault('data_preprocessor', copy.deepcopy(cfg.data_preprocessor))
    return MODELS.build(model_cfg)


def _state_dict(ckpt: dict) -> OrderedDict:
    """The checkpoint's state dict without the ``module.`` prefix of a
    DDP-wrapped save (what mmengine's ``load_checkpoint`` strips too)."""
    state = OrderedDict(ckpt.get('state_dict', ckpt))
    state._metadata = getattr(ckpt.get('state_dict', ckpt), '_metadata', OrderedDict())
    consume_prefix_in_state_dict_if_present(state, 'module.')
    return state


def _diagnose(model, state: dict, checkpoint: str, missing=None, unexpected=None,
              detail: str = '') -> str:
    """Why ``state`` does not load into ``model``, and what to do."""
    ours, theirs = set(model.state_dict()), set(state)
    name = osp.basename(checkpoint)
    if any(ENN_KEY in k for k in theirs) and not any(ENN_KEY in k for k in ours):
        return (f'{name} is an ENN checkpoint (factored Q, λ, P weights) but the config builds '
                'a dense model: use the ENN config it was trained with, or export it first '
                '(python tools/export_dense.py ENN_CONFIG CHECKPOINT dense.pth) and use '
                'dense.py with dense.pth.')
    if any(k.startswith(LOCAL_PREFIXES) for k in theirs) and \
            not any(k.startswith(LOCAL_PREFIXES) for k in ours):
        return (f'{name} is an ENN-ℓ checkpoint (it holds local heads) but the config builds '
                'no ENNLocalClassifier: use the ENN-ℓ config it was trained with, or export '
                'it first (python tools/export_local.py LOCAL_CONFIG CHECKPOINT plain.pth) '
                'and use plain.py with plain.pth.')
    missing, unexpected = sorted(missing or ()), sorted(unexpected or ())
    parts = []
    if missing:
        parts.append(f'{len(missing)} model weights are not in it (first: {missing[0]})')
    if unexpected:
        parts.append(f'{len(unexpected)} of its entries are not in the model '
                     f'(first: {unexpected[0]})')
    # torch's own lines for what keys cannot say: shapes, a refused dense weight
    errors = [line.strip().rstrip('.') for line in detail.splitlines()[1:] if line.strip()]
    if errors:
        parts.append(f'{len(errors)} entries do not load ({errors[0]})')
    what = '; '.join(parts)
    return (f'{name} does not match the model of the config: {what}. Use the config the '
            'checkpoint was trained with.')


def load_model_checkpoint(model, checkpoint: str, map_location: str = 'cpu') -> dict:
    """Load ``checkpoint`` into ``model``, every weight, strictly.

    Dense weights still load into ENN layers (they are factored on load), as
    with the Runner's ``load_from``.

    Args:
        model (nn.Module): The built model.
        checkpoint (str): A path or URI mmengine's ``CheckpointLoader`` reads.
        map_location (str): Where tensors are loaded. Defaults to 'cpu'.

    Returns:
        dict: The loaded checkpoint (``state_dict``, ``meta``, ...).

    Raises:
        CheckpointMismatchError: The checkpoint holds other weights than the
            model has; the message names the mismatch and the fix.
    """
    ckpt = _load_checkpoint(checkpoint, map_location=map_location, logger='silent')
    if not isinstance(ckpt, dict):
        raise CheckpointMismatchError(f'{checkpoint} holds no state dict')
    state = _state_dict(ckpt)
    try:  # shape errors raise here; missing and unexpected keys are checked below
        result = model.load_state_dict(state, strict=False)
    except RuntimeError as err:
        raise CheckpointMismatchError(
            _diagnose(model, state, checkpoint, detail=str(err))) from None
    # mmengine's rule: BatchNorm's num_batches_tracked may be absent
    missing = [k for k in result.missing_keys if 'num_batches_tracked' not in k]
    if missing or result.unexpected_keys:
        raise CheckpointMismatchError(
            _diagnose(model, state, checkpoint, missing, result.unexpected_keys))
    return ckpt


def init_model(cfg: Config, checkpoint: str, device: str = 'cpu') -> Tuple[object, dict]:
    """:func:`build_model`, then :func:`load_model_checkpoint`; eval mode.

    Args:
        cfg (Config): The config the checkpoint was trained with.
        checkpoint (str): The checkpoint.
        device (str): Where the model goes. Defaults to 'cpu'.

    Returns:
        tuple: The model (on ``device``, in eval mode) and the checkpoint.

    Raises:
        CheckpointMismatchError: The checkpoint does not fit the config.
    """
    model = build_model(cfg)
    ckpt = load_model_checkpoint(model, checkpoint)
    return model.to(device).eval(), ckpt
