"""Load mmengine checkpoints under torch >= 2.6 without turning safety off.

torch 2.6 made ``torch.load`` default to ``weights_only=True``. mmengine 0.10
checkpoints carry a few non-tensor objects (the message hub's
``HistoryBuffer`` with numpy arrays), so ``--resume``, ``load_from`` and
``tools/test.py`` fail. Instead of disabling safe loading, every mmengine
checkpoint loader runs inside ``torch.serialization.safe_globals`` with just
those types allowed; any ``torch.load`` outside mmengine's loaders is
unaffected.
"""
import functools
import pickle

import numpy as np
import torch
from mmengine.logging.history_buffer import HistoryBuffer
from mmengine.runner.checkpoint import CheckpointLoader

__all__ = ['MMENGINE_SAFE_GLOBALS', 'safe_loader', 'register_safe_loaders']


def _history_buffer_attr(obj, name):
    """``getattr`` as the unpickler may use it: only for the statistics
    methods that a pickled ``HistoryBuffer`` refers to (``HistoryBuffer.min``
    and the like, pickled as ``getattr(HistoryBuffer, 'min')``). A general
    ``getattr`` would let a crafted file reach arbitrary attributes."""
    if obj is HistoryBuffer and (name in HistoryBuffer._statistics_methods
                                 or name in ('min', 'max', 'mean', 'current')):
        return getattr(obj, name)
    raise pickle.UnpicklingError(
        f'refusing getattr({obj!r}, {name!r}) while loading a checkpoint')


# What mmengine itself writes into a checkpoint besides tensors and builtins.
MMENGINE_SAFE_GLOBALS = [
    (_history_buffer_attr, '__builtin__.getattr'),
    (_history_buffer_attr, 'builtins.getattr'),
    HistoryBuffer,
    np._core.multiarray._reconstruct,
    np._core.multiarray.scalar,
    np.ndarray,
    np.dtype,
    *{type(np.dtype(t)) for t in (np.float64, np.float32, np.float16, np.int64,
                                  np.int32, np.int8, np.uint8, np.bool_)},
]


def safe_loader(loader):
    """``loader`` (a ``CheckpointLoader`` scheme) run inside
    ``torch.serialization.safe_globals(MMENGINE_SAFE_GLOBALS)``, with a
    refused object reported as an error that names it and the way out.

    Args:
        loader (Callable): A loader ``loader(filename, *args, **kwargs)``
            as registered with ``CheckpointLoader``.

    Returns:
        Callable: The wrapped loader (``loader`` itself if it is wrapped
        already). It raises ``RuntimeError`` where ``loader`` raised
        ``pickle.UnpicklingError``.
    """
    if getattr(loader, '_enn_safe', False):
        return loader

    @functools.wraps(loader)
    def load(filename, *args, **kwargs):
        with torch.serialization.safe_globals(MMENGINE_SAFE_GLOBALS):
            try:
                return loader(filename, *args, **kwargs)
            except pickle.UnpicklingError as err:
                raise RuntimeError(
                    f'checkpoint {filename!r} holds objects that safe loading '
                    f'(torch.load weights_only=True) refuses: {err}\nIf you '
                    'trust the file, allow the named type with '
                    'torch.serialization.add_safe_globals([...]) before '
                    'training or testing.') from err

    load._enn_safe = True
    return load


def register_safe_loaders() -> None:
    """Re-register every scheme mmengine's ``CheckpointLoader`` knows with
    its safe version, through the public ``register_scheme(force=True)``
    (called once, when ``enn_mm.engine`` is imported)."""
    for prefix, loader in list(CheckpointLoader._schemes.items()):
        CheckpointLoader.register_scheme(prefix, safe_loader(loader), force=True)


register_safe_loaders()
