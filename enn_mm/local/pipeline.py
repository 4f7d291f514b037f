"""``ENNPipelineParallel``: ENN-ℓ blocks pipelined over processes.

ENN-ℓ sends nothing backward across a block boundary, so blocks can run on
different workers as a pipeline: stage ``s`` trains its blocks on micro-batch
``t`` while stage ``s + 1`` trains on ``t - 1``. Features and labels flow
forward with ``torch.distributed`` point-to-point messages (gloo on CPU, NCCL
on GPU); a stage may run at most ``max_inflight`` micro-batches ahead of the
next one. Every block's arithmetic is the single-process ``train_step``'s, so
a pipelined run computes the same parameters.

Layout: ``world_size = stages × replicas``. Rank ``r`` is stage
``r % stages`` of replica ``r // stages``; the replicas of a stage see
different data and average their blocks' gradients (all-reduce within the
stage's group) before each step.

Each rank holds the whole model but trains only its stage's blocks;
:meth:`ENNPipelineParallel.assemble` copies every block's parameters,
buffers and optimizer state from the rank that trains it to all ranks, so
validation and checkpoints see the whole trained model (the checkpoint is the
same as a single-process ENN-ℓ one: ``tools/test.py`` and export take it).
Planning (:mod:`.planning`), running a stage (:mod:`.stage`) and the messages
(:mod:`.transport`) live in their own modules; this one holds the layout,
the collectives around planning, ``train_step``, gradient sync and assembly.
Use with ``ENNPipelineTrainLoop``; see ``docs/local_learning.md``.
"""
import gc
import time
from collections import OrderedDict
from typing import Dict, List, Optional, Sequence

import torch
import torch.distributed as dist
from mmengine.logging import print_log
from mmengine.registry import MODEL_WRAPPERS as ENGINE_MODEL_WRAPPERS
from mmpretrain.registry import MODEL_WRAPPERS
from torch import Tensor, nn
from torch._utils import _flatten_dense_tensors, _unflatten_dense_tensors

from .local_model import ENNLocalClassifier
from .planning import (
    block_costs,
    local_head_costs,
    measure_block_times,
    plan_stages,
    record_calls,
    refine_split,
    time_stage,
    training_twin,
)
from .stage import check_followed, check_segments, run_blocks
from .step import HEADS_KEY, OBJECTIVES_KEY, block_key, targets_of
from .transport import StageLink, comm_device

__all__ = ['ENNPipelineParallel']


def _split_name(blocks) -> str:
    return ' | '.join(f'{g[0]}-{g[-1]}' if len(g) > 1 else str(g[0]) for g in blocks)


def _is_dist() -> bool:
    return dist.is_available() and dist.is_initialized()


@MODEL_WRAPPERS.register_module()
class ENNPipelineParallel(nn.Module):
    """Train an ENN-ℓ model as a pipeline of stages over processes.

    Set it as the model wrapper and use the pipeline loop::

        model_wrapper_cfg = dict(type='ENNPipelineParallel', stages=2)
        train_cfg = dict(type='ENNPipelineTrainLoop', max_epochs=8)

    and launch ``stages × replicas`` processes (``tools/dist_train.sh CONFIG
    N``, ``torchrun``, ``--launcher pytorch`` or slurm).

    Args:
        module (nn.Module): A model built by ``ENNLocalClassifier``.
        stages (int): Pipeline stages ``K``; the world size must be a multiple.
        assignment (list[list[int]], optional): Blocks of each stage, e.g.
            ``[[0, 1, 2], [3, 4, 5, 6, 7]]``. Defaults to contiguous groups
            balanced by an estimate of each block's cost (printed at start).
        timeout (float): Seconds a stage waits for its neighbour before it
            stops with an error naming that stage. Defaults to 300.
        max_inflight (int): Micro-batches a stage may send ahead of what the
            next stage has received. Defaults to 2.
        balance (str): How blocks are balanced over stages without an
            ``assignment``: ``'measure'`` (every rank times each block's
            training step on a copy of the model at the training batch size,
            and the mean decides) or
            ``'estimate'`` (multiply-add counts). Defaults to ``'measure'``.
        refine (int): With ``balance='measure'``, rounds of trial runs: the
            stages of the planned split train at once for a few steps, each
            on its rank's copy of the model; the blocks are reweighted by
            their stage's time and the split is planned again. A block costs
            more beside other stages (shared caches and memory) and less
            beside its own neighbours than when the whole model runs on one
            core, which timing blocks alone cannot see. The fastest split
            tried is kept. ``0`` skips this. Defaults to 3.

    Raises:
        TypeError: ``module`` is not built by ``ENNLocalClassifier``.
        ValueError: ``stages`` is not a positive integer, exceeds the
            model's blocks or does not divide the world size;
            ``max_inflight < 1`` or ``timeout <= 0``; an unknown ``balance``;
            ``refine`` is not a non-negative integer.
    """

    def __init__(self, module: nn.Module, stages: int = 2,
                 assignment: Optional[Sequence[Sequence[int]]] = None,
                 timeout: float = 300.0, max_inflight: int = 2, balance: str = 'measure',
                 refine: int = 3):
        super().__init__()
        if not isinstance(module, ENNLocalClassifier):
            raise TypeError('ENNPipelineParallel pipelines the blocks of an ENN-ℓ model: set '
                            "model=dict(type='ENNLocalClassifier', ...), got "
                            f'{type(module).__name__}.')
        world = dist.get_world_size() if _is_dist() else 1
        rank = dist.get_rank() if _is_dist() else 0
        if not isinstance(stages, int) or stages < 1:
            raise ValueError(f'stages must be a positive integer, got {stages!r}.')
        if stages > module.num_blocks:
            raise ValueError(f'stages={stages} but the model has only {module.num_blocks} '
                             'blocks: use fewer stages or more cut points.')
        if world % stages:
            raise ValueError(f'the world size {world} is not a multiple of stages={stages}: '
                             f'launch stages × replicas processes (e.g. {stages} or '
                             f'{2 * stages}).')
        if max_inflight < 1 or timeout <= 0:
            raise ValueError('max_inflight must be >= 1 and timeout > 0.')
        if balance not in ('measure', 'estimate'):
            raise ValueError(f"balance must be 'measure' or 'estimate', got {balance!r}.")
        if not isinstance(refine, int) or refine < 0:
            raise ValueError(f'refine must be a non-negative integer, got {refine!r}.')
        self.balance, self.refine = balance, refine
        self.module = module
        self.num_stages, self.replicas = stages, world // stages
        self.stage, self.replica, self.rank = rank % stages, rank // stages, rank
        self.link = StageLink(self.stage, rank, timeout, max_inflight)
        self._assignment = [list(b) for b in assignment] if assignment is not None else None
        self._groups = None
        if self.replicas > 1:  # every rank creates every group, in one order
            groups = [dist.new_group([r * stages + s for r in range(self.replicas)])
                      for s in range(stages)]
            self._groups = groups
        self.record = record_calls(module, module.local_partition, module.local_input_shape)
        self.blocks: Optional[List[List[int]]] = None
        self.stats = dict(steps=0, busy_s=0.0, wait_s=0.0)

    # ---------------------------------------------------------------- layout
    def start(self, batch_size: int) -> List[List[int]]:
        """Make every rank's model rank 0's and plan the stages (once).
        Collective. ``ENNPipelineHook`` calls it before training; otherwise
        the first ``train_step`` does, at that batch's size.

        Args:
            batch_size (int): Micro-batch size, for balancing the stages.

        Returns:
            list[list[int]]: The blocks of each stage (see :meth:`plan`).
        """
        if self.blocks is None:
            self.broadcast_from(0)
        return self.plan(batch_size)

    def plan(self, batch_size: int) -> List[List[int]]:
        """Assign blocks to stages (once), check that each stage runs on its
        own, and print the assignment. Collective: every rank calls it.

        Args:
            batch_size (int): Micro-batch size, for balancing the stages.

        Returns:
            list[list[int]]: The blocks of each stage, contiguous and in
            order; the same on every rank.

        Raises:
            ValueError: The ``assignment`` does not list blocks ``0..K-1`` in
                order in ``stages`` non-empty stages, a stage cannot run
                on its own (:func:`check_segments`), or a momentum head
                follows a block of another stage (:func:`check_followed`).
        """
        if self.blocks is not None:
            return self.blocks
        model, k = self.module, self.module.num_blocks
        if self.balance == 'measure' and self._assignment is None:
            costs, what = self._measured_costs(batch_size), 'blocks timed alone'
        else:
            costs = [a + b for a, b in zip(block_costs(self.record, batch_size),
                                           local_head_costs(model, batch_size))]
            what = 'estimated cost'
        if self._assignment is not None:
            flat = [b for g in self._assignment for b in g]
            if len(self._assignment) != self.num_stages or flat != list(range(k)):
                raise ValueError(f'assignment {self._assignment} must list blocks 0..{k - 1} '
                                 f'in order, in {self.num_stages} non-empty stages.')
            if any(not g for g in self._assignment):
                raise ValueError(f'assignment {self._assignment} has an empty stage.')
            blocks = self._assignment
        else:
            blocks = plan_stages(costs, self.num_stages)
        trials = []
        if self.balance == 'measure' and self._assignment is None and self.refine \
                and self.num_stages > 1 and _is_dist():
            blocks, trials = self._refine(costs, batch_size)  # checks each split it runs
        else:
            check_segments(model, model.local_partition, self.record, blocks)
        total = sum(costs) or 1.0
        cuts = model.local_partition.cuts

        def span(g):
            start = 'the input' if g[0] == 0 else repr(cuts[g[0] - 1])
            end = repr(cuts[g[-1]]) if g[-1] < len(cuts) else 'the loss'
            return f'from {start} to {end}'

        lines = [f'  stage {s}: blocks {g[0]}-{g[-1]} ({span(g)}), {what} '
                 f'{100 * sum(costs[b] for b in g) / total:.0f}%' for s, g in enumerate(blocks)]
        lines += [f'  trial {_split_name(b)}: s/step of each stage, all running: '
                  + ', '.join(f'{t:.3f}' for t in times)
                  + (' (kept)' if b == blocks else '') for b, times in trials]
        print_log(f'ENN-ℓ pipeline: {self.num_stages} stages × {self.replicas} replicas '
                  f'(this rank: stage {self.stage}, replica {self.replica})\n' +
                  '\n'.join(lines), logger='current')
        check_followed(model, blocks)
        self.blocks = blocks
        params = dict(model.named_parameters())
        self._block_params = [[params[n] for n in model.block_param_names(b)]
                              for b in range(k)]
        return blocks

    def _refine(self, costs, batch_size: int):
        # Collective; every split tried is rank 0's, broadcast, so all agree.
        model = self.module
        twin, wrappers = training_twin(model)

        def agree(blocks):
            obj = [blocks]
            dist.broadcast_object_list(obj, src=0)
            return obj[0]

        def measure(blocks):
            check_segments(model, model.local_partition, self.record, blocks)
            return self._stage_times(twin, wrappers, blocks, batch_size)

        try:
            return refine_split(costs, self.num_stages, measure, self.refine, agree)
        finally:
            twin = wrappers = None  # (dropped: the copy holds reference cycles)
            gc.collect()  # a copy holds reference cycles; left alive it slows training

    def _stage_times(self, twin, wrappers, blocks, batch_size: int) -> List[float]:
        """Seconds per step of each stage of ``blocks``, all stages training
        at once (each rank its own stage, on ``twin``); mean over replicas,
        the same on every rank."""
        mine = time_stage(twin, self.record, wrappers, blocks[self.stage], batch_size,
                          seed=self.rank, before=dist.barrier)
        device = next(twin.parameters()).device
        times = torch.zeros(self.num_stages, dtype=torch.float64)
        times[self.stage] = mine / self.replicas
        times = times.to(comm_device(device))
        dist.all_reduce(times)
        dist.broadcast(times, 0)  # bitwise the same plan on every rank
        return times.cpu().tolist()

    def _measured_costs(self, batch_size: int) -> List[float]:
        # Every rank times the blocks at once, as busy as in training (cores
        # may share caches and memory bandwidth), and all plan from the mean.
        times = torch.tensor(measure_block_times(self.module, batch_size), dtype=torch.float64)
        if _is_dist() and dist.get_world_size() > 1:
            dist.all_reduce(times)
            times /= dist.get_world_size()
        return times.tolist()

    @property
    def owner(self) -> Dict[int, int]:
        """Block -> stage that trains it."""
        return {b: s for s, g in enumerate(self.blocks) for b in g}

    def flush(self) -> float:
        """Wait until the next stage has received everything sent so far.

        Returns:
            float: Seconds spent waiting.
        """
        return self.link.flush()

    # ------------------------------------------------------------- training
    def _grad_sync(self, k: int) -> None:
        params = self._block_params[k]
        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
        flat = _flatten_dense_tensors(grads)
        dist.all_reduce(flat, group=self._groups[self.stage])
        flat.div_(self.replicas)
        for p, g in zip(params, _unflatten_dense_tensors(flat, grads)):
            if p.grad is None:
                p.grad = g
            else:
                p.grad.copy_(g)

    def train_step(self, data, optim_wrapper) -> Dict[str, Tensor]:
        """This stage's part of one ENN-ℓ step.

        Args:
            data (dict | None): A batch from the dataloader (stage 0); later
                stages receive their input from the previous stage.
            optim_wrapper (OptimWrapperDict): One wrapper per block.

        Returns:
            dict: ``block{k}.loss`` / ``block{k}.top1`` of this stage's blocks
            (and the model's loss items on the last stage).

        Raises:
            ValueError: The feature received from the previous stage does
                not have the shape planned from ``input_shape``.
        """
        start = time.perf_counter()
        model = self.module
        wrappers = model.block_wrappers(optim_wrapper)
        device = next(model.parameters()).device
        waited = 0.0
        if self.stage == 0:
            with wrappers[-1].optim_context(model):
                data = model.data_preprocessor(data, True)
            inputs, samples = data['inputs'], data['data_samples']
            target, z, image = targets_of(samples), None, data['inputs']
        if self.blocks is None:  # no ENNPipelineHook planned: plan at this batch size
            size = torch.tensor([len(target) if self.stage == 0 else 0])
            if _is_dist():
                size = size.to(comm_device(device))
                dist.all_reduce(size, op=dist.ReduceOp.MAX)
            self.start(int(size))
        if self.stage > 0:
            z, target, image, waited = self.link.recv(device)
        blocks = self.blocks[self.stage]
        if z is not None:
            want = model.local_partition.shapes[blocks[0] - 1]
            if tuple(z.shape[1:]) != tuple(want):
                raise ValueError(f'stage {self.stage} received a feature of shape '
                                 f'{tuple(z.shape[1:])} from '
                                 f'{model.local_partition.cuts[blocks[0] - 1]!r}, expected '
                                 f'{want}: pipelining needs the input size given as '
                                 f'input_shape {model.local_input_shape}.')
            inputs, samples = None, None
        model.momentum_update(blocks)
        log_vars, out = run_blocks(
            model, self.record, wrappers, blocks, target,
            # the step this is: the updates so far of this stage's first block
            penalty_weight=model.penalty_weight(wrappers[blocks[0]].inner_count), inputs=inputs,
            samples=samples, z=z, grad_sync=self._grad_sync if self.replicas > 1 else None,
            image=image)
        if out is not None:
            later = [b for g in self.blocks[self.stage + 1:] for b in g]
            waited += self.link.send(out, target, image if model.needs_image(later) else None)
        elapsed = time.perf_counter() - start
        self.stats['steps'] += 1
        self.stats['wait_s'] += waited
        self.stats['busy_s'] += elapsed - waited
        return log_vars

    # ------------------------------------------------------------ assembly
    def _block_state(self, k: int) -> List[Tensor]:
        """Parameters and buffers block ``k``'s training changes."""
        model = self.module
        tensors = [p.data for p in self._block_params[k]]
        local = tuple(f'{key}.' for key in (HEADS_KEY, OBJECTIVES_KEY))
        ends = [self.record.cut_end[c] for c in model.local_partition.cuts]
        for name, buf in model.named_buffers():
            owner = name.rsplit('.', 1)[0]
            if name.startswith(local):
                mine = name.startswith(tuple(f'{p}{block_key(k)}.' for p in local))
            else:
                calls = self.record.calls.get(owner)
                if not calls:
                    continue
                mine = sum(calls[0][1] > e for e in ends) == k
            if mine:
                tensors.append(buf)
        return tensors

    @torch.no_grad()
    def _broadcast(self, tensors: List[Tensor], src: int) -> None:
        by_dtype: Dict = OrderedDict()
        for t in tensors:
            by_dtype.setdefault((t.dtype, t.device), []).append(t)
        for (_, device), group in by_dtype.items():
            dev = comm_device(device)
            flat = _flatten_dense_tensors([t.to(dev) for t in group])
            dist.broadcast(flat, src)
            if self.rank != src:
                for t, v in zip(group, _unflatten_dense_tensors(flat, group)):
                    t.copy_(v)

    def assemble(self, optim_wrapper=None) -> None:
        """Give every rank every block's trained state (collective).

        Args:
            optim_wrapper (OptimWrapperDict, optional): Also copy each block's
                optimizer state (for checkpoints).
        """
        if not _is_dist() or dist.get_world_size() == 1:
            return
        self.flush()
        wrappers = (self.module.block_wrappers(optim_wrapper)
                    if optim_wrapper is not None else None)
        for k, s in self.owner.items():
            self._broadcast(self._block_state(k), s)  # replica 0 of stage s
            if wrappers is not None:
                obj = [wrappers[k].state_dict() if self.rank == s else None]
                dist.broadcast_object_list(obj, src=s)
                if self.rank != s:
                    wrappers[k].load_state_dict(obj[0])

    def broadcast_from(self, src: int = 0) -> None:
        """Make every rank's model equal to rank ``src``'s (at start).

        Collective; does nothing without a process group of more than one
        rank.

        Args:
            src (int): The rank whose parameters and buffers are copied.
                Defaults to 0.
        """
        if _is_dist() and dist.get_world_size() > 1:
            self._broadcast(list(self.module.parameters()) + list(self.module.buffers()), src)

    # ------------------------------------------------------------ inference
    def val_step(self, data):
        """The wrapped model's ``val_step`` (this rank's copy, whole after
        :meth:`assemble`).

        Args:
            data (dict): A batch from the dataloader.

        Returns:
            list[DataSample]: The predictions.
        """
        return self.module.val_step(data)

    def test_step(self, data):
        """The wrapped model's ``test_step`` (this rank's copy, whole after
        :meth:`assemble`).

        Args:
            data (dict): A batch from the dataloader.

        Returns:
            list[DataSample]: The predictions.
        """
        return self.module.test_step(data)

    def forward(self, *args, **kwargs):
        """Call the wrapped model.

        Args:
            *args: Passed to the wrapped model.
            **kwargs: Passed to the wrapped model.

        Returns:
            Any: The wrapped model's output.
        """
        return self.module(*args, **kwargs)


# mmengine's Runner.wrap_model looks the wrapper type up with
# `MODEL_WRAPPERS.get` on mmengine's own registry, which does not search
# MMPretrain's child registry: register it there too.
if ENGINE_MODEL_WRAPPERS.get('ENNPipelineParallel') is None:
    ENGINE_MODEL_WRAPPERS.register_module(module=ENNPipelineParallel)
