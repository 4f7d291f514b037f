"""Q and P kept exactly orthonormal by a library instead of ENN's own modes.

The alternatives a careful PyTorch user would pick for exact orthonormality,
for the benchmarks that compare them with QR retraction and the penalties:

- ``torch_orthogonal``: ``torch.nn.utils.parametrizations.orthogonal`` (its
  default map: the matrix exponential for square bases, Householder
  products otherwise);
- ``geotorch``: ``geotorch.orthogonal`` (PyPI ``geotorch``).

Either is registered on each ENN layer's own Q and P (a parametrization of
the eigenbasis parametrization's originals), starting from the same bases,
on a model built with ``ortho='none'``. ``enn_overhead.py --libraries``
times a step of such a model; ``local_accuracy.py`` trains one with
:class:`ENNLibraryOrthonormalHook` (variants ``bp_enn_torch_orthogonal``,
``bp_enn_geotorch``). Benchmark code: the hook is registered only where a
benchmark's config imports this module.
"""
from typing import Dict

import torch
from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper
from mmpretrain.registry import HOOKS

from enn_mm.core import enn_modules

LIBRARIES = ('torch_orthogonal', 'geotorch')
_BASES = ('original0', 'original2')  # Q and P of an eigenbasis parametrization


def library_available(library: str) -> bool:
    """``torch_orthogonal`` always; ``geotorch`` if it is installed.

    Args:
        library (str): One of :data:`LIBRARIES`.

    Returns:
        bool: Whether ``library`` can be used here.
    """
    if library == 'torch_orthogonal':
        return True
    try:
        import geotorch  # noqa: F401
    except ImportError:
        return False
    return True


def keep_orthonormal(model, library: str) -> Dict[int, torch.nn.Parameter]:
    """Register ``library``'s orthogonal parametrization on every Q and P
    of ``model`` (built with ``ortho='none'``), starting from the current
    bases, in place.

    Args:
        model (nn.Module): An ENN model whose layers share no basis.
        library (str): One of :data:`LIBRARIES`.

    Returns:
        dict: ``{id(former Parameter): the library's Parameter}`` for each
        Q and P: what an optimizer built before must train instead.

    Raises:
        ValueError: ``library`` is unknown or not installed, or a basis is
            shared by several layers.
    """
    if library not in LIBRARIES or not library_available(library):
        raise ValueError(f'library {library!r} is not one of {LIBRARIES} or is not installed '
                         '(pip install geotorch).')
    swapped, seen = {}, set()
    for name, module in enn_modules(model):
        plist = module.parametrizations.weight
        for key in _BASES:
            old = getattr(plist, key)
            if id(old) in seen:
                raise ValueError(f'{name}: a shared basis; keep_orthonormal handles models '
                                 'whose layers share no basis.')
            seen.add(id(old))
            basis = old.detach().clone()
            if library == 'torch_orthogonal':
                torch.nn.utils.parametrizations.orthogonal(plist, key)
            else:
                import geotorch
                geotorch.orthogonal(plist, key)
            with torch.no_grad():
                setattr(plist, key, basis)  # (right_inverse: the same bases)
            swapped[id(old)] = plist.parametrizations[key].original
    return swapped


@HOOKS.register_module()
class ENNLibraryOrthonormalHook(Hook):
    """Train an ENN model (``ortho='none'``) with Q and P kept orthonormal by
    ``library`` (:func:`keep_orthonormal`).

    Before training it registers the library's parametrization and puts the
    library's Parameters in the optimizer where Q and P were (same parameter
    group: the same learning rate and no weight decay under
    ``ENNOptimWrapperConstructor``). Every checkpoint stores the bases the
    library keeps under ENN's own keys, so it loads into the ENN config and
    exports like any ENN checkpoint.

    Args:
        library (str): One of :data:`LIBRARIES`.
    """

    priority = 'VERY_HIGH'

    def __init__(self, library: str) -> None:
        if library not in LIBRARIES:
            raise ValueError(f'library must be one of {LIBRARIES}, got {library!r}.')
        self.library = library

    @staticmethod
    def _model(runner):
        model = runner.model
        return model.module if is_model_wrapper(model) else model

    def before_train(self, runner) -> None:
        if runner.iter > 0:
            raise RuntimeError('ENNLibraryOrthonormalHook starts a run from scratch; it does not '
                               'resume one.')
        swapped = keep_orthonormal(self._model(runner), self.library)
        optimizer = runner.optim_wrapper.optimizer
        for group in optimizer.param_groups:
            group['params'] = [swapped.get(id(p), p) for p in group['params']]
        runner.logger.info(f'{len(swapped)} bases kept orthonormal by {self.library}.')

    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        state = checkpoint['state_dict']
        for name, module in enn_modules(self._model(runner)):
            plist = module.parametrizations.weight
            prefix = f'{name}.parametrizations.weight.'
            for key in _BASES:
                inner = f'{prefix}parametrizations.{key}.'
                for k in [k for k in state if k.startswith(inner)]:
                    del state[k]
                state[prefix + key] = getattr(plist, key).detach().cpu().clone()
