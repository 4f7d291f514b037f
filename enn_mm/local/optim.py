"""One optimizer wrapper per block, from the ordinary ``optim_wrapper`` config."""
import copy
import inspect
from collections import OrderedDict

from mmengine.model import is_model_wrapper
from mmengine.optim import OptimWrapperDict
from mmpretrain.registry import OPTIM_WRAPPER_CONSTRUCTORS, OPTIM_WRAPPERS, OPTIMIZERS

from ..core import enn_modules
from .local_model import ENNLocalClassifier
from .pipeline import ENNPipelineParallel
from .step import block_key

__all__ = ['ENNLocalOptimWrapperConstructor', 'ENNLocalOptimWrapperDict']


class ENNLocalOptimWrapperDict(OptimWrapperDict):
    """``OptimWrapperDict`` whose wrappers count iterations for accumulation.

    mmengine's ``OptimWrapperDict.initialize_count_status`` does nothing;
    here every block's wrapper learns the current and last iteration, so
    ``accumulative_counts`` behaves per block as it does for one optimizer
    (including the last, incomplete accumulation window and resuming).
    """

    def initialize_count_status(self, model, init_counts: int, max_counts: int) -> None:
        """Initialize the iteration counters of every block's wrapper.

        Args:
            model (nn.Module): The trained model, passed on to each wrapper.
            init_counts (int): The current iteration (0, or where a resumed
                run starts).
            max_counts (int): The total number of training iterations.
        """
        for wrapper in self.values():
            wrapper.initialize_count_status(model, init_counts, max_counts)


@OPTIM_WRAPPER_CONSTRUCTORS.register_module()
class ENNLocalOptimWrapperConstructor:
    """Build one optimizer wrapper per ENN-ℓ block, keyed ``block0`` ...

    The usual ``optim_wrapper`` config applies to every block: the optimizer
    type and its arguments, ``paramwise_cfg`` (resolved on the full model, so
    rules keyed by full parameter names work unchanged), and the wrapper's
    ``type``, ``clip_grad`` and ``accumulative_counts`` (each block clips
    and accumulates its own gradients). A single ``param_scheduler`` list is
    applied to every block by the Runner; a dict keyed ``block0`` ... sets
    one schedule per block. Block ``k`` updates its own parameters and its
    local head's.

    Example::

        optim_wrapper = dict(constructor='ENNLocalOptimWrapperConstructor',
                             optimizer=dict(type='AdamW', lr=2e-3),
                             clip_grad=dict(max_norm=5.0))

    Args:
        optim_wrapper_cfg (dict): As for ``DefaultOptimWrapperConstructor``,
            plus ``block_constructor`` (str): the constructor that applies the
            parameter-wise rules. Defaults to ``'ENNOptimWrapperConstructor'``
            (no weight decay on the ENN bases) for a model with ENN layers,
            ``'DefaultOptimWrapperConstructor'`` otherwise.
        paramwise_cfg (dict, optional): Passed to ``block_constructor``.

    Raises:
        KeyError: ``optim_wrapper_cfg`` has no ``optimizer``.
    """

    def __init__(self, optim_wrapper_cfg: dict, paramwise_cfg=None):
        cfg = copy.deepcopy(dict(optim_wrapper_cfg))
        if 'optimizer' not in cfg:
            raise KeyError('optim_wrapper needs an `optimizer` config; '
                           'ENNLocalOptimWrapperConstructor uses it for every block.')
        self.block_constructor = cfg.pop('block_constructor', None)
        self.optim_wrapper_cfg = cfg
        self.paramwise_cfg = copy.deepcopy(paramwise_cfg)

    def __call__(self, model) -> ENNLocalOptimWrapperDict:
        if isinstance(model, ENNPipelineParallel):
            model = model.module
        elif is_model_wrapper(model):
            raise RuntimeError(
                f'ENN-ℓ cannot train under {type(model).__name__}: each block steps '
                'inside the forward pass, which DistributedDataParallel cannot '
                'synchronise. Launch tools/train.py without --launcher, or pipeline '
                "the blocks over processes with model_wrapper_cfg=dict(type='ENNPipelineParallel', "
                "stages=K) and train_cfg=dict(type='ENNPipelineTrainLoop', ...).")
        if not isinstance(model, ENNLocalClassifier):
            raise TypeError('ENNLocalOptimWrapperConstructor needs a model built by '
                            "ENNLocalClassifier (model=dict(type='ENNLocalClassifier', ...)).")
        # The block constructor applies the parameter-wise rules once, to the
        # whole model; its parameter groups are then dealt out to the blocks.
        block_constructor = self.block_constructor or (
            'ENNOptimWrapperConstructor' if any(True for _ in enn_modules(model))
            else 'DefaultOptimWrapperConstructor')
        rules = OPTIM_WRAPPER_CONSTRUCTORS.build(
            dict(type=block_constructor,
                 optim_wrapper_cfg=copy.deepcopy(self.optim_wrapper_cfg),
                 paramwise_cfg=copy.deepcopy(self.paramwise_cfg)))
        whole = rules(model)  # the rules applied once; its groups are dealt out below
        groups = whole.optimizer.param_groups
        # ENN rules come with ENN wrappers (retraction, the step count): the
        # blocks get the same kind, and the whole-model one is disarmed
        enn = hasattr(whole, 'arm')
        if enn and whole.retraction is not None:
            whole.retraction.remove()

        params = dict(model.named_parameters())
        owner = {}
        for k in range(model.num_blocks):
            for name in model.block_param_names(k):
                owner[id(params[name])] = k
        per_block = [[] for _ in range(model.num_blocks)]
        for group in groups:
            options = {key: v for key, v in group.items() if key != 'params'}
            split = [[] for _ in range(model.num_blocks)]
            for p in group['params']:
                if id(p) in owner:
                    split[owner[id(p)]].append(p)
                elif p.requires_grad:  # the partition check makes this unreachable
                    raise RuntimeError('a trainable parameter belongs to no block')
            for k, ps in enumerate(split):
                if ps:
                    per_block[k].append(dict(options, params=ps))

        wrapper_cfg = {k: v for k, v in self.optim_wrapper_cfg.items() if k != 'optimizer'}
        wrapper_cfg.setdefault('type', 'OptimWrapper')
        if enn:
            wrapper_cfg['type'] = type(whole)
        wrappers = OrderedDict()
        for k, block_groups in enumerate(per_block):
            optimizer_cfg = dict(copy.deepcopy(self.optim_wrapper_cfg['optimizer']))
            optimizer_cfg[self._first_arg(optimizer_cfg['type'])] = block_groups
            optimizer = OPTIMIZERS.build(optimizer_cfg)
            wrappers[block_key(k)] = OPTIM_WRAPPERS.build(
                copy.deepcopy(wrapper_cfg), default_args=dict(optimizer=optimizer))
            if enn:
                wrappers[block_key(k)].arm(model)
        return ENNLocalOptimWrapperDict(**wrappers)

    @staticmethod
    def _first_arg(optimizer_type) -> str:
        # As mmengine: some optimizers name their first argument `model_params`.
        if isinstance(optimizer_type, str):
            with OPTIMIZERS.switch_scope_and_registry(None) as registry:
                optimizer_type = registry.get(optimizer_type)
        return next(iter(inspect.signature(optimizer_type).parameters))
