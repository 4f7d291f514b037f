"""Optimizer wrappers that carry ENN's per-step duties.

``ENNOptimWrapperConstructor`` builds these in place of mmengine's
``OptimWrapper`` / ``AmpOptimWrapper`` (same behaviour otherwise), so that
what ENN does every step has an owner with a life cycle instead of global
state:

- **Retraction**: a :class:`enn_mm.core.Retraction` on this wrapper's
  optimizer (an instance-level step post-hook) retracts the bases it
  updates after every ``retract_interval``-th real step; its step count is
  saved in the wrapper's ``state_dict`` (the checkpoint's optimizer entry)
  and restored on ``--resume``.
- **The step the penalty schedule follows**: ``optim_context(model)``, which
  mmengine's ``BaseModel.train_step`` and ``MMDistributedDataParallel``
  both enter before the forward pass, hands the model the wrapper's
  ``inner_count`` (its updates so far: the Runner's iteration, restored on
  resume) as ``model.enn_step``.
"""
from contextlib import contextmanager
from typing import Optional

from mmengine.model import is_model_wrapper
from mmengine.optim import AmpOptimWrapper, OptimWrapper
from mmpretrain.registry import OPTIM_WRAPPERS

from ...core import Retraction

__all__ = ['ENNOptimWrapper', 'ENNAmpOptimWrapper', 'ENN_WRAPPER_TYPES']

# the key of the retraction state in the wrapper's state dict, and the one
# that earlier checkpoints kept in the optimizer state of the first basis
STATE_KEY = 'enn_retraction'
LEGACY_KEY = 'enn_retract_steps'


class ENNOptimWrapperMixin:
    """The ENN duties, mixed into an mmengine optimizer wrapper class."""

    retraction: Optional[Retraction] = None

    def arm(self, model) -> None:
        """Retract the bases of ``model`` that this wrapper's optimizer
        updates (those of layers with a ``retract_interval``).

        Args:
            model (nn.Module): The model (or its DDP wrapper) the optimizer
                was built for.
        """
        if self.retraction is not None:
            self.retraction.remove()
        self.retraction = Retraction(self.optimizer, model)

    @contextmanager
    def optim_context(self, model):
        """mmengine's context of a training step; first gives an ENN model
        the step it is at (:attr:`inner_count`) as ``enn_step``.

        Args:
            model (nn.Module): The model being trained (or its wrapper).
        """
        target = model.module if is_model_wrapper(model) else model
        if hasattr(target, 'enn_options'):
            target.enn_step = self.inner_count
        with super().optim_context(model):
            yield

    def state_dict(self) -> dict:
        """The wrapped optimizer's state dict, plus the retraction's step
        count under ``'enn_retraction'``.

        Returns:
            dict: The state to checkpoint.
        """
        state = super().state_dict()
        if self.retraction is not None:
            state = dict(state, **{STATE_KEY: self.retraction.state_dict()})
        return state

    def load_state_dict(self, state_dict: dict) -> None:
        """Load :meth:`state_dict` (also an earlier checkpoint's, whose step
        count sits in the optimizer state of the first basis).

        Args:
            state_dict (dict): The state to load.
        """
        state_dict = dict(state_dict)
        saved = state_dict.pop(STATE_KEY, None)
        legacy = [s.pop(LEGACY_KEY) for s in state_dict.get('state', {}).values()
                  if isinstance(s, dict) and LEGACY_KEY in s]
        super().load_state_dict(state_dict)
        if saved is None and legacy:
            saved = {'steps': max(legacy)}
        if saved is not None and self.retraction is not None:
            self.retraction.load_state_dict(saved)


@OPTIM_WRAPPERS.register_module()
class ENNOptimWrapper(ENNOptimWrapperMixin, OptimWrapper):
    """mmengine's ``OptimWrapper`` with ENN's retraction and step duties
    (module docstring). Built by ``ENNOptimWrapperConstructor``.

    Args:
        optimizer (torch.optim.Optimizer): As for ``OptimWrapper``.
        **kwargs: ``OptimWrapper``'s other arguments (``accumulative_counts``,
            ``clip_grad``).
    """


@OPTIM_WRAPPERS.register_module()
class ENNAmpOptimWrapper(ENNOptimWrapperMixin, AmpOptimWrapper):
    """mmengine's ``AmpOptimWrapper`` with ENN's retraction and step duties
    (module docstring); a step the loss scaler skips is not counted.

    Args:
        optimizer (torch.optim.Optimizer): As for ``AmpOptimWrapper``.
        **kwargs: ``AmpOptimWrapper``'s other arguments (``loss_scale``,
            ``dtype``, ...).
    """


# optim_wrapper `type` (name, scoped name or class) -> its ENN version, a class
# so that it builds in any registry scope
ENN_WRAPPER_TYPES = {
    key: enn
    for plain, enn in ((OptimWrapper, ENNOptimWrapper), (AmpOptimWrapper, ENNAmpOptimWrapper))
    for key in (plain, plain.__name__, f'mmengine.{plain.__name__}', enn, enn.__name__)
}
