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
from contextlib import contextmanager
from typing import Dict, List, Optional, Sequence, Union

import torch
from mmengine.logging import print_log
from mmengine.optim import OptimWrapper, OptimWrapperDict
from mmpretrain.models import ImageClassifier
from mmpretrain.registry import MODELS
from torch import Tensor, nn

from ..core import bases, enn_modules
from ..core.eigenbasis import eigenbasis
from ..models.mixin import MixinModel
from .heads import LocalNetwork, build_local_head
from .objectives import build_objectives
from .partition import Partition, detach_output, main_tensor, probe_partition, resolve_cuts
from .step import HEADS_KEY, OBJECTIVES_KEY, LocalStep, block_key, targets_of

__all__ = ['ENNLocalClassifier', 'LocalStep', 'block_key']


@MODELS.register_module()
class ENNLocalClassifier(MixinModel):
    """ENN-ℓ: an MMPretrain ``ImageClassifier`` trained block by block.

    Building it builds the classifier its ``model`` config names and extends
    it in place (:mod:`enn_mm.models.mixin`): same state-dict keys plus
    ``local_heads.`` (and ``local_objectives.``), an instance of both its own
    class and ``ENNLocalClassifier``. Wrap an existing model::

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
            ``dict(type=..., **options)`` with the name of a head registered
            in ``MODELS`` (``'ENNFrozenLinearLocalHead'``, the default and
            the authors', ``'ENNPoolLinearLocalHead'``,
            ``'ENNConvAuxLocalHead'``, ``'ENNAuxNetLocalHead'``,
            ``'ENNDownstreamLocalHead'``, see :mod:`.heads`, or one of your
            own); or one dict per block.
        max_head_params (int): Refuse any local head larger than this.
            Defaults to 2**23 (8.4M, 32 MB in fp32).
        loss (dict, optional): Loss of the local heads. Defaults to the loss
            module of the model's head (so label smoothing etc. carry over).
        local_objectives (list[dict], optional): What each block before the
            last minimizes: ``dict(type='ENNClassificationObjective' |
            'ENNReconstructionObjective' | 'ENNSimilarityObjective' | another
            MODELS name, weight=w, **options)`` each, the weight a number,
            one per local block or ``dict(start=, end=)`` (linear over the
            blocks). Defaults to the classification loss alone (the
            paper's).
        data_preprocessor (dict, optional): Passed on to ``model`` if it sets
            none itself (the Runner fills this from the top-level config).

    Attributes set on the model: ``local_heads`` (an ``nn.ModuleDict`` keyed
    ``block0`` ... ``block{K-2}``), ``local_objectives`` (per block, an
    ``nn.ModuleList`` of its objectives, see :mod:`.objectives`) with
    ``local_objective_names`` (their log names, e.g. ``'classification'``,
    as in the ``block{k}.loss_classification`` log keys) and
    ``local_objective_weights`` (a
    ``[block][objective]`` table), ``local_partition`` (a checked
    :class:`Partition`), ``local_input_shape`` (``(C, H, W)``) and, if the
    heads have a loss of their own, ``local_loss``.

    Raises:
        TypeError: The model's head has no ``loss_module`` and no ``loss`` is
            given, or it has no int ``num_classes``; the model is not an
            ``ImageClassifier`` with a head, or is already an
            ``ENNLocalClassifier`` (:meth:`check_model`).
        ValueError: ``input_shape`` is not ``(C, H, W)``; ``local_head`` is a
            list without one dict per cut point; the partition, a head or an
            objective is refused (see :func:`probe_partition`,
            :func:`build_local_head`, :func:`build_objectives`).
    """
    prefix = 'Local'

    local_heads: nn.ModuleDict
    local_partition: Partition
    local_input_shape: tuple
    local_objective_names: List[str]
    local_objective_weights: List[List[float]]

    def __init__(self,
                 model: dict,
                 cuts: Union[str, dict, Sequence[str]],
                 input_shape: Sequence[int],
                 local_head: Union[dict, Sequence[dict]] = dict(type='ENNFrozenLinearLocalHead'),
                 max_head_params: int = 2**23,
                 loss: Optional[dict] = None,
                 local_objectives: Optional[Sequence[dict]] = None,
                 data_preprocessor=None):
        # `self` is the built classifier (MixinModel.__new__): extend it in place.
        built = self
        local_loss = MODELS.build(loss) if loss is not None else None
        if local_loss is None and not isinstance(getattr(built.head, 'loss_module', None),
                                                 nn.Module):
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
                             f'({partition.num_blocks} blocks, the last trained by the '
                             "model's own head); give one dict, or a list of one dict per cut "
                             'point.')
        network = LocalNetwork(built, partition, input_shape)
        # The heads draw from their own random stream: the network itself
        # starts as its end-to-end twin does under the same seed.
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

    @classmethod
    def check_model(cls, model) -> None:
        """ENN-ℓ cuts an ImageClassifier with a head, once.

        Args:
            model (nn.Module): The built inner model.

        Raises:
            TypeError: ``model`` is already an ``ENNLocalClassifier``, or is
                not an ``ImageClassifier`` with a head.
        """
        super().check_model(model)  # not cut into blocks twice
        if not isinstance(model, ImageClassifier) or model.head is None:
            raise TypeError(f'ENNLocalClassifier needs an ImageClassifier with a head, got '
                            f'{type(model).__name__}.')

    # ------------------------------------------------------------ structure
    @property
    def num_blocks(self) -> int:
        return self.local_partition.num_blocks

    def block_param_names(self, k: int) -> List[str]:
        """The parameters block ``k``'s optimizer updates: the block's own and
        the trainable ones of its local head.

        Args:
            k (int): Block index.

        Returns:
            list[str]: Parameter names as in ``named_parameters``: the
            block's, then (for a block before the last) the trainable ones of
            its local head and of its local objectives.
        """
        names = list(self.local_partition.params[k])
        if k < self.num_blocks - 1:
            for key in (HEADS_KEY, OBJECTIVES_KEY):
                names += [f'{key}.{block_key(k)}.{n}' for n, p in
                          getattr(self, key)[block_key(k)].named_parameters() if p.requires_grad]
        return names

    def block_objectives(self, k: int):
        """``(name, weight, module)`` of each objective of local block ``k``
        whose weight is not 0.

        Args:
            k (int): Index of a local block (not the last).

        Returns:
            list[tuple]: ``(log name, weight, module)`` in the order of
            ``local_objectives``.
        """
        modules = getattr(self, OBJECTIVES_KEY)[block_key(k)]
        return [(n, w, m) for n, w, m in zip(self.local_objective_names,
                                             self.local_objective_weights[k], modules) if w != 0]

    def needs_image(self, blocks: Sequence[int]) -> bool:
        """Whether an objective of one of ``blocks`` reads the network input.

        Args:
            blocks (Sequence[int]): Block indices; the last block (which has
                no local objectives) is skipped.

        Returns:
            bool: True if an objective with a non-zero weight in one of them
            has ``'image'`` in its ``uses``.
        """
        return any('image' in getattr(m, 'uses', ()) for k in blocks
                   if k < self.num_blocks - 1 for _, _, m in self.block_objectives(k))

    @property
    def local_loss_module(self) -> nn.Module:
        """The loss of the local heads: their own, else the model head's."""
        own = self._modules.get('local_loss')
        return own if own is not None else self.head.loss_module

    @property
    def penalty_interval(self) -> Optional[int]:
        """Steps between orthogonality penalties (``penalty_interval`` of
        the ENN options); ``None`` without a penalty."""
        options = getattr(self, 'enn_options', None)
        if options is None or options.gamma <= 0:
            return None
        return options.penalty_interval

    def penalty_weight(self, step: int) -> Optional[float]:
        """γ for training step ``step``, as ``ENNModel`` weighs it: ``None``
        without a penalty, ``n·γ`` on every n-th step (``penalty_interval``),
        else 0.

        Args:
            step (int): Training iteration.

        Returns:
            float | None: The penalty weight of that step.
        """
        if self.penalty_interval is None:
            return None
        return self.enn_options.penalty_weight(step)

    def block_bases(self) -> List[list]:
        """The bases each block owns, in ``orthogonality_penalty``'s order,
        each with its position among all the model's bases (which seeds its
        probes, ``penalty_probes``).

        Returns:
            list[list[tuple[int, Tensor]]]: ``(position, basis)`` pairs of
            each block.
        """
        params = dict(self.named_parameters())
        owner = {id(params[n]): k for k, names in enumerate(self.local_partition.params)
                 for n in names}
        out = [[] for _ in range(self.num_blocks)]
        for i, B in enumerate(bases(self)):
            if id(B) in owner:  # a frozen basis is in no block's penalty
                out[owner[id(B)]].append((i, B))
        return out

    def block_wrappers(self, optim_wrapper) -> List[OptimWrapper]:
        """The optimizer wrapper of each block, in block order, from the
        ``OptimWrapperDict`` that ``ENNLocalOptimWrapperConstructor`` builds.

        Args:
            optim_wrapper (OptimWrapperDict): Wrappers keyed ``block0`` ...
                ``block{K-1}``, in that order.

        Returns:
            list[OptimWrapper]: One wrapper per block.

        Raises:
            TypeError: ``optim_wrapper`` is not an ``OptimWrapperDict`` with
                exactly those keys in that order.
        """
        keys = [block_key(k) for k in range(self.num_blocks)]
        if not isinstance(optim_wrapper, OptimWrapperDict) or list(optim_wrapper.keys()) != keys:
            got = list(optim_wrapper.keys()) if isinstance(optim_wrapper, OptimWrapperDict) \
                else type(optim_wrapper).__name__
            raise TypeError(
                f'ENN-ℓ trains each of its {self.num_blocks} blocks with its own '
                f'optimizer wrapper {keys}, got {got}. Set '
                "optim_wrapper=dict(constructor='ENNLocalOptimWrapperConstructor', ...).")
        wrappers = [optim_wrapper[k] for k in keys]
        retracting = any(eigenbasis(m).retract_interval for _, m in enn_modules(self))
        if retracting and not all(hasattr(w, 'retraction') for w in wrappers):
            raise TypeError(
                "ENN-ℓ with ortho='retract' needs ENN optimizer wrappers, which retract the "
                "bases: use ENNLocalOptimWrapperConstructor with block_constructor="
                "'ENNOptimWrapperConstructor' (its default for ENN models).")
        return wrappers

    def momentum_sources(self, k: int) -> List[int]:
        """The blocks whose weights block ``k``'s local head follows
        (``momentum_update``), sorted; empty for other heads.

        Args:
            k (int): Index of a local block (not the last).

        Returns:
            list[int]: Indices of the blocks that own the followed units'
            parameters.
        """
        head = getattr(self, HEADS_KEY)[block_key(k)]
        if not hasattr(head, 'momentum_update'):
            return []
        prefixes = tuple(f'{n}.' for n in getattr(head, 'copied', ()))
        return sorted({b for b, names in enumerate(self.local_partition.params)
                       if any(n.startswith(prefixes) for n in names)})

    def momentum_update(self, blocks: Optional[Sequence[int]] = None) -> None:
        """Move the local heads that follow the network's weights
        (``ENNMomentumLocalHead``) one EMA step toward them.

        Args:
            blocks (Sequence[int], optional): The blocks whose heads to
                update. Defaults to all.
        """
        heads = getattr(self, HEADS_KEY)
        todo = [heads[block_key(k)] for k in range(self.num_blocks - 1)
                if (blocks is None or k in blocks)
                and hasattr(heads[block_key(k)], 'momentum_update')]
        if todo:
            modules = dict(self.named_modules())
            for head in todo:
                head.momentum_update(modules)

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
        wrappers = self.block_wrappers(optim_wrapper)
        # the step this is, as the Runner counts it (block 0 updates every step)
        step_index = wrappers[0].inner_count
        with wrappers[-1].optim_context(self):
            data = self.data_preprocessor(data, True)
        inputs, samples = data['inputs'], data['data_samples']
        step = LocalStep(self, wrappers, targets_of(samples),
                         penalty_weight=self.penalty_weight(step_index), image=inputs)
        self.momentum_update()  # the heads that follow later blocks, before any block trains

        with self.cut_hooks(step.local_update), wrappers[-1].optim_context(self):
            losses = step.final_losses(inputs, samples)
        return step.final_update(losses)

    @contextmanager
    def cut_hooks(self, local_update, blocks: Optional[Sequence[int]] = None):
        """Within the context, a forward hook on the cut point of each of
        ``blocks`` (default: all) calls ``local_update(k, z_k)`` and hands on
        ``z_k.detach()``: no gradient crosses the cut.

        Args:
            local_update (callable): ``(k, z_k) -> None``, e.g.
                :meth:`LocalStep.local_update`.
            blocks (Sequence[int], optional): The blocks whose cut points
                are hooked. Defaults to all blocks with a cut point.

        Yields:
            None: The hooks are removed on exit.
        """
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
