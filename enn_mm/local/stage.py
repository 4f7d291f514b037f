"""Run a contiguous range of ENN-ℓ blocks of a model on its own: one
pipeline stage.

A stage owns blocks ``a..b`` of a partitioned classifier. It runs the model's
*own* forward code, so no model needs rewriting, with two changes:

- every module that finishes before cut point ``a - 1`` is *stubbed*: it
  returns a placeholder of the shape it returned in a probe pass (zeros,
  batch size of the current micro-batch) instead of computing, and the cut
  point itself returns the received feature ``z_{a-1}``;
- the forward stops (:class:`StageDone`) right after cut point ``b``.

Which modules finish before a cut point and what they return come from the
planner's probe record (:func:`enn_mm.local.planning.record_calls`).
:func:`check_segments` replays every stage from the cut outputs of a plain
forward pass and refuses a split whose stages do not reproduce it (e.g. a
forward that carries something other than the cut output past a cut point):
pipelining is exact or refused, never silently wrong.
"""
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

import torch
from mmpretrain.structures import DataSample
from torch import Tensor, nn

from .partition import Partition, main_tensor, probing
from .step import LocalStep

__all__ = ['StageDone', 'TensorSpec', 'PROBE_BATCH', 'materialize', 'stub_prefix',
           'model_input', 'exit_at', 'check_segments', 'check_followed', 'run_blocks']

PROBE_BATCH = 3


class StageDone(Exception):
    """Raised from the last cut point of a stage to end its forward pass.

    Args:
        output (Any): The cut point's output, kept as ``self.output``.
    """

    def __init__(self, output):
        super().__init__('stage done')
        self.output = output


@dataclass
class TensorSpec:
    """Shape (batch dimension marked ``None``) and dtype of a probed tensor."""
    shape: Tuple[Optional[int], ...]
    dtype: torch.dtype


def materialize(spec, batch: int, device, inject: Optional[Tensor] = None,
                 cache: Optional[dict] = None):
    """A placeholder of ``spec``'s structure; the first floating tensor is
    ``inject`` when given (the received feature at a cut point). Zeros, reused
    from ``cache`` (one tensor per probed output) when given.

    Args:
        spec (Any): A :class:`TensorSpec`, or tuples, lists and dicts of them
            (other objects are returned as they are).
        batch (int): Size of the batch dimensions (``None`` in the specs).
        device (torch.device): Device of the placeholders.
        inject (Tensor, optional): Returned in place of the first
            floating-point spec.
        cache (dict, optional): Zero tensors kept between calls, keyed by
            spec, shape and device; re-zeroed before reuse.

    Returns:
        Any: The structure of ``spec`` with tensors in place of its specs.
    """
    injected = [inject is None]

    def build(s):
        if isinstance(s, TensorSpec):
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


@contextmanager
def stub_prefix(model: nn.Module, record, entry_cut: Optional[str],
                batch: int, z: Optional[Tensor]):
    """Within the context, the modules of ``model`` that finish before
    ``entry_cut`` return placeholders and ``entry_cut`` returns ``z``.

    A module is stubbed when all its calls end by ``entry_cut``'s and the
    module that called it is not stubbed itself; modules also called after
    the cut run normally (on placeholders, their results unused).

    Args:
        model (nn.Module): The partitioned classifier.
        record (CallRecord): Its probe record.
        entry_cut (str, optional): The cut point before the stage's first
            block; ``None`` stubs nothing.
        batch (int): Batch size of the placeholders.
        z (Tensor, optional): The received feature that ``entry_cut``
            returns (needed when ``entry_cut`` is given; placeholders go to
            its device).

    Yields:
        None: The modules' own ``forward`` is restored on exit.
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
            return materialize(spec, batch, device, z if _name == entry_cut else None,
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


def model_input(record, batch: int, device) -> Tensor:
    """A zero-memory stand-in for the network input of a later stage.

    Args:
        record (CallRecord): The probe record (for the input shape).
        batch (int): Batch size.
        device (torch.device): Device of the stand-in.

    Returns:
        Tensor: A zero scalar expanded to ``(batch, *input_shape)``.
    """
    return torch.zeros((), device=device).expand(batch, *record.input_shape)


@contextmanager
def exit_at(model: nn.Module, cut: Optional[str]):
    """Stop the forward pass right after ``cut`` (after its other hooks).

    Within the context, ``cut``'s forward hook raises :class:`StageDone`
    with its output.

    Args:
        model (nn.Module): The model.
        cut (str, optional): A module name of ``model``; ``None`` stops
            nothing.

    Yields:
        None: The hook is removed on exit.
    """
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


def check_segments(model: nn.Module, partition: Partition, record,
                   stages: List[List[int]], atol: float = 1e-5) -> None:
    """Replay each stage after the first from the cut outputs of a plain
    forward pass; raise if a stage does not reproduce its output exactly.

    The passes run in eval mode on ``PROBE_BATCH`` random inputs, without
    gradients or touching the global random streams.

    Args:
        model (nn.Module): The partitioned classifier.
        partition (Partition): Its partition.
        record (CallRecord): Its probe record.
        stages (list[list[int]]): The blocks of each stage.
        atol (float): Absolute tolerance, relative to the largest magnitude
            of the expected output (at least 1); ``rtol`` is 1e-4.
            Defaults to 1e-5.

    Raises:
        ValueError: A stage's output differs from the plain pass's in shape
            or values.
    """
    cuts = partition.cuts
    outputs: Dict[str, Tensor] = {}
    handles = [m.register_forward_hook(
        lambda mod, a, out, _n=n: outputs.__setitem__(_n, main_tensor(out).detach()))
        for n, m in model.named_modules() if n in set(cuts)]
    with probing(model) as device:
        try:
            with torch.no_grad():
                torch.manual_seed(0)
                x = torch.randn(PROBE_BATCH, *record.input_shape, device=device)
                final = main_tensor(model(x, mode='tensor')).detach()
        finally:
            for h in handles:
                h.remove()
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


def check_followed(model: nn.Module, blocks: List[List[int]]) -> None:
    """Check that every local head that follows later blocks' weights
    (``ENNMomentumLocalHead``) is in the stage that trains them: it reads
    them in place, and another stage's weights live in another process.

    Args:
        model (ENNLocalClassifier): The model.
        blocks (list[list[int]]): The blocks of each stage.

    Raises:
        ValueError: A head follows a block that another stage trains.
    """
    stage_of = {b: s for s, g in enumerate(blocks) for b in g}
    for b in range(model.num_blocks - 1):
        away = [o for o in model.momentum_sources(b) if stage_of[o] != stage_of[b]]
        if away:
            raise ValueError(
                f'the local head of {model.local_partition.describe(b)} (stage {stage_of[b]}) '
                f'follows the weights of block {away[0]}, which stage {stage_of[away[0]]} '
                'trains: a momentum head reads the units it averages in place, so they must be '
                'in its own stage. Give an assignment that keeps them together, or another '
                'local head for that block (local_head as a list).')


def run_blocks(model: nn.Module, record, wrappers: List, blocks: List[int], target: Tensor,
               penalty_weight: Optional[float] = None, inputs: Optional[Tensor] = None,
               samples=None, z: Optional[Tensor] = None, grad_sync=None,
               image: Optional[Tensor] = None) -> Tuple[Dict[str, Tensor], Optional[Tensor]]:
    """Train ``blocks`` (contiguous) of ``model`` on one micro-batch.

    Args:
        model (ENNLocalClassifier): The model.
        record (CallRecord): Its probe record.
        wrappers (list[OptimWrapper]): One per block of the model.
        blocks (list[int]): The stage's blocks.
        target (Tensor): Labels or soft scores of the micro-batch.
        penalty_weight (float, optional): As for :class:`LocalStep`.
        inputs (Tensor, optional): The network input (first stage).
        samples (list[DataSample], optional): The data samples (first
            stage).
        z (Tensor, optional): The feature at the cut point before the
            blocks (later stages).
        grad_sync (callable, optional): As for :class:`LocalStep`.
        image (Tensor, optional): The network input, for objectives that
            read it.

    Returns:
        tuple: The logs and, unless the blocks end with the model's own head,
        the feature to hand on (else ``None``).

    Raises:
        RuntimeError: The forward pass never reached the last block's cut
            point.
    """
    cuts = model.local_partition.cuts
    first, final = blocks[0], blocks[-1]
    entry = cuts[first - 1] if first > 0 else None
    exit_cut = cuts[final] if final < len(cuts) else None
    if z is not None:
        inputs = model_input(record, z.size(0), z.device)
        if exit_cut is None:
            samples = [DataSample().set_gt_score(t) if target.dim() > 1
                       else DataSample().set_gt_label(t) for t in target]
    step = LocalStep(model, wrappers, target, penalty_weight=penalty_weight,
                     grad_sync=grad_sync, image=image)
    out = None
    with model.cut_hooks(step.local_update, blocks), \
            stub_prefix(model, record, entry, target.size(0), z), \
            exit_at(model, exit_cut), wrappers[-1].optim_context(model):
        try:
            if exit_cut is None:
                losses = step.final_losses(inputs, samples)
            else:
                model.extract_feat(inputs)
        except StageDone as done:
            out = done.output
    if exit_cut is None:
        return step.final_update(losses), None
    if out is None:
        raise RuntimeError(f'blocks {first}..{final} never reached their last cut point '
                           f'{exit_cut!r}.')
    return step.log_vars, main_tensor(out)
