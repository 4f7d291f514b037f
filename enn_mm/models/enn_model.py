"""``ENNModel``: put any MMPretrain model through the eigenbasis method."""
from typing import Optional

import torch
from mmengine.logging import print_log
from mmpretrain.registry import MODELS

from ..core import ENNOptions, dense_view, enn_modules, orthogonality_penalty
from .mixin import MixinModel, vanilla_class

__all__ = ['ENNModel']


@MODELS.register_module()
class ENNModel(MixinModel):
    """Put any MMPretrain model through the eigenbasis method.

    Building ``ENNModel`` builds the model its ``model`` config names and
    converts it to ENN in place (see :mod:`enn_mm.models.mixin`): the result
    is that model, an instance of both its own class and ``ENNModel``, with
    the same state-dict keys apart from the factored weights. ``loss`` gains
    ``loss_ortho`` (so MMPretrain sums and logs it), and ``init_weights``
    runs the model's own ``init_cfg`` rules on a dense view of every ENN
    layer and factors the result, so an ENN model starts as the SVD of
    exactly the weights its dense twin would start with. Use it by wrapping
    an existing model config::

        model = dict(_delete_=True, type='ENNModel', model={{_base_.model}},
                     enn=dict(ortho='retract', retract_interval=10))

    Args:
        model (dict): The config of any MMPretrain model with a ``loss``
            method (classifiers, retrievers, ...).
        enn (dict, optional): :class:`enn_mm.ENNOptions` fields (``ortho``,
            ``gamma``, ``retract_interval``, ``include``, ``exclude``,
            ``types``, ...). Unknown keys raise an error.
        data_preprocessor (dict, optional): Passed on to ``model`` if it sets
            none itself (the Runner fills this from the top-level config).

    Raises:
        TypeError: ``model`` is not a dict, the built model has no ``loss``
            or is an ``ENNModel`` already.
        KeyError: ``enn`` has an unknown key.
        ValueError: ``enn`` has an invalid value or selects layers that
            cannot be converted.
    """
    prefix = 'ENN'
    enn_options: ENNOptions

    def __init__(self, model: dict, enn: Optional[dict] = None, data_preprocessor=None):
        # `self` is the built model (MixinModel.__new__): convert it in place.
        options = ENNOptions.from_dict(enn)
        dense_params = sum(p.numel() for p in self.parameters())
        options.apply(self)
        self.enn_options = options
        #: the training step, set by the ENN optimizer wrapper (None: unset)
        self.enn_step: Optional[int] = None
        n_layers = sum(1 for _ in enn_modules(self))
        enn_params = sum(p.numel() for p in self.parameters())
        ortho = (f'retract every {options.retract_interval} steps'
                 if options.ortho == 'retract' else options.ortho)
        ortho += f', gamma={options.gamma:g}' if options.gamma else ''
        print_log(f'ENN: converted {n_layers} layers of {vanilla_class(self).__name__} '
                  f'(ortho={ortho}); parameters {dense_params:,} -> {enn_params:,} '
                  f'(x{enn_params / max(dense_params, 1):.2f})', logger='current')

    @classmethod
    def check_model(cls, model) -> None:
        """An ENN model wraps a model with a ``loss``, once.

        Args:
            model (nn.Module): The model just built from the ``model``
                config.

        Raises:
            TypeError: ``model`` is an ``ENNModel`` already or has no
                ``loss`` method.
        """
        super().check_model(model)
        if not hasattr(model, 'loss'):
            raise TypeError(f'{type(model).__name__} has no `loss` method; ENNModel '
                            'wraps MMPretrain models trained through `loss`.')

    def loss(self, *args, **kwargs):
        """The model's own losses, plus ``loss_ortho`` (γ × the penalty on the
        steps the penalty schedule picks, else 0) when ``gamma > 0``.

        The step is :attr:`enn_step`, which the ENN optimizer wrapper sets
        before each training step (``ENNOptimWrapperConstructor``).

        Args:
            *args: Arguments of the model's own ``loss``.
            **kwargs: Keyword arguments of the model's own ``loss``.

        Returns:
            dict: The loss dict, with ``loss_ortho`` if ``gamma > 0``.

        Raises:
            RuntimeError: Training with retraction or a penalty schedule
                without the ENN optimizer wrapper, which does that work.
        """
        opts = self.enn_options
        if self.training and self.enn_step is None and (
                opts.ortho == 'retract' or (opts.gamma > 0 and opts.penalty_interval > 1)
                or opts.penalty_probes):
            # (probes seeded by a step that never moves would be the same every step)
            raise RuntimeError(
                "ENN training with ortho='retract', a penalty_interval or penalty_probes needs "
                'the ENN optimizer wrapper, which retracts the bases and counts the steps: set '
                "optim_wrapper=dict(constructor='ENNOptimWrapperConstructor', ...) (or build "
                'the wrapper with enn_mm.engine.ENNOptimWrapperConstructor).')
        losses = super().loss(*args, **kwargs)
        if opts.gamma > 0:
            weight = opts.penalty_weight(self.enn_step or 0)
            if weight:
                losses['loss_ortho'] = weight * orthogonality_penalty(
                    self, probes=opts.penalty_probes, step=self.enn_step or 0)
            else:
                losses['loss_ortho'] = torch.zeros((), device=next(self.parameters()).device)
        return losses

    def init_weights(self):
        """The model's own ``init_weights`` on a dense view of the ENN
        layers, factored back into Q, λ, P."""
        with dense_view(self):
            super().init_weights()
