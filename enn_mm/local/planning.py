"""Planning a pipeline: which blocks each stage trains.

Everything here runs in one process, with no process group or runner
(offline, or at the start of a run): a probe pass records every module call
(:func:`record_calls`); a cost model
estimates each block's training step (:func:`block_costs`,
:func:`local_head_costs`) or a timer measures it (:func:`measure_block_times`,
:func:`time_stage`); :func:`plan_stages` splits the blocks into contiguous
stages with the smallest slowest stage and :func:`refine_split` improves a
split from the measured times of trial runs. ``ENNPipelineParallel`` adds the
collectives (every rank plans from the same numbers).
"""
import copy
import gc
import math
import statistics
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Sequence, Tuple

import torch
from mmengine.optim import OptimWrapper
from mmpretrain.structures import DataSample
from torch import Tensor, nn
from torch.utils.flop_counter import FlopCounterMode

from ..core import is_enn
from .partition import Partition, main_tensor, own_rng, probing
from .stage import PROBE_BATCH, TensorSpec, run_blocks
from .step import HEADS_KEY, LocalStep, block_key

__all__ = ['CallRecord', 'record_calls', 'block_costs', 'local_head_costs', 'training_twin',
           'penalty_period_mean', 'measure_block_times', 'time_stage', 'plan_stages',
           'refine_split']


@dataclass
class CallRecord:
    """The probe pass: module calls in order and the cost of each block.

    Attributes:
        calls (dict): ``name -> [(start, end, output_spec), ...]``.
        parent (dict): ``name -> name`` of the module that called it first.
        cut_end (dict): Event index at which each cut point's call ends.
        block_macs (list[int]): Multiply-accumulates of the dense
            Conv/Linear layers of each block for one sample.
        layers (list): ``(block, layer shape, first call)`` of every
            Conv/Linear call, for :func:`block_costs`.
        input_shape (tuple): ``(C, H, W)`` of the network input.
        placeholders (dict): The stubbed modules' zero outputs, kept between
            steps (see :func:`enn_mm.local.stage.stub_prefix`).
    """
    calls: Dict[str, List[Tuple[int, int, Any]]] = field(default_factory=dict)
    parent: Dict[str, str] = field(default_factory=dict)
    cut_end: Dict[str, int] = field(default_factory=dict)
    block_macs: List[int] = field(default_factory=list)
    layers: List[tuple] = field(default_factory=list)
    input_shape: Tuple[int, ...] = ()
    # Placeholder tensors kept between steps: allocating tens of MB afresh
    # every step costs page faults, re-zeroing them almost nothing.
    placeholders: Dict[tuple, Tensor] = field(default_factory=dict, repr=False)


def _spec(output, batch: int):
    if isinstance(output, Tensor):
        shape = tuple(None if i == 0 and s == batch else s for i, s in enumerate(output.shape))
        return TensorSpec(shape, output.dtype)
    if isinstance(output, (tuple, list)):
        return type(output)(_spec(o, batch) for o in output)
    if isinstance(output, dict):
        return {k: _spec(v, batch) for k, v in output.items()}
    return output


def _layer(module: nn.Module, output):
    """``(positions per sample, d_in, d_out, r, groups, is_enn)`` of a
    Conv/Linear call, or None for other modules."""
    if not isinstance(module, (nn.modules.conv._ConvNd, nn.Linear)):
        return None
    out = main_tensor(output) if not isinstance(output, Tensor) else output
    per_sample = out.numel() // max(out.shape[0], 1)
    if isinstance(module, nn.Linear):
        d_in, d_out, g = module.in_features, module.out_features, 1
    else:
        g = module.groups
        d_in = module.in_channels // g * math.prod(module.kernel_size)
        d_out = module.out_channels // g
    positions = per_sample // max(d_out * g, 1)
    return positions, d_in, d_out, min(d_in, d_out), g, is_enn(module)


def block_costs(record: 'CallRecord', batch_size: int) -> List[float]:
    """Estimated multiply-adds of one training step of each block at
    ``batch_size``: forward + backward (3x) of its Conv/Linear layers, an ENN
    layer computing the cheaper of building W and applying the factors (as
    ``compute='auto'`` does), plus its orthonormality penalty.

    Args:
        record (CallRecord): The probe record (:func:`record_calls`).
        batch_size (int): Micro-batch size.

    Returns:
        list[float]: One estimate per block; local heads and objectives are
        not included (see :func:`local_head_costs`).
    """
    costs = [0.0] * len(record.block_macs)
    for block, (positions, d_in, d_out, r, g, enn), first in record.layers:
        n = positions * batch_size
        dense = g * n * d_out * d_in
        if enn:
            dense = min(dense + g * d_out * r * d_in, g * n * r * (d_in + d_out))
            if first:  # the penalty's Gram matrices and their gradients
                dense += 2 * g * (d_in + d_out) * r * r / 3
        costs[block] += 3.0 * dense
    return costs


def local_head_costs(model: nn.Module, batch_size: int) -> List[float]:
    """Multiply-adds of one training step (forward + backward, 3x) of each
    block's local head and objectives (decoders, similarity convs) at
    ``batch_size``, counted by ``torch.utils.flop_counter`` on one forward
    pass; 0 for the last block, which has the model's own head.

    Args:
        model (ENNLocalClassifier): The model; its heads and objectives are
            run as deep copies in train mode (its own are untouched).
        batch_size (int): Micro-batch size.

    Returns:
        list[float]: One count per block.
    """
    costs = [0.0] * model.num_blocks
    device = next(model.parameters()).device
    heads = getattr(model, HEADS_KEY)
    for k in range(model.num_blocks - 1):
        shape = model.local_partition.shapes[k]
        modules = [heads[block_key(k)]] + [m for _, _, m in model.block_objectives(k)
                                            if m is not None]
        twins = [copy.deepcopy(m).train() for m in modules]  # BN statistics untouched
        with own_rng(device), torch.no_grad(), FlopCounterMode(display=False) as counter:
            z = torch.randn(2, *shape, device=device)
            image = torch.randn(2, *model.local_input_shape, device=device)
            logits = twins[0](z)
            target = torch.zeros(2, dtype=torch.long, device=device)
            for m in twins[1:]:
                m(z, target, logits, image, model.local_loss_module)
        costs[k] = 3.0 * counter.get_total_flops() / 2 * batch_size / 2
    return costs


def training_twin(model: nn.Module):
    """A deep copy of ``model`` in train mode with one SGD wrapper per block
    (``lr=0``, momentum: the work of a step, the weights kept), for timing.

    Args:
        model (ENNLocalClassifier): The model to copy.

    Returns:
        tuple: ``(twin, wrappers)``: the copy and a list of one
        ``OptimWrapper`` per block over that block's parameters of the copy.
    """
    twin = copy.deepcopy(model).train()
    params = dict(twin.named_parameters())
    wrappers = [OptimWrapper(torch.optim.SGD(
        [params[n] for n in twin.block_param_names(k)], lr=0.0, momentum=0.9))
        for k in range(twin.num_blocks)]
    return twin, wrappers


def penalty_period_mean(measure: Callable[[int], Sequence[float]],
                        interval: int) -> List[float]:
    """Mean per step over a penalty period of ``interval`` steps:
    ``measure(0)`` (step 0, with the penalty) once, ``measure(1)`` (a step
    without) ``interval - 1`` times; just ``measure(0)`` if ``interval`` is 1.

    Args:
        measure (callable): ``step index -> per-item values`` (e.g. seconds
            per block); called with 0 and, if ``interval > 1``, with 1.
        interval (int): Steps between penalties (1: every step).

    Returns:
        list[float]: The mean per step of each value.
    """
    on = list(measure(0))
    if interval == 1:
        return on
    off = measure(1)
    return [(a + (interval - 1) * b) / interval for a, b in zip(on, off)]


def measure_block_times(model: nn.Module, batch_size: int, steps: int = 2) -> List[float]:
    """Seconds of one ENN-ℓ training step of each block (its forward, local
    head, backward and an SGD step), median of ``steps`` timed steps after
    one warm-up, on a deep copy of ``model`` with random data. With a penalty
    every n-th step, the mean over n steps (timed with and without it).

    Args:
        model (ENNLocalClassifier): The model (left untouched; the global
            random streams too).
        batch_size (int): Batch size of the random data.
        steps (int): Timed steps per median. Defaults to 2.

    Returns:
        list[float]: Seconds per block.
    """
    twin, wrappers = training_twin(model)
    device = next(twin.parameters()).device
    num_classes, num_blocks = twin.head.num_classes, twin.num_blocks
    interval = twin.penalty_interval or 1
    stamps: List[float] = []

    def stamp():
        if device.type == 'cuda':  # the block's kernels, not just their launch
            torch.cuda.synchronize(device)
        stamps.append(time.perf_counter())

    class Timed(LocalStep):
        def local_update(self, k, z):
            super().local_update(k, z)
            stamp()

    def run(step_index):
        stamps.clear()
        start = time.perf_counter()
        step = Timed(twin, wrappers, y, penalty_weight=twin.penalty_weight(step_index), image=x)
        with twin.cut_hooks(step.local_update):
            losses = step.final_losses(x, samples)
        step.final_update(losses)
        stamp()
        return [b - a for a, b in zip([start] + stamps[:-1], stamps)]

    with own_rng(device):
        torch.manual_seed(0)
        x = torch.randn(batch_size, *twin.local_input_shape, device=device)
        y = torch.randint(num_classes, (batch_size,), device=device)
        samples = [DataSample().set_gt_label(int(t)) for t in y]
        run(0)  # warm-up

        def medians(step_index):
            runs = [run(step_index) for _ in range(steps)]
            return [statistics.median(r[k] for r in runs) for k in range(num_blocks)]

        times = penalty_period_mean(medians, interval)
    twin = wrappers = None  # (dropped before the collection below)
    gc.collect()  # a copy holds reference cycles; left alive it slows training
    return times


def record_calls(model: nn.Module, partition: Partition,
                 input_shape: Sequence[int]) -> CallRecord:
    """One probe pass of ``model(x, mode='tensor')`` (eval mode, no grad, the
    global random stream untouched) recording every module call.

    Args:
        model (nn.Module): The partitioned classifier.
        partition (Partition): Its partition.
        input_shape (Sequence[int]): ``(C, H, W)`` of the network input; the
            probe batch holds ``PROBE_BATCH`` random inputs.

    Returns:
        CallRecord: The calls of every named submodule (their output specs
        with the batch dimension marked ``None``), who called each first,
        where each cut point ends, and the Conv/Linear layers and
        multiply-accumulates of each block.
    """
    record = CallRecord(input_shape=tuple(input_shape))
    cut_set = set(partition.cuts)
    macs = [0] * partition.num_blocks
    events = [0]
    stack: List[str] = []
    handles = []

    def pre(name):
        def hook(module, args):
            record.parent.setdefault(name, stack[-1] if stack else '')
            stack.append(name)
            record.calls.setdefault(name, []).append([events[0], None, None])
            events[0] += 1
        return hook

    def post(name):
        def hook(module, args, output):
            stack.pop()
            call = record.calls[name][-1]
            call[1], call[2] = events[0], _spec(output, PROBE_BATCH)
            events[0] += 1
            block = len(record.cut_end)  # cut points passed so far
            block = min(block, len(macs) - 1)
            layer = _layer(module, output)
            if layer is not None:
                positions, d_in, d_out, _, g, _ = layer
                macs[block] += positions * g * d_out * d_in
                record.layers.append((block, layer, len(record.calls[name]) == 1))
            if name in cut_set:
                record.cut_end[name] = call[1]
        return hook

    for name, module in model.named_modules():
        if name:
            handles += [module.register_forward_pre_hook(pre(name)),
                        module.register_forward_hook(post(name))]
    try:
        with probing(model) as device, torch.no_grad():
            model(torch.randn(PROBE_BATCH, *input_shape, device=device), mode='tensor')
    finally:
        for h in handles:
            h.remove()
    record.calls = {n: [tuple(c) for c in cs] for n, cs in record.calls.items()}
    record.block_macs = macs
    return record


def time_stage(model: nn.Module, record: 'CallRecord', wrappers: List, blocks: List[int],
               batch_size: int, steps: int = 3, seed: int = 0,
               before: Callable[[], None] = lambda: None) -> float:
    """Seconds per training step of the stage that trains ``blocks`` of
    ``model`` (a :func:`training_twin`), on random data at ``batch_size``;
    with a penalty every n-th step, the mean over n steps.

    Args:
        model (ENNLocalClassifier): The model copy to time.
        record (CallRecord): Its probe record.
        wrappers (list): One optimizer wrapper per block.
        blocks (list[int]): The stage's blocks.
        batch_size (int): Micro-batch size.
        steps (int): Steps per timing, after one warm-up step.
        seed (int): Seed of the random data (its own random stream).
        before (callable): Called before each timing, e.g. a barrier so
            that all stages of a pipeline run at once, as in training.

    Returns:
        float: Seconds per step.
    """
    device = next(model.parameters()).device
    with own_rng(device):
        torch.manual_seed(seed)
        target = torch.randint(model.head.num_classes, (batch_size,), device=device)
        if blocks[0] == 0:
            x = torch.randn(batch_size, *model.local_input_shape, device=device)
            kwargs = dict(inputs=x, samples=[DataSample().set_gt_label(t) for t in target],
                          image=x)
        else:
            z = torch.randn(batch_size, *model.local_partition.shapes[blocks[0] - 1],
                            device=device)
            kwargs = dict(z=z)
            if model.needs_image(blocks):
                kwargs['image'] = torch.randn(batch_size, *model.local_input_shape,
                                              device=device)

        def run(step_index: int) -> None:
            run_blocks(model, record, wrappers, blocks, target,
                       penalty_weight=model.penalty_weight(step_index), **kwargs)

        def timed(step_index: int) -> List[float]:
            before()
            start = time.perf_counter()
            for _ in range(steps):
                run(step_index)
            if device.type == 'cuda':
                torch.cuda.synchronize(device)
            return [(time.perf_counter() - start) / steps]

        run(0)  # warm-up
        return penalty_period_mean(timed, model.penalty_interval or 1)[0]


def plan_stages(costs: Sequence[float], num_stages: int) -> List[List[int]]:
    """Split blocks ``0..K-1`` into ``num_stages`` contiguous groups with the
    smallest possible largest group cost (exact, by dynamic programming).

    Args:
        costs (Sequence[float]): Cost of each block ``0..K-1``.
        num_stages (int): Number of groups.

    Returns:
        list[list[int]]: The block indices of each group, in order.

    Raises:
        ValueError: ``num_stages`` is not between 1 and ``K``.
    """
    k = len(costs)
    if not 1 <= num_stages <= k:
        raise ValueError(f'cannot split {k} blocks into {num_stages} pipeline stages: use '
                         f'1 to {k} stages, or cut the model into more blocks.')
    prefix = [0.0]
    for c in costs:
        prefix.append(prefix[-1] + float(c))
    inf = float('inf')
    # best[s][i]: smallest max-cost of splitting the first i blocks into s stages
    best = [[inf] * (k + 1) for _ in range(num_stages + 1)]
    cut = [[0] * (k + 1) for _ in range(num_stages + 1)]
    best[0][0] = 0.0
    for s in range(1, num_stages + 1):
        for i in range(s, k + 1):
            for j in range(s - 1, i):
                v = max(best[s - 1][j], prefix[i] - prefix[j])
                if v < best[s][i]:
                    best[s][i], cut[s][i] = v, j
    groups, i = [], k
    for s in range(num_stages, 0, -1):
        j = cut[s][i]
        groups.append(list(range(j, i)))
        i = j
    return groups[::-1]


def refine_split(costs: Sequence[float], num_stages: int,
                 measure: Callable[[List[List[int]]], List[float]], rounds: int,
                 agree: Callable = lambda blocks: blocks):
    """Improve a split by trying it: ``measure(blocks)`` gives each stage's
    time with all stages running; each block's cost is then scaled by its
    stage's measured/predicted time (its cost where it last ran) and the
    split planned again, for at most ``rounds`` measurements or until a split
    repeats.

    Args:
        costs (Sequence[float]): Each block's cost, as first estimated.
        num_stages (int): Stages.
        measure (callable): ``blocks -> [time of each stage]``.
        rounds (int): Most splits measured (>= 1).
        agree (callable): Applied to every planned split before use (the
            pipeline broadcasts rank 0's, so all ranks try the same ones).

    Returns:
        tuple: The split with the smallest measured slowest stage (the earliest
        on ties) and ``[(split, times), ...]`` in the order tried.
    """
    costs = [float(c) for c in costs]
    blocks, tried = agree(plan_stages(costs, num_stages)), []
    for _ in range(max(1, rounds)):
        times = list(measure(blocks))
        tried.append((blocks, times))
        for g, t in zip(blocks, times):
            predicted = sum(costs[b] for b in g)
            if predicted > 0:
                for b in g:
                    costs[b] *= t / predicted
        blocks = agree(plan_stages(costs, num_stages))
        if any(blocks == b for b, _ in tried):
            break
    best = min(range(len(tried)), key=lambda i: (max(tried[i][1]), i))
    return tried[best][0], tried
