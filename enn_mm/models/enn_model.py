"""``ENNModel``: put any MMPretrain model through the eigenbasis method."""
import copy
from typing import Optional

import torch
from mmengine.logging import print_log

from mmpretrain.registry import MODELS
from ..core import ENNOptions, dense_view, enn_modules, orthogonality_penalty
from ..deprecation import deprecated_alias
from .mixin import mix_in, runner_iteration, vanilla_class

__all__ = ['enn_model', 'ENNModel', 'ENNModelMixin', 'vanilla_class']


class ENNModelMixin:
    """Adds the ENN behaviour to an MMPretrain model class.

    ``loss`` gains ``loss_ortho`` (so MMPretrain sums and logs it), and
    ``init_weights`` runs the model's own ``init_cfg`` rules on a dense view
    of every ENN layer and factors the result, so an ENN model starts as the
    SVD of exactly the weights its dense twin would start with.
    """
    enn_options: ENNOptions

    def loss(self, *args, **kwargs):
        losses = super().loss(*args, **kwargs)
        opts = self.enn_options
        if opts.gamma > 0:
            weight = opts.penalty_weight(runner_iteration())
            if weight:
                losses['loss_ortho'] = weight * orthogonality_penalty(self)
            else:
                losses['loss_ortho'] = torch.zeros((), device=next(self.parameters()).device)
        return losses

    def init_weights(self):
        with dense_view(self):
            super().init_weights()


def enn_model(model: dict, enn: Optional[dict] = None, data_preprocessor=None):
    """Build ``model`` from its config and convert it to ENN in place.

    The returned object is the model itself (same state-dict keys apart from
    the factored weights), with :class:`ENNModelMixin` behaviour. Use it by
    wrapping an existing model config::

        model = dict(_delete_=True, type='ENNModel', model={{_base_.model}},
                     enn=dict(ortho='retract', retract_interval=10))

    Args:
        model (dict): The config of any MMPretrain model with a ``loss``
            method (classifiers, retrievers, ...).
        enn (dict, optional): :class:`enn_mm.ENNOptions` fields (``ortho``,
            ``gamma``, ``retract_interval``, ``include``, ``exclude``,
            ``types``). Unknown keys raise an error.
        data_preprocessor (dict, optional): Passed on to ``model`` if it sets
            none itself (the Runner fills this from the top-level config).
    """
    options = ENNOptions.from_dict(enn)
    model = copy.deepcopy(model)
    if data_preprocessor is not None:
        model.setdefault('data_preprocessor', data_preprocessor)
    built = MODELS.build(model)
    if isinstance(built, ENNModelMixin):
        raise TypeError('the model inside ENNModel is already an ENN model; '
                        'nest ENNModel only once.')
    if not hasattr(built, 'loss'):
        raise TypeError(f'{type(built).__name__} has no `loss` method; ENNModel '
                        'wraps MMPretrain models trained through `loss`.')
    dense_params = sum(p.numel() for p in built.parameters())
    options.apply(built)
    mix_in(built, ENNModelMixin, 'ENN')
    built.enn_options = options
    n_layers = sum(1 for _ in enn_modules(built))
    enn_params = sum(p.numel() for p in built.parameters())
    ortho = (f'retract every {options.retract_interval} steps' if options.ortho == 'retract'
             else options.ortho) + (f', gamma={options.gamma:g}' if options.gamma else '')
    print_log(f'ENN: converted {n_layers} layers of {type(built).__name__} '
              f'(ortho={ortho}); parameters '
              f'{dense_params:,} -> {enn_params:,} '
              f'(x{enn_params / max(dense_params, 1):.2f})', logger='current')
    return built


MODELS.register_module(name='ENNModel', module=enn_model)

ENNModel = deprecated_alias(enn_model, 'ENNModel')
