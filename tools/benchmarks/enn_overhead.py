"""Training-step overhead of ENN against the dense model, measured in one run.

    python tools/benchmarks/enn_overhead.py [--settings small realistic]
        [--models resnet50 vit-s] [--iters 3] [--threads 2] [--intervals 10]
    python tools/benchmarks/enn_overhead.py --device cuda --amp bf16 \
        --settings gpu --models resnet50 vit-b   # on a GPU

For each model and setting it times a full training step (forward through
MMPretrain's ``loss``, backward, AdamW step) of the dense model and of its ENN
conversion in each ortho mode, interleaving the variants round by round so
machine drift hits all of them alike, and prints a JSON list of records
``{"model", "setting", "mode", "ratio", "ratio_range"}``: each round gives one
paired ratio (ENN step / dense step of that round); ``ratio`` is their median
over ``--iters`` rounds and ``ratio_range`` their minimum and maximum. Modes:

- ``materialize``: ENN with no orthonormality term, every layer building
  W = Q·diag(λ)·Pᵀ on each forward (``compute='materialize'``);
- ``enn``: the same with the default ``compute='auto'`` (each layer builds W
  or applies the factors, whichever costs less at this batch and size);
- ``penalty``: the paper's penalty in the loss every step (``auto``);
- ``retract``: QR retraction after every step (``auto``);
- ``penalty_probes{k}`` for each k of ``--probes`` (default 1 4 16): the
  penalty every step, estimated from k random probes per basis
  (``penalty_probes=k``: no Gram matrix);
- ``torch_orthogonal`` / ``geotorch`` (``--libraries``): ENN with no ortho
  term whose Q and P are kept exactly orthonormal by
  ``torch.nn.utils.parametrizations.orthogonal`` (its default map: the
  matrix exponential for square bases, Householder otherwise) or by
  ``geotorch.orthogonal`` (PyPI ``geotorch``, skipped if not installed),
  each registered on the layer's own Q and P (a parametrization of the
  parametrization's originals, starting from the same bases;
  ``library_ortho.py``); with ``--step-limit S``, a library whose first
  step, run alone in a child process, takes more than S seconds is not
  timed: its record has ``ratio`` None and ``ratio_at_least`` = S over the
  median dense step (computed);
- ``retract@n`` / ``penalty@n`` for each n of ``--intervals`` (default 10;
  ``retract_interval`` / ``penalty_interval`` = n): measured, each timed
  sample the mean step over n consecutive steps of a model built with that
  interval (so exactly one retraction or penalty step per sample).

``--device cuda`` times on the GPU (synchronized), ``--amp fp16|bf16`` runs
the forward under autocast as mmengine's ``AmpOptimWrapper`` does (with a
gradient scaler for fp16).

Every record also has ``arithmetic_ratio``: the floating-point operations of
one training step of the mode over the dense step's (forward, backward and
the orthonormality term; the optimizer's elementwise update is not counted),
counted by ``torch.utils.flop_counter.FlopCounterMode`` on the same inputs,
with the textbook Householder count ``4·n·r² − 4·r³/3`` for each QR of the
retraction and LAPACK's ``orgqr`` count for a Householder product (which the
counter does not know), averaged over the sample's steps: the ratio the step
would have if time followed arithmetic. It is None (not counted) where the
step runs a matrix exponential (``torch_orthogonal`` on square bases,
``geotorch``), whose cost depends on the matrix's norm.

Also reported per model: parameter ratio (ENN/dense; AdamW state and
gradients scale with it) and, for the exported model, the inference ratio.
"""
import argparse
import copy
import json
import math
import multiprocessing
import statistics
import time

import torch
from mmengine.logging import MMLogger
from mmengine.registry import init_default_scope
from mmpretrain.registry import MODELS
from mmpretrain.structures import DataSample
from torch.utils.flop_counter import FlopCounterMode

import enn_mm

from _common import machine_info, paired_ratio
from library_ortho import keep_orthonormal, library_available

SETTINGS = {'small': (8, 112), 'realistic': (32, 224), 'gpu': (64, 224), 'tiny': (2, 32),
            'fmnist': (128, 28)}  # the demo's batch and size
MODELS_CFG = {
    'resnet50': dict(
        type='ImageClassifier',
        backbone=dict(type='ResNet', depth=50),
        neck=dict(type='GlobalAveragePooling'),
        head=dict(type='LinearClsHead', num_classes=1000, in_channels=2048)),
    'vit-s': dict(
        type='ImageClassifier',
        backbone=dict(type='VisionTransformer', arch='deit-small', img_size=224, patch_size=16),
        neck=None,
        head=dict(type='VisionTransformerClsHead', num_classes=1000, in_channels=384)),
    'vit-b': dict(
        type='ImageClassifier',
        backbone=dict(type='VisionTransformer', arch='b', img_size=224, patch_size=16),
        neck=None,
        head=dict(type='VisionTransformerClsHead', num_classes=1000, in_channels=768)),
    'resnet18w16': dict(  # the demo network (configs/_base_/models/resnet18w16_cifar.py), 1 channel
        type='ImageClassifier',
        backbone=dict(type='ResNet_CIFAR', depth=18, in_channels=1, stem_channels=16,
                      base_channels=16, num_stages=3, strides=(1, 2, 2), dilations=(1, 1, 1),
                      out_indices=(2, )),
        neck=dict(type='GlobalAveragePooling'),
        head=dict(type='LinearClsHead', num_classes=10, in_channels=64)),
    'resnet18': dict(  # for smoke tests
        type='ImageClassifier',
        backbone=dict(type='ResNet', depth=18),
        neck=dict(type='GlobalAveragePooling'),
        head=dict(type='LinearClsHead', num_classes=1000, in_channels=512)),
}


def probe_modes(probes):
    """``penalty_probes{k}`` for each probe count k."""
    return {f'penalty_probes{k}': dict(ortho='penalty', gamma=1e-5, penalty_probes=k)
            for k in probes}


def _qr_flops(a, *args, out_shape=None, **kwargs):
    """Householder QR of ``(..., n, r)`` with Q formed: ``4·n·r² − 4·r³/3``
    floating-point operations per matrix."""
    *batch, n, r = a
    return math.prod(batch) * (4 * n * r * r - 4 * r**3 // 3)


def _householder_flops(a, tau, *args, out_shape=None, **kwargs):
    """Q's first ``n`` columns from ``k`` reflectors of an ``m × n`` matrix
    (LAPACK ``orgqr``): ``4mnk − 2(m + n)k² + 4k³/3``."""
    *batch, m, n = a
    k = tau[-1]
    return math.prod(batch) * (4 * m * n * k - 2 * (m + n) * k * k + 4 * k**3 // 3)


def counted_flops(step, period: int = 1):
    """Floating-point operations per training step of ``step`` (a
    :func:`step_fn` step of ``period`` steps), counted by
    ``FlopCounterMode`` (QR by :func:`_qr_flops`, the Householder product by
    :func:`_householder_flops`); None if the step ran a matrix exponential,
    whose cost depends on its norm and has no count here."""
    uncounted = []

    def matrix_exp(*args, **kwargs):
        uncounted.append('linalg_matrix_exp')
        return 0

    mapping = {torch.ops.aten.linalg_qr: _qr_flops,
               torch.ops.aten.linalg_householder_product: _householder_flops,
               torch.ops.aten.linalg_matrix_exp: matrix_exp}
    with FlopCounterMode(display=False, custom_mapping=mapping) as c:
        step()
    return None if uncounted else c.get_total_flops() / period


def interval_modes(intervals):
    """``penalty@n`` / ``retract@n`` for each interval n."""
    modes = {}
    for n in intervals:
        modes[f'penalty@{n}'] = dict(ortho='penalty', gamma=1e-5, penalty_interval=n)
        modes[f'retract@{n}'] = dict(ortho='retract', retract_interval=n)
    return modes


ENN_MODES = {
    'materialize': dict(ortho='none', compute='materialize'),
    'enn': dict(ortho='none'),
    'penalty': dict(ortho='penalty', gamma=1e-5),
    'retract': dict(ortho='retract', retract_interval=1),
}


def build(name, size, enn=None, device='cpu'):
    cfg = copy.deepcopy(MODELS_CFG[name])
    if 'img_size' in cfg['backbone']:
        cfg['backbone']['img_size'] = size
    if enn is not None:
        cfg = dict(type='ENNModel', model=cfg, enn=enn)
    torch.manual_seed(0)
    model = MODELS.build(cfg)
    model.init_weights()
    return model.to(device).train()


AMP = {'none': None, 'fp16': torch.float16, 'bf16': torch.bfloat16}


def channels(name):
    return MODELS_CFG[name]['backbone'].get('in_channels', 3)


def step_fn(model, batch, size, device='cpu', amp='none', period=1, in_channels=3):
    """A timed training step (the mean over ``period`` consecutive steps, the
    step index advancing as in training): a plain PyTorch loop, with the
    model's ENN step set and its retraction on the optimizer, as
    ``ENNOptimWrapper`` does in the Runner."""
    device = torch.device(device)
    x = torch.randn(batch, in_channels, size, size, device=device)
    num_classes = model.head.num_classes if hasattr(model, 'head') else 10
    samples = [DataSample().set_gt_label(i % num_classes) for i in range(batch)]
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.0)
    dtype = AMP[amp]
    scaler = torch.amp.GradScaler(device.type) if dtype == torch.float16 else None
    enn_mm.Retraction(opt, model)  # (a no-op for models that do not retract)
    counter = [0]

    def one():
        if hasattr(model, 'enn_options'):
            model.enn_step = counter[0]
        counter[0] += 1
        with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            losses = model.loss(x, samples)
        loss = sum(v for k, v in losses.items() if 'loss' in k)
        if scaler is not None:
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
        else:
            loss.backward()
            opt.step()
        opt.zero_grad(set_to_none=True)

    def step():
        if device.type == 'cuda':
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        for _ in range(period):
            one()
        if device.type == 'cuda':
            torch.cuda.synchronize(device)
        return (time.perf_counter() - start) / period

    return step


def paired(times, mode, base='dense'):
    """Median and range of the per-round ratios ``times[mode][i] / times[base][i]``."""
    return paired_ratio(times[mode], times[base])  # round i with round i


def first_step_within(step, limit: float):
    """Run ``step`` once in a forked child process; its seconds, or None if
    it did not finish within ``limit`` seconds (the child is then killed)."""
    ctx = multiprocessing.get_context('fork')
    queue = ctx.Queue()
    child = ctx.Process(target=lambda: queue.put(step()))
    child.start()
    child.join(limit)
    if child.is_alive():
        child.kill()
        child.join()
        return None
    return queue.get()


def measure(name, setting, iters, device='cpu', amp='none', intervals=(), probes=(),
            libraries=(), step_limit=0.0):
    batch, size = SETTINGS[setting]
    variants = {'dense': build(name, size, device=device)}
    variants.update({mode: build(name, size, enn, device) for mode, enn in ENN_MODES.items()})
    variants.update({mode: build(name, size, enn, device)
                     for mode, enn in probe_modes(probes).items()})
    too_slow = []
    for library in libraries:
        if library_available(library):
            model = build(name, size, dict(ortho='none'), device)
            keep_orthonormal(model, library)
            if step_limit and first_step_within(
                    step_fn(model, batch, size, device, amp, 1, channels(name)),
                    step_limit) is None:
                too_slow.append(library)  # not timed in the rounds: a lower bound instead
                continue
            variants[library] = model
    periods = {k: 1 for k in variants}
    for mode, enn in interval_modes(intervals).items():
        variants[mode] = build(name, size, enn, device)
        periods[mode] = int(mode.split('@')[1])  # one sample = the mean over a whole period
    steps = {k: step_fn(m, batch, size, device, amp, periods[k], channels(name))
             for k, m in variants.items()}
    for step in steps.values():  # warm-up: allocator, kernels, Adam state
        step()
    flops = {k: counted_flops(step, periods[k]) for k, step in steps.items()}
    times = {k: [] for k in steps}
    for _ in range(iters):  # interleaved rounds: each round's ratios are paired
        for k, step in steps.items():
            times[k].append(step())
    med = {k: statistics.median(v) for k, v in times.items()}
    runs = dict(device=device, amp=amp, batch=batch, size=size, iters=iters)
    records = []
    for mode in variants:
        if mode == 'dense':
            continue
        ratio, ratio_range = paired(times, mode)
        records.append(dict(model=name, setting=setting, mode=mode, ratio=ratio,
                            ratio_range=ratio_range,
                            # None: a matrix exponential ran (no count for it)
                            arithmetic_ratio=(round(flops[mode] / flops['dense'], 3)
                                              if flops[mode] is not None else None),
                            flops=int(flops[mode]) if flops[mode] is not None else None,
                            dense_flops=int(flops['dense']),
                            seconds=round(med[mode], 4),
                            dense_seconds=round(med['dense'], 4),
                            samples=[round(t, 6) for t in times[mode]],
                            dense_samples=[round(t, 6) for t in times['dense']],
                            steps_per_sample=periods[mode], **runs))

    for library in too_slow:
        records.append(dict(model=name, setting=setting, mode=library, ratio=None,
                            ratio_range=None, arithmetic_ratio=None, step_over_s=step_limit,
                            ratio_at_least=round(step_limit / med['dense'], 1),
                            dense_seconds=round(med['dense'], 4),
                            note='one training step did not finish within step_over_s '
                                 'seconds (run alone, in a child process); ratio_at_least: '
                                 'that limit over the median dense step (computed)', **runs))

    dense_params = sum(p.numel() for p in variants['dense'].parameters())
    enn_params = sum(p.numel() for p in variants['penalty'].parameters())
    exported = enn_mm.export_dense(copy.deepcopy(variants['penalty'])).eval()
    dense = variants['dense'].eval()
    x = torch.randn(batch, channels(name), size, size, device=device)
    dtype = AMP[amp]

    def infer(m):
        if device == 'cuda':
            torch.cuda.synchronize()
        t = time.perf_counter()
        with torch.autocast(torch.device(device).type, dtype=dtype, enabled=dtype is not None):
            m(x, mode='tensor')
        if device == 'cuda':
            torch.cuda.synchronize()
        return time.perf_counter() - t

    with torch.no_grad():
        for m in (dense, exported):
            infer(m)
        inf = {k: [] for k in ('dense', 'exported')}
        for _ in range(iters):
            for k, m in (('dense', dense), ('exported', exported)):
                inf[k].append(infer(m))
    ratio, ratio_range = paired(inf, 'exported')
    with torch.no_grad():
        inf_flops = [counted_flops(lambda m=m: infer(m)) for m in (dense, exported)]
    records.append(dict(model=name, setting=setting, mode='exported-inference', ratio=ratio,
                        ratio_range=ratio_range,
                        arithmetic_ratio=round(inf_flops[1] / inf_flops[0], 3),
                        param_ratio=round(enn_params / dense_params, 3),
                        **runs))
    return records


def parse_args(argv=None):
    """The command line (``argv``: the arguments, default ``sys.argv``)."""
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--models', nargs='+', default=list(MODELS_CFG), choices=list(MODELS_CFG))
    parser.add_argument('--settings', nargs='+', default=list(SETTINGS), choices=list(SETTINGS))
    parser.add_argument('--iters', type=int, default=3,
                        help='paired rounds (every variant timed once per round)')
    parser.add_argument('--threads', type=int, default=2)
    parser.add_argument('--device', default='cpu', choices=['cpu', 'cuda'])
    parser.add_argument('--amp', default='none', choices=list(AMP))
    parser.add_argument('--intervals', type=int, nargs='*', default=[10],
                        help='penalty_interval / retract_interval values to measure as '
                        'penalty@n / retract@n (each sample the mean over n steps)')
    parser.add_argument('--probes', type=int, nargs='*', default=[1, 4, 16],
                        help='penalty_probes values to measure as penalty_probes{k}')
    parser.add_argument('--libraries', nargs='*', default=[],
                        choices=['torch_orthogonal', 'geotorch'],
                        help='bases kept orthonormal by these libraries instead (opt in: their '
                        'per-step matrix exponentials make a ResNet-50 step take minutes)')
    parser.add_argument('--step-limit', type=float, default=0.0,
                        help='seconds: a library variant whose first step (run alone in a child '
                        'process) takes longer is not timed in the rounds; its record gives '
                        'the lower bound ratio_at_least instead (0: no limit)')
    return parser.parse_args(argv)


def main():
    args = parse_args()
    if args.device == 'cuda' and not torch.cuda.is_available():
        raise SystemExit('--device cuda: torch sees no CUDA GPU.')
    torch.set_num_threads(args.threads)
    MMLogger.get_instance('enn_overhead', log_level='WARNING')  # stdout is for the JSON
    init_default_scope('mmpretrain')
    records, machine = [], machine_info()
    for name in args.models:
        for setting in args.settings:
            records += measure(name, setting, args.iters, args.device, args.amp,
                               args.intervals, args.probes, args.libraries, args.step_limit)
    for rec in records:
        rec['machine'] = machine
    print(json.dumps(records, indent=1))


if __name__ == '__main__':
    main()
