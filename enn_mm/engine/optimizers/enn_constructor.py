"""Optimizer-wrapper constructor with ENN-aware parameter rules."""
import copy

from mmengine.optim import DefaultOptimWrapperConstructor
from mmpretrain.registry import OPTIM_WRAPPER_CONSTRUCTORS

from ...core.eigenbasis import factor_names
from .enn_optim_wrapper import ENN_WRAPPER_TYPES


@OPTIM_WRAPPER_CONSTRUCTORS.register_module()
class ENNOptimWrapperConstructor(DefaultOptimWrapperConstructor):
    """``DefaultOptimWrapperConstructor`` that knows the ENN factors.

    Weight decay pulls Q and P towards zero, against their orthonormality,
    so by default it is off for them. λ and biases follow the usual rules.
    Shared bases appear in several layers, so ``bypass_duplicate`` defaults
    to True. All other ``paramwise_cfg`` options work as in mmengine.

    The factors are found through the parametrization when the optimizer is
    built (:func:`enn_mm.core.eigenbasis.factor_names`), and their rules
    enter as mmengine ``custom_keys``, one per factor under its full name.
    A ``custom_keys`` entry of the user that matches a factor by mmengine's
    rule (the longest key that is a substring of the name) is combined with
    the factor's rule: their ``lr_mult`` and ``decay_mult`` multiply, other
    fields are the user's. So ``custom_keys={'text_encoder':
    dict(lr_mult=0.01)}`` slows an ENN text tower's Q, λ and P as it slows a
    dense one's weights, and its bases still get no weight decay.

    The wrapper it builds is the ENN version of the configured type
    (``OptimWrapper`` -> ``ENNOptimWrapper``, ``AmpOptimWrapper`` ->
    ``ENNAmpOptimWrapper``), armed with the model: it retracts the bases and
    tells the model its step (:mod:`.enn_optim_wrapper`). ENN models with
    retraction or a penalty schedule need it.

    Args:
        optim_wrapper_cfg (dict): As for ``DefaultOptimWrapperConstructor``.
        paramwise_cfg (dict, optional): As for
            ``DefaultOptimWrapperConstructor``, plus:

            - ``basis_decay_mult`` (float): weight-decay multiplier for Q and
              P. Defaults to 0.
            - ``basis_lr_mult`` (float): lr multiplier for Q and P. Defaults
              to 1.
            - ``spectrum_decay_mult`` (float): weight-decay multiplier for λ.
              Defaults to 1.
            - ``spectrum_lr_mult`` (float): lr multiplier for λ. Defaults to 1.
    """

    def __init__(self, optim_wrapper_cfg: dict, paramwise_cfg=None):
        optim_wrapper_cfg = dict(optim_wrapper_cfg)
        kind = optim_wrapper_cfg.get('type', 'OptimWrapper')
        if kind not in ENN_WRAPPER_TYPES:
            raise ValueError(f'ENNOptimWrapperConstructor builds ENN versions of OptimWrapper '
                             f'and AmpOptimWrapper; optim_wrapper type {kind!r} has none. Use '
                             "type='OptimWrapper' (or --amp for AmpOptimWrapper).")
        optim_wrapper_cfg['type'] = ENN_WRAPPER_TYPES[kind]
        paramwise_cfg = copy.deepcopy(dict(paramwise_cfg or {}))
        basis = dict(decay_mult=paramwise_cfg.pop('basis_decay_mult', 0.0),
                     lr_mult=paramwise_cfg.pop('basis_lr_mult', 1.0))
        spectrum = dict(decay_mult=paramwise_cfg.pop('spectrum_decay_mult', 1.0),
                        lr_mult=paramwise_cfg.pop('spectrum_lr_mult', 1.0))
        if optim_wrapper_cfg.get('optimizer', {}).get('weight_decay') is None:
            # no decay to scale: mmengine refuses decay_mult without a base value
            basis.pop('decay_mult')
            spectrum.pop('decay_mult')
        self.factor_rules = dict(basis=basis, spectrum=spectrum)
        # a plain dict (a ConfigDict's setdefault would hand back a copy)
        paramwise_cfg['custom_keys'] = dict(paramwise_cfg.get('custom_keys', {}))
        # a basis shared by several layers must enter the optimizer once
        paramwise_cfg.setdefault('bypass_duplicate', True)
        super().__init__(optim_wrapper_cfg, paramwise_cfg)

    def __call__(self, model):
        # The keys depend on the model, which only this call sees; the
        # user's own keys are restored afterwards, for a next model.
        user_keys = self.paramwise_cfg['custom_keys']
        custom_keys = dict(user_keys)
        longest_first = sorted(sorted(user_keys), key=len, reverse=True)  # mmengine's order
        for role, names in factor_names(model).items():
            for name in sorted(names):
                user = next((user_keys[k] for k in longest_first if k in name), {})
                custom_keys[name] = _combine(user, self.factor_rules[role])
        self.paramwise_cfg['custom_keys'] = custom_keys
        try:
            wrapper = super().__call__(model)
        finally:
            self.paramwise_cfg['custom_keys'] = user_keys
        wrapper.arm(model)
        return wrapper


def _combine(user: dict, rule: dict) -> dict:
    """A user's ``custom_keys`` entry and a factor's rule as one entry:
    multipliers multiply, the user's other fields are kept."""
    out = dict(user)
    for key, mult in rule.items():
        out[key] = user.get(key, 1.0) * mult
    return out
