"""Training-step overhead of ENN against the dense model, measured in one run.

    python tools/benchmarks/enn_overhead.py [--settings small realistic]
        [--models resnet50 vit-s] [--iters 3] [--threads 2]
    python tools/benchmarks/enn_overhead.py --device cuda --amp bf16 \
        --settings gpu --models resnet50 vit-b --measure-intervals   # on a GPU

For each model and setting it times a full training step (forward through
MMPretrain's ``loss``, backward, AdamW step) of the dense model and of its ENN
conversion in each ortho mode, interleaving the variants round by round so
machine drift hits all of them alike, and prints a JSON list of records
``{"model", "setting", "mode", "ratio"}`` (median ENN step / median dense
step). Modes:

- ``materialize``: ENN with no orthonormality term, every layer building
  W = Q·diag(λ)·Pᵀ on each forward (``compute='materialize'``);
- ``enn``: the same with the default ``compute='auto'`` (each layer builds W
  or applies the factors, whichever costs less at this batch and size);
- ``penalty``: the paper's penalty in the loss every step (``auto``);
- ``retract``: QR retraction after every step (``auto``);
- ``retract@10`` / ``penalty@10`` (``retract_interval`` / ``penalty_interval``
  = 10): without ``--measure-intervals``, amortized (``derived: true``):
  ``enn`` plus a tenth of the measured extra cost of retraction / penalty;
  with it, measured: each timed sample is the mean step over 10 consecutive
  steps of a model built with that interval.

``--device cuda`` times on the GPU (synchronized), ``--amp fp16|bf16`` runs
the forward under autocast as mmengine's ``AmpOptimWrapper`` does (with a
gradient scaler for fp16).

Also reported per model: parameter ratio (ENN/dense; AdamW state and
gradients scale with it) and, for the exported model, the inference ratio.
"""
import argparse
import copy
import json
import statistics
import time

import torch
from mmengine.logging import MMLogger
from mmengine.registry import init_default_scope

import enn_mm
from mmpretrain.registry import MODELS
from mmpretrain.structures import DataSample

SETTINGS = {'small': (8, 112), 'realistic': (32, 224), 'gpu': (64, 224), 'tiny': (2, 32)}
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
    'resnet18': dict(  # for smoke tests
        type='ImageClassifier',
        backbone=dict(type='ResNet', depth=18),
        neck=dict(type='GlobalAveragePooling'),
        head=dict(type='LinearClsHead', num_classes=1000, in_channels=512)),
}
INTERVAL_MODES = {
    'penalty@10': dict(ortho='penalty', gamma=1e-5, penalty_interval=10),
    'retract@10': dict(ortho='retract', retract_interval=10),
}
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


def step_fn(model, batch, size, device='cpu', amp='none', period=1):
    """A timed training step (the mean over ``period`` consecutive steps, the
    Runner's iteration counter advancing as in training)."""
    from mmengine.logging import MessageHub
    device = torch.device(device)
    x = torch.randn(batch, 3, size, size, device=device)
    samples = [DataSample().set_gt_label(i % 1000) for i in range(batch)]
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.0)
    dtype = AMP[amp]
    scaler = torch.amp.GradScaler(device.type) if dtype == torch.float16 else None
    hub, counter = MessageHub.get_current_instance(), [0]

    def one():
        hub.update_info('iter', counter[0])
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


def measure(name, setting, iters, device='cpu', amp='none', intervals=False):
    batch, size = SETTINGS[setting]
    variants = {'dense': build(name, size, device=device)}
    variants.update({mode: build(name, size, enn, device) for mode, enn in ENN_MODES.items()})
    periods = {k: 1 for k in variants}
    if intervals:
        for mode, enn in INTERVAL_MODES.items():
            variants[mode] = build(name, size, enn, device)
            periods[mode] = 10
    steps = {k: step_fn(m, batch, size, device, amp, periods[k]) for k, m in variants.items()}
    for step in steps.values():  # warm-up: allocator, kernels, Adam state
        step()
    times = {k: [] for k in steps}
    for _ in range(iters):  # interleaved rounds
        for k, step in steps.items():
            times[k].append(step())
    med = {k: statistics.median(v) for k, v in times.items()}
    runs = dict(device=device, amp=amp, batch=batch, size=size, iters=iters)
    records = [dict(model=name, setting=setting, mode=mode, ratio=round(med[mode] / med['dense'], 3),
                    ratio_range=[round(min(times[mode]) / max(times['dense']), 3),
                                 round(max(times[mode]) / min(times['dense']), 3)],
                    seconds=round(med[mode], 4), dense_seconds=round(med['dense'], 4),
                    steps_per_sample=periods[mode], **runs)
               for mode in variants if mode != 'dense']
    for mode in ('retract', 'penalty') if not intervals else ():
        amortized = med['enn'] + (med[mode] - med['enn']) / 10
        records.append(dict(model=name, setting=setting, mode=f'{mode}@10',
                            ratio=round(amortized / med['dense'], 3), seconds=round(amortized, 3),
                            dense_seconds=round(med['dense'], 3), derived=True))

    dense_params = sum(p.numel() for p in variants['dense'].parameters())
    enn_params = sum(p.numel() for p in variants['penalty'].parameters())
    exported = enn_mm.export_dense(copy.deepcopy(variants['penalty'])).eval()
    dense = variants['dense'].eval()
    x = torch.randn(batch, 3, size, size, device=device)
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
    records.append(dict(model=name, setting=setting, mode='exported-inference',
                        ratio=round(statistics.median(inf['exported']) /
                                    statistics.median(inf['dense']), 3),
                        param_ratio=round(enn_params / dense_params, 3), **runs))
    return records


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--models', nargs='+', default=list(MODELS_CFG), choices=list(MODELS_CFG))
    parser.add_argument('--settings', nargs='+', default=list(SETTINGS), choices=list(SETTINGS))
    parser.add_argument('--iters', type=int, default=3)
    parser.add_argument('--threads', type=int, default=2)
    parser.add_argument('--device', default='cpu', choices=['cpu', 'cuda'])
    parser.add_argument('--amp', default='none', choices=list(AMP))
    parser.add_argument('--measure-intervals', action='store_true',
                        help='measure penalty@10 / retract@10 (10-step samples) instead of '
                        'deriving them')
    args = parser.parse_args()
    if args.device == 'cuda' and not torch.cuda.is_available():
        raise SystemExit('--device cuda: torch sees no CUDA GPU.')
    torch.set_num_threads(args.threads)
    MMLogger.get_instance('enn_overhead', log_level='WARNING')  # stdout is for the JSON
    init_default_scope('mmpretrain')
    records = []
    for name in args.models:
        for setting in args.settings:
            records += measure(name, setting, args.iters, args.device, args.amp,
                               args.measure_intervals)
    print(json.dumps(records, indent=1))


if __name__ == '__main__':
    main()
