"""``ENNLocalClassifier``: train a classifier block by block, without BP
across blocks (ENN-ℓ).

Every block ``k`` but the last gets a local head ``h_k`` and the loss
``L_k = loss(h_k(z_k), y) + γ·Σ_{ENN layers of block k}(‖QᵀQ−I‖² + ‖PᵀP−I‖²)``.
In ``train_step`` a forward hook on each cut point computes ``L_k``, runs its
backward and the block's optimizer step at once, and hands ``z_k.detach()``
on: the block's graph is freed before the next block runs, so only one block's
activations are alive at a time. The last block's loss is the model's own.

Prediction, testing and ``mode='tensor'`` are the plain network's: the heads
are only used in ``train_step``.
"""
import copy
from collections import OrderedDict
from contextlib import contextmanager
from typing import Dict, List, Optional, Sequence, Union

import torch
from mmengine.logging import MessageHub, print_log
from mmengine.optim import OptimWrapper, OptimWrapperDict
from torch import Tensor, nn

from mmpretrain.models import ImageClassifier
from mmpretrain.registry import MODELS
from ..core import bases
from ..core.ortho import basis_penalty
from .heads import build_local_head
from .partition import Partition, detach_output, main_tensor, probe_partition, resolve_cuts

__all__ = ['ENNLocalClassifier', 'LocalLearningMixin', 'block_key']

HEADS_KEY = 'local_heads'


def block_key(k: int) -> str:
    """Name of block ``k``'s optimizer wrapper, scheduler list and logs."""
    return f'block{k}'


def _targets(data_samples):
    # As MMPretrain's ClsHead: soft scores (mixup, cutmix) win over labels.
    if 'gt_score' in data_samples[0]:
        return torch.stack([s.gt_score for s in data_samples])
    return torch.cat([s.gt_label for s in data_samples])


class LocalLearningMixin:
    """ENN-ℓ training for an MMPretrain ``ImageClassifier``.

    Set by :func:`ENNLocalClassifier`: ``local_heads`` (an ``nn.ModuleDict``
    keyed ``block0`` ... ``block{K-2}``), ``local_partition`` (a checked
    :class:`Partition`) and, if the heads have a loss of their own,
    ``local_loss``.
    """
    local_heads: nn.ModuleDict
    local_partition: Partition

    # ------------------------------------------------------------ structure
    @property
    def num_blocks(self) -> int:
        return self.local_partition.num_blocks

    def block_param_names(self, k: int) -> List[str]:
        """The parameters block ``k``'s optimizer updates: the block's own and
        the trainable ones of its local head."""
        names = list(self.local_partition.params[k])
        if k < self.num_blocks - 1:
            head = getattr(self, HEADS_KEY)[block_key(k)]
            names += [f'{HEADS_KEY}.{block_key(k)}.{n}'
                      for n, p in head.named_parameters() if p.requires_grad]
        return names

    @property
    def local_loss_module(self) -> nn.Module:
        """The loss of the local heads: their own, else the model head's."""
        own = self._modules.get('local_loss')
        return own if own is not None else self.head.loss_module

    def _penalty_weight(self) -> Optional[float]:
        """γ for this step, as ``ENNModel`` weighs it: ``None`` without a
        penalty, ``n·γ`` on every n-th step (``penalty_interval``), else 0."""
        options = getattr(self, 'enn_options', None)
        if options is None or options.gamma <= 0:
            return None
        interval = getattr(options, 'penalty_interval', 1)
        step = MessageHub.get_current_instance().get_info('iter', 0)
        return options.gamma * interval if step % interval == 0 else 0.0

    def _block_penalty(self, owned: set) -> Optional[Tensor]:
        # Same order and arithmetic as `orthogonality_penalty`, restricted to
        # the bases the block owns: with one block the two agree bit for bit.
        terms = [basis_penalty(B) for B in bases(self) if id(B) in owned]
        return torch.stack(terms).sum() if terms else None

    def _wrappers(self, optim_wrapper) -> List[OptimWrapper]:
        keys = [block_key(k) for k in range(self.num_blocks)]
        if not isinstance(optim_wrapper, OptimWrapperDict) or list(optim_wrapper.keys()) != keys:
            got = list(optim_wrapper.keys()) if isinstance(optim_wrapper, OptimWrapperDict) \
                else type(optim_wrapper).__name__
            raise TypeError(
                f'ENN-ℓ trains each of its {self.num_blocks} blocks with its own '
                f'optimizer wrapper {keys}, got {got}. Set '
                "optim_wrapper=dict(constructor='ENNLocalOptimWrapperConstructor', ...).")
        return [optim_wrapper[k] for k in keys]

    # ------------------------------------------------------------- training
    def train_step(self, data, optim_wrapper) -> Dict[str, Tensor]:
        """One ENN-ℓ step: every block's loss, backward and optimizer step.

        Args:
            data (dict): A batch from the dataloader.
            optim_wrapper (OptimWrapperDict): One wrapper per block, keyed
                ``block0`` ... (built by ``ENNLocalOptimWrapperConstructor``).
                Each block's clipping and accumulation are its wrapper's.

        Returns:
            dict: ``block{k}.loss`` and ``block{k}.top1`` for every block, and
            the model's own loss items (``loss`` is the last block's loss).
        """
        wrappers = self._wrappers(optim_wrapper)
        with wrappers[-1].optim_context(self):
            data = self.data_preprocessor(data, True)
        inputs, samples = data['inputs'], data['data_samples']
        target = _targets(samples)
        gamma = self._penalty_weight()
        params = dict(self.named_parameters())
        owned = [{id(params[n]) for n in names} for names in self.local_partition.params]
        log_vars = OrderedDict()

        def local_update(k: int, z: Tensor) -> None:
            logits = getattr(self, HEADS_KEY)[block_key(k)](z)
            loss = self.local_loss_module(logits, target, avg_factor=logits.size(0))
            penalty = self._block_penalty(owned[k]) if gamma else None
            if penalty is not None:
                loss = loss + gamma * penalty
            # backward outside autocast, as after any forward under AMP
            with torch.autocast(z.device.type, enabled=False):
                wrappers[k].update_params(loss)
            self._log_block(log_vars, k, loss, logits, target)

        final_logits = []
        with self._cut_hooks(local_update), wrappers[-1].optim_context(self):
            handle = self.head.register_forward_hook(
                lambda m, a, out: final_logits.append(main_tensor(out)))
            try:
                losses = self.head.loss(self.extract_feat(inputs), samples)
            finally:
                handle.remove()
        k = self.num_blocks - 1
        penalty = self._block_penalty(owned[k]) if gamma else None
        if penalty is not None:  # the last block's own bases only
            losses['loss_ortho'] = gamma * penalty
        elif gamma is not None:  # logged every step, as ENNModel does
            losses['loss_ortho'] = torch.zeros((), device=inputs.device)
        loss, final_vars = self.parse_losses(losses)
        wrappers[k].update_params(loss)
        self._log_block(log_vars, k, loss, final_logits[-1] if final_logits else None, target)
        final_vars.update(log_vars)
        return final_vars

    @contextmanager
    def _cut_hooks(self, local_update):
        """Forward hooks on the cut points: update block k, hand on z_k.detach()."""
        modules = dict(self.named_modules())

        def hook_for(k, name):
            def hook(module, args, output):
                local_update(k, main_tensor(output, f'the output of {name!r}'))
                return detach_output(output)
            return hook

        handles = [modules[name].register_forward_hook(hook_for(k, name))
                   for k, name in enumerate(self.local_partition.cuts)]
        try:
            yield
        finally:
            for h in handles:
                h.remove()

    @staticmethod
    def _log_block(log_vars, k, loss, logits, target):
        log_vars[f'{block_key(k)}.loss'] = loss.detach()
        if logits is not None and target.dim() == 1:
            with torch.no_grad():
                top1 = (logits.argmax(dim=1) == target).float().mean() * 100
            log_vars[f'{block_key(k)}.top1'] = top1


_local_classes = {}


def _local_class(cls):
    if cls not in _local_classes:
        _local_classes[cls] = type(f'Local{cls.__name__}', (LocalLearningMixin, cls), {})
    return _local_classes[cls]


def ENNLocalClassifier(model: dict,
                       cuts: Union[str, dict, Sequence[str]],
                       input_shape: Sequence[int],
                       local_head: Union[dict, Sequence[dict]] = dict(type='frozen_linear'),
                       max_head_params: int = 2**23,
                       loss: Optional[dict] = None,
                       data_preprocessor=None):
    """Build a classifier for ENN-ℓ (block-wise local learning).

    Returns the classifier itself (same state-dict keys plus ``local_heads.``)
    with :class:`LocalLearningMixin` behaviour. Wrap an existing model::

        model = dict(type='ENNLocalClassifier', model={{_base_.model}},
                     cuts='resnet_block', input_shape=(1, 28, 28))
        optim_wrapper = dict(constructor='ENNLocalOptimWrapperConstructor')

    The inner model may be an ``ENNModel`` config (ENN-ℓ, the penalty of each
    block joins its local loss) or a plain one (local learning on the dense
    network).

    Args:
        model (dict): Config of an MMPretrain ``ImageClassifier`` (or of an
            ``ENNModel`` around one).
        cuts (str | dict | list[str]): Cut points: module names in forward
            order, each ending a block, or a preset: ``'resnet_block'`` (stem,
            every residual block, head: the paper's), ``'resnet_stage'``
            (one block per stage), ``dict(preset='vit', every=N)``. ``[]``
            gives one block, i.e. ordinary end-to-end training.
        input_shape (Sequence[int]): ``(C, H, W)`` of the network input (after
            the data preprocessor); the partition check and the heads' sizes
            depend on it.
        local_head (dict | list[dict]): Head of the blocks before the last:
            ``dict(type='frozen_linear' | 'pool_linear' | 'conv_aux', ...)``,
            or one dict per block.
        max_head_params (int): Refuse any local head larger than this.
            Defaults to 2**23 (8.4M, 32 MB in fp32).
        loss (dict, optional): Loss of the local heads. Defaults to the loss
            module of the model's head (so label smoothing etc. carry over).
        data_preprocessor (dict, optional): Passed on to ``model`` if it sets
            none itself (the Runner fills this from the top-level config).
    """
    model = copy.deepcopy(model)
    if data_preprocessor is not None:
        model.setdefault('data_preprocessor', data_preprocessor)
    built = MODELS.build(model)
    if isinstance(built, LocalLearningMixin):
        raise TypeError('the model inside ENNLocalClassifier is already cut into blocks.')
    if not isinstance(built, ImageClassifier) or built.head is None:
        raise TypeError(f'ENNLocalClassifier needs an ImageClassifier with a head, got '
                        f'{type(built).__name__}.')
    local_loss = MODELS.build(loss) if loss is not None else None
    if local_loss is None and not isinstance(getattr(built.head, 'loss_module', None), nn.Module):
        raise TypeError(f'{type(built.head).__name__} has no `loss_module`; give the '
                        'local heads a loss, e.g. loss=dict(type=\'CrossEntropyLoss\').')
    num_classes = getattr(built.head, 'num_classes', None)
    if not isinstance(num_classes, int):
        raise TypeError(f'{type(built.head).__name__} has no `num_classes`; the local '
                        'heads need it.')
    if len(input_shape) != 3:
        raise ValueError(f'input_shape must be (C, H, W), got {tuple(input_shape)}.')

    partition = probe_partition(built, resolve_cuts(built, cuts), input_shape)
    n_cuts = len(partition.cuts)
    head_cfgs = [local_head] * n_cuts if isinstance(local_head, dict) else list(local_head)
    if len(head_cfgs) != n_cuts:
        raise ValueError(f'{len(head_cfgs)} local head configs for {n_cuts} cut points; '
                         'give one dict, or one per cut point.')
    # The heads draw from their own random stream: the network itself starts
    # as its end-to-end twin does under the same seed.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed((torch.initial_seed() + 0x10ca1) % 2**63)
        heads = nn.ModuleDict({
            block_key(k): build_local_head(cfg, partition.shapes[k], num_classes,
                                           max_head_params, partition.describe(k))
            for k, cfg in enumerate(head_cfgs)
        })
    device = next(built.parameters()).device
    setattr(built, HEADS_KEY, heads.to(device))
    built.__class__ = _local_class(type(built))
    built.local_partition = partition
    if local_loss is not None:
        built.local_loss = local_loss
    sizes = [len(p) for p in partition.params]
    head_params = sum(t.numel() for t in (*heads.buffers(), *heads.parameters()))
    print_log(f'ENN-ℓ: {partition.num_blocks} blocks (trainable tensors per block: '
              f'{sizes}); {head_params:,} local head parameters', logger='current')
    return built


MODELS.register_module(name='ENNLocalClassifier', module=ENNLocalClassifier)
