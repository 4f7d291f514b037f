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
from .heads import LocalNetwork, build_local_head
from .objectives import build_objectives
from .partition import Partition, detach_output, main_tensor, probe_partition, resolve_cuts

__all__ = ['ENNLocalClassifier', 'LocalLearningMixin', 'LocalStep', 'block_key']

HEADS_KEY = 'local_heads'
OBJECTIVES_KEY = 'local_objectives'


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
    keyed ``block0`` ... ``block{K-2}``), ``local_objectives`` (per block, an
    ``nn.ModuleList`` of its objectives, see :mod:`.objectives`) with
    ``local_objective_names`` and ``local_objective_weights`` (a
    ``[block][objective]`` table), ``local_partition`` (a checked
    :class:`Partition`), ``local_input_shape`` (``(C, H, W)``) and, if the
    heads have a loss of their own, ``local_loss``.
    """
    local_heads: nn.ModuleDict
    local_partition: Partition
    local_input_shape: tuple
    local_objective_names: List[str]
    local_objective_weights: List[List[float]]

    # ------------------------------------------------------------ structure
    @property
    def num_blocks(self) -> int:
        return self.local_partition.num_blocks

    def block_param_names(self, k: int) -> List[str]:
        """The parameters block ``k``'s optimizer updates: the block's own and
        the trainable ones of its local head."""
        names = list(self.local_partition.params[k])
        if k < self.num_blocks - 1:
            for key in (HEADS_KEY, OBJECTIVES_KEY):
                names += [f'{key}.{block_key(k)}.{n}' for n, p in
                          getattr(self, key)[block_key(k)].named_parameters() if p.requires_grad]
        return names

    def block_objectives(self, k: int):
        """``(name, weight, module)`` of each objective of local block ``k``
        whose weight is not 0."""
        modules = getattr(self, OBJECTIVES_KEY)[block_key(k)]
        return [(n, w, m) for n, w, m in zip(self.local_objective_names,
                                             self.local_objective_weights[k], modules) if w != 0]

    def needs_image(self, blocks: Sequence[int]) -> bool:
        """Whether an objective of one of ``blocks`` reads the network input."""
        return any('image' in getattr(m, 'uses', ()) for k in blocks
                   if k < self.num_blocks - 1 for _, _, m in self.block_objectives(k))

    @property
    def local_loss_module(self) -> nn.Module:
        """The loss of the local heads: their own, else the model head's."""
        own = self._modules.get('local_loss')
        return own if own is not None else self.head.loss_module

    def _penalty_interval(self) -> Optional[int]:
        """Steps between orthogonality penalties (``penalty_interval``);
        ``None`` without a penalty."""
        options = getattr(self, 'enn_options', None)
        if options is None or options.gamma <= 0:
            return None
        return getattr(options, 'penalty_interval', 1)

    def _penalty_weight(self) -> Optional[float]:
        """γ for this step, as ``ENNModel`` weighs it: ``None`` without a
        penalty, ``n·γ`` on every n-th step (``penalty_interval``), else 0."""
        if self._penalty_interval() is None:
            return None
        step = MessageHub.get_current_instance().get_info('iter', 0)
        return self.enn_options.penalty_weight(step)

    def _block_bases(self) -> List[list]:
        """The bases each block owns, in `orthogonality_penalty`'s order."""
        params = dict(self.named_parameters())
        owner = {id(params[n]): k for k, names in enumerate(self.local_partition.params)
                 for n in names}
        out = [[] for _ in range(self.num_blocks)]
        for B in bases(self):
            if id(B) in owner:  # a frozen basis is in no block's penalty
                out[owner[id(B)]].append(B)
        return out

    @staticmethod
    def _block_penalty(block_bases: list) -> Optional[Tensor]:
        # Same order and arithmetic as `orthogonality_penalty`, restricted to
        # the bases the block owns: with one block the two agree bit for bit.
        terms = [basis_penalty(B) for B in block_bases]
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
        step = LocalStep(self, wrappers, target, image=inputs)

        with self._cut_hooks(step.local_update), wrappers[-1].optim_context(self):
            losses = step.final_losses(inputs, samples)
        return step.final_update(losses)

    @contextmanager
    def _cut_hooks(self, local_update, blocks: Optional[Sequence[int]] = None):
        """Forward hooks on the cut points of ``blocks`` (default: all):
        update block k, hand on z_k.detach()."""
        modules = dict(self.named_modules())

        def hook_for(k, name):
            def hook(module, args, output):
                local_update(k, main_tensor(output, f'the output of {name!r}'))
                return detach_output(output)
            return hook

        handles = [modules[name].register_forward_hook(hook_for(k, name))
                   for k, name in enumerate(self.local_partition.cuts)
                   if blocks is None or k in blocks]
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


class LocalStep:
    """The updates of one ENN-ℓ training step, block by block.

    Shared by the single-process ``train_step`` and the pipeline stages:
    ``local_update(k, z)`` trains block ``k`` (not the last) on its output,
    ``final_losses`` runs the forward to the model's own loss and
    ``final_update`` trains the last block.

    Args:
        model (LocalLearningMixin): The model.
        wrappers (list[OptimWrapper]): One per block.
        target (Tensor): Labels ``(B,)`` or soft scores ``(B, C)``.
        grad_sync (callable, optional): Called with a block index after that
            block's backward and before its step (averages gradients over
            data-parallel replicas); ``None`` steps at once.
        image (Tensor, optional): The network input after the data
            preprocessor, for objectives that read it (reconstruction).
    """

    def __init__(self, model, wrappers, target, grad_sync=None, image=None):
        self.model, self.wrappers, self.target = model, wrappers, target
        self.grad_sync = grad_sync
        self.image = image
        self.gamma = model._penalty_weight()
        # One walk over the model per step, not one per block.
        self.bases = model._block_bases() if self.gamma else None
        self.log_vars = OrderedDict()
        self._final_logits = []

    def _step(self, k: int, loss: Tensor) -> None:
        wrapper = self.wrappers[k]
        if self.grad_sync is None:
            wrapper.update_params(loss)
            return
        wrapper.backward(wrapper.scale_loss(loss))
        if wrapper.should_update():
            self.grad_sync(k)
            wrapper.step()
            wrapper.zero_grad()

    def local_update(self, k: int, z: Tensor) -> None:
        """Loss of block ``k``'s local head on ``z``, backward, step."""
        model = self.model
        logits = getattr(model, HEADS_KEY)[block_key(k)](z)
        loss, terms = None, model.block_objectives(k)
        for name, weight, objective in terms:
            term = objective(z, self.target, logits, self.image, model.local_loss_module)
            if len(terms) > 1:
                self.log_vars[f'{block_key(k)}.loss_{name}'] = term.detach()
            term = term if weight == 1 else weight * term
            loss = term if loss is None else loss + term
        penalty = model._block_penalty(self.bases[k]) if self.gamma else None
        if penalty is not None:
            loss = loss + self.gamma * penalty
        # backward outside autocast, as after any forward under AMP
        with torch.autocast(z.device.type, enabled=False):
            self._step(k, loss)
        model._log_block(self.log_vars, k, loss, logits, self.target)

    def final_losses(self, inputs: Tensor, samples) -> Dict[str, Tensor]:
        """The forward pass to the model head's loss dict."""
        model = self.model
        handle = model.head.register_forward_hook(
            lambda m, a, out: self._final_logits.append(main_tensor(out)))
        try:
            return model.head.loss(model.extract_feat(inputs), samples)
        finally:
            handle.remove()

    def final_update(self, losses: Dict[str, Tensor]) -> Dict[str, Tensor]:
        """Train the last block on the model's own loss; return the logs."""
        model = self.model
        k = model.num_blocks - 1
        penalty = model._block_penalty(self.bases[k]) if self.gamma else None
        if penalty is not None:  # the last block's own bases only
            losses['loss_ortho'] = self.gamma * penalty
        elif self.gamma is not None:  # logged every step, as ENNModel does
            losses['loss_ortho'] = self.target.new_zeros((), dtype=torch.float)
        loss, final_vars = model.parse_losses(losses)
        self._step(k, loss)
        model._log_block(self.log_vars, k, loss,
                         self._final_logits[-1] if self._final_logits else None, self.target)
        final_vars.update(self.log_vars)
        return final_vars


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
                       local_objectives: Optional[Sequence[dict]] = None,
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
            ``dict(type=..., **options)`` with an alias of
            :data:`HEAD_TYPES` (``'frozen_linear'``, ``'pool_linear'``,
            ``'conv_aux'``, ``'aux_net'``, ``'downstream'``) or a head
            registered in ``MODELS``; or one dict per block.
        max_head_params (int): Refuse any local head larger than this.
            Defaults to 2**23 (8.4M, 32 MB in fp32).
        loss (dict, optional): Loss of the local heads. Defaults to the loss
            module of the model's head (so label smoothing etc. carry over).
        local_objectives (list[dict], optional): What each block before the
            last minimizes: ``dict(type='classification' | 'reconstruction'
            | 'similarity' | a MODELS name, weight=w, **options)`` each, the
            weight a number, one per local block or ``dict(start=, end=)``
            (linear over the blocks). Defaults to the classification loss
            alone (the paper's).
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
    if len(head_cfgs) != n_cuts or not all(isinstance(c, dict) for c in head_cfgs):
        raise ValueError(f'{len(head_cfgs)} local head configs for {n_cuts} cut points '
                         f'({partition.num_blocks} blocks, the last trained by the model\'s own '
                         'head); give one dict, or a list of one dict per cut point.')
    network = LocalNetwork(built, partition, input_shape)
    # The heads draw from their own random stream: the network itself starts
    # as its end-to-end twin does under the same seed.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed((torch.initial_seed() + 0x10ca1) % 2**63)
        heads = nn.ModuleDict({
            block_key(k): build_local_head(cfg, partition.shapes[k], num_classes,
                                           max_head_params, partition.describe(k),
                                           network=network, k=k, num_local=n_cuts)
            for k, cfg in enumerate(head_cfgs)
        })
        names, weights, objectives = build_objectives(
            local_objectives, partition.shapes, num_classes, input_shape)
    device = next(built.parameters()).device
    setattr(built, HEADS_KEY, heads.to(device))
    setattr(built, OBJECTIVES_KEY, objectives.to(device))
    built.local_objective_names, built.local_objective_weights = names, weights
    built.__class__ = _local_class(type(built))
    built.local_partition = partition
    built.local_input_shape = tuple(input_shape)
    if local_loss is not None:
        built.local_loss = local_loss
    sizes = [len(p) for p in partition.params]
    head_params = sum(t.numel() for t in (*heads.buffers(), *heads.parameters()))
    objective_params = sum(t.numel() for t in objectives.parameters())
    print_log(f'ENN-ℓ: {partition.num_blocks} blocks (trainable tensors per block: '
              f'{sizes}); {head_params:,} local head parameters; objectives {names} '
              f'({objective_params:,} parameters)', logger='current')
    return built


MODELS.register_module(name='ENNLocalClassifier', module=ENNLocalClassifier)
