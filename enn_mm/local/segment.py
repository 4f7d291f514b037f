"""Run a contiguous range of ENN-ℓ blocks of a model on its own.

A pipeline stage owns blocks ``a..b`` of a partitioned classifier. It runs
the model's *own* forward code, so no model needs rewriting, with two
changes:

- every module that finishes before cut point ``a - 1`` is *stubbed*: it
  returns a placeholder of the shape it returned in a probe pass (zeros,
  batch size of the current micro-batch) instead of computing, and the cut
  point itself returns the received feature ``z_{a-1}``;
- the forward stops (:class:`StageDone`) right after cut point ``b``.

Which modules finish before a cut point, what they return, and what each
block costs come from one recorded probe pass (:func:`record_calls`).
:func:`check_segments` then replays every stage from the cut outputs of a
plain forward pass and refuses a split whose stages do not reproduce it
(e.g. a forward that carries something other than the cut output past a
cut point): pipelining is exact or refused, never silently wrong.
"""
import copy
import gc
import math
import statistics
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import torch
from torch import Tensor, nn

from mmpretrain.structures import DataSample
from .partition import Partition, main_tensor, own_rng

__all__ = ['CallRecord', 'StageDone', 'record_calls', 'block_costs', 'measure_block_times',
           'training_twin', 'at_iteration', 'penalty_period_mean', 'plan_stages', 'refine_split',
           'stub_prefix', 'check_segments']

PROBE_BATCH = 3


class StageDone(Exception):
    """Raised from the last cut point of a stage to end its forward pass."""

    def __init__(self, output):
        super().__init__('stage done')
        self.output = output


@dataclass
class _Spec:
    """Shape (batch dimension marked ``None``) and dtype of a probed tensor."""
    shape: Tuple[Optional[int], ...]
    dtype: torch.dtype


@dataclass
class CallRecord:
    """The probe pass: module calls in order and the cost of each block.

    Attributes:
        order (list[str]): Module names by the event index at which each call
            ends (one entry per call).
        calls (dict): ``name -> [(start, end, output_spec), ...]``.
        parent (dict): ``name -> name`` of the module that called it first.
        cut_end (dict): Event index at which each cut point's call ends.
        block_macs (list[int]): Multiply-accumulates of the dense
            Conv/Linear layers of each block for one sample.
        layers (list): ``(block, layer shape, first call)`` of every
            Conv/Linear call, for :func:`block_costs`.
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
        return _Spec(shape, output.dtype)
    if isinstance(output, (tuple, list)):
        return type(output)(_spec(o, batch) for o in output)
    if isinstance(output, dict):
        return {k: _spec(v, batch) for k, v in output.items()}
    return output


def _materialize(spec, batch: int, device, inject: Optional[Tensor] = None,
                 cache: Optional[dict] = None):
    """A placeholder of ``spec``'s structure; the first floating tensor is
    ``inject`` when given (the received feature at a cut point). Zeros, reused
    from ``cache`` (one tensor per probed output) when given."""
    injected = [inject is None]

    def build(s):
        if isinstance(s, _Spec):
            if not injected[0] and s.dtype.is_floating_point:
                injected[0] = True
                return inject
            shape = tuple(batch if d is None else d for d in s.shape)
            if cache is None:
                return torch.zeros(shape, dtype=s.dtype, device=device)
            key = (id(s), shape, device)
            if key not in cache:
                cache[key] = torch.zeros(shape, dtype=s.dtype, device=device)
            return cache[key].zero_()
        if isinstance(s, (tuple, list)):
            return type(s)(build(o) for o in s)
        if isinstance(s, dict):
            return {k: build(v) for k, v in s.items()}
        return s

    return build(spec)


def _layer(module: nn.Module, output):
    """``(positions per sample, d_in, d_out, r, groups, is_enn)`` of a
    Conv/Linear call, or None for other modules."""
    if not isinstance(module, (nn.modules.conv._ConvNd, nn.Linear)):
        return None
    out = main_tensor(output) if not isinstance(output, Tensor) else output
    per_sample = out.numel() // max(out.shape[0], 1)
    param = getattr(module, 'parametrizations', None)
    eig = param.weight[0] if param is not None and hasattr(param, 'weight') else None
    if isinstance(module, nn.Linear):
        d_in, d_out, g = module.in_features, module.out_features, 1
    else:
        g = module.groups
        d_in = module.in_channels // g * math.prod(module.kernel_size)
        d_out = module.out_channels // g
    positions = per_sample // max(d_out * g, 1)
    return positions, d_in, d_out, min(d_in, d_out), g, eig is not None


def block_costs(record: 'CallRecord', batch_size: int) -> List[float]:
    """Estimated multiply-adds of one training step of each block at
    ``batch_size``: forward + backward (3x) of its Conv/Linear layers, an ENN
    layer computing the cheaper of building W and applying the factors (as
    ``compute='auto'`` does), plus its orthonormality penalty."""
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
    pass; 0 for the last block, which has the model's own head."""
    from torch.utils.flop_counter import FlopCounterMode
    from .local_model import HEADS_KEY, block_key
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
    (``lr=0``, momentum: the work of a step, the weights kept), for timing."""
    from mmengine.optim import OptimWrapper  # glue-level helper
    twin = copy.deepcopy(model).train()
    params = dict(twin.named_parameters())
    wrappers = [OptimWrapper(torch.optim.SGD(
        [params[n] for n in twin.block_param_names(k)], lr=0.0, momentum=0.9))
        for k in range(twin.num_blocks)]
    return twin, wrappers


@contextmanager
def at_iteration(i: int):
    """The Runner's iteration counter reads ``i`` within the context (the
    penalty schedule follows it); restored after."""
    from mmengine.logging import MessageHub  # glue-level helper
    info = MessageHub.get_current_instance().runtime_info
    missing, old = 'iter' not in info, info.get('iter')
    info['iter'] = i
    try:
        yield
    finally:
        if missing:
            info.pop('iter', None)
        else:
            info['iter'] = old


def penalty_period_mean(measure: Callable[[int], Sequence[float]],
                        interval: int) -> List[float]:
    """Mean per step over a penalty period of ``interval`` steps:
    ``measure(0)`` (a step with the penalty) once, ``measure(1)`` (one
    without) ``interval - 1`` times; just ``measure(0)`` if ``interval`` is 1."""
    on = list(measure(0))
    if interval == 1:
        return on
    off = measure(1)
    return [(a + (interval - 1) * b) / interval for a, b in zip(on, off)]


def measure_block_times(model: nn.Module, batch_size: int, steps: int = 2) -> List[float]:
    """Seconds of one ENN-ℓ training step of each block (its forward, local
    head, backward and an SGD step), median of ``steps`` timed steps after
    one warm-up, on a deep copy of ``model`` with random data. With a penalty
    every n-th step, the mean over n steps (timed with and without it)."""
    from .local_model import LocalStep
    twin, wrappers = training_twin(model)
    device = next(twin.parameters()).device
    num_classes, num_blocks = twin.head.num_classes, twin.num_blocks
    interval = twin._penalty_interval() or 1
    stamps: List[float] = []

    class Timed(LocalStep):
        def local_update(self, k, z):
            super().local_update(k, z)
            stamps.append(time.perf_counter())

    def run(iteration):
        stamps.clear()
        with at_iteration(iteration):
            start = time.perf_counter()
            step = Timed(twin, wrappers, y, image=x)
            with twin._cut_hooks(step.local_update):
                losses = step.final_losses(x, samples)
            step.final_update(losses)
        stamps.append(time.perf_counter())
        return [b - a for a, b in zip([start] + stamps[:-1], stamps)]

    with own_rng(device):
        torch.manual_seed(0)
        x = torch.randn(batch_size, *twin.local_input_shape, device=device)
        y = torch.randint(num_classes, (batch_size,), device=device)
        samples = [DataSample().set_gt_label(int(t)) for t in y]
        run(0)  # warm-up

        def medians(iteration):
            runs = [run(iteration) for _ in range(steps)]
            return [statistics.median(r[k] for r in runs) for k in range(num_blocks)]

        times = penalty_period_mean(medians, interval)
    del twin, wrappers
    gc.collect()  # a copy holds reference cycles; left alive it slows training
    return times


def record_calls(model: nn.Module, partition: Partition,
                 input_shape: Sequence[int]) -> CallRecord:
    """One probe pass of ``model(x, mode='tensor')`` (eval mode, no grad, the
    global random stream untouched) recording every module call."""
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
    training = model.training
    device = next(model.parameters()).device
    model.eval()
    try:
        with own_rng(device), torch.no_grad():
            model(torch.randn(PROBE_BATCH, *input_shape, device=device), mode='tensor')
    finally:
        for h in handles:
            h.remove()
        model.train(training)
    record.calls = {n: [tuple(c) for c in cs] for n, cs in record.calls.items()}
    record.block_macs = macs
    return record


def plan_stages(costs: Sequence[float], num_stages: int) -> List[List[int]]:
    """Split blocks ``0..K-1`` into ``num_stages`` contiguous groups with the
    smallest possible largest group cost (exact, by dynamic programming)."""
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


@contextmanager
def stub_prefix(model: nn.Module, record: CallRecord, entry_cut: Optional[str],
                batch: int, z: Optional[Tensor]):
    """Within the context, the modules of ``model`` that finish before
    ``entry_cut`` return placeholders and ``entry_cut`` returns ``z``.

    A module is stubbed when all its calls end by ``entry_cut``'s and the
    module that called it is not stubbed itself; modules also called after
    the cut run normally (on placeholders, their results unused).
    """
    if entry_cut is None:
        yield
        return
    end = record.cut_end[entry_cut]
    inside = {n for n, calls in record.calls.items() if all(c[1] <= end for c in calls)}
    stubbed = [n for n in inside if record.parent.get(n, '') not in inside]
    modules = dict(model.named_modules())
    device = z.device
    patched = []
    for name in stubbed:
        calls = record.calls[name]
        counter = [0]

        def forward(*args, _calls=calls, _counter=counter, _name=name, **kwargs):
            spec = _calls[min(_counter[0], len(_calls) - 1)][2]
            _counter[0] += 1
            return _materialize(spec, batch, device, z if _name == entry_cut else None,
                                record.placeholders)

        module = modules[name]
        patched.append((module, module.__dict__.get('forward')))
        module.forward = forward
    try:
        yield
    finally:
        for module, own in patched:
            if own is None:
                del module.forward
            else:
                module.forward = own


def model_input(record: CallRecord, batch: int, device) -> Tensor:
    """A zero-memory stand-in for the network input of a later stage."""
    return torch.zeros((), device=device).expand(batch, *record.input_shape)


@contextmanager
def exit_at(model: nn.Module, cut: Optional[str]):
    """Stop the forward pass right after ``cut`` (after its other hooks)."""
    if cut is None:
        yield
        return

    def hook(module, args, output):
        raise StageDone(output)

    handle = dict(model.named_modules())[cut].register_forward_hook(hook)
    try:
        yield
    finally:
        handle.remove()


def check_segments(model: nn.Module, partition: Partition, record: CallRecord,
                   stages: List[List[int]], atol: float = 1e-5) -> None:
    """Replay each stage after the first from the cut outputs of a plain
    forward pass; raise if a stage does not reproduce its output exactly."""
    cuts = partition.cuts
    outputs: Dict[str, Tensor] = {}
    handles = [m.register_forward_hook(
        lambda mod, a, out, _n=n: outputs.__setitem__(_n, main_tensor(out).detach()))
        for n, m in model.named_modules() if n in set(cuts)]
    training = model.training
    device = next(model.parameters()).device
    model.eval()
    try:
        with own_rng(device), torch.no_grad():
            torch.manual_seed(0)
            x = torch.randn(PROBE_BATCH, *record.input_shape, device=device)
            final = main_tensor(model(x, mode='tensor')).detach()
        for h in handles:
            h.remove()
        handles = []
        for blocks in stages[1:]:
            a, b = blocks[0], blocks[-1]
            entry = cuts[a - 1]
            exit_cut = cuts[b] if b < len(cuts) else None
            want = outputs[exit_cut] if exit_cut else final
            got = None
            with torch.no_grad(), stub_prefix(model, record, entry, PROBE_BATCH, outputs[entry]), \
                    exit_at(model, exit_cut):
                try:
                    got = model(model_input(record, PROBE_BATCH, device), mode='tensor')
                except StageDone as done:
                    got = done.output
            got = main_tensor(got)
            scale = want.abs().max().clamp_min(1.0)
            if got.shape != want.shape or not torch.allclose(got, want, rtol=1e-4,
                                                             atol=atol * float(scale)):
                raise ValueError(
                    f'pipeline stage of blocks {a}..{b} cannot run on its own: run from the '
                    f'output of cut point {entry!r}, it does not reproduce the full forward '
                    'pass (the forward carries something other than the cut output past '
                    'that cut point, e.g. a skip from the input). Choose other stage '
                    'boundaries with `stages=[[...], ...]`, or other cut points.')
    finally:
        for h in handles:
            h.remove()
        model.train(training)
