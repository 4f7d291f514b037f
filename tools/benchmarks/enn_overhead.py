"""Training-step overhead of ENN against the dense model, measured in one run.

    python tools/benchmarks/enn_overhead.py [--settings small realistic]
        [--models resnet50 vit-s] [--iters 3] [--threads 2]

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
  = 10), amortized: ``enn`` plus a tenth of the measured extra cost of
  retraction / penalty (``retract - enn``, ``penalty - enn``).

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

SETTINGS = {'small': (8, 112), 'realistic': (32, 224)}
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
}
ENN_MODES = {
    'materialize': dict(ortho='none', compute='materialize'),
    'enn': dict(ortho='none'),
    'penalty': dict(ortho='penalty', gamma=1e-5),
    'retract': dict(ortho='retract', retract_interval=1),
}


def build(name, size, enn=None):
    cfg = copy.deepcopy(MODELS_CFG[name])
    if 'img_size' in cfg['backbone']:
        cfg['backbone']['img_size'] = size
    if enn is not None:
        cfg = dict(type='ENNModel', model=cfg, enn=enn)
    torch.manual_seed(0)
    model = MODELS.build(cfg)
    model.init_weights()
    return model.train()


def step_fn(model, batch, size):
    x = torch.randn(batch, 3, size, size)
    samples = [DataSample().set_gt_label(i % 1000) for i in range(batch)]
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.0)

    def step():
        start = time.perf_counter()
        losses = model.loss(x, samples)
        sum(v for k, v in losses.items() if 'loss' in k).backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return time.perf_counter() - start

    return step


def measure(name, setting, iters):
    batch, size = SETTINGS[setting]
    variants = {'dense': build(name, size)}
    variants.update({mode: build(name, size, enn) for mode, enn in ENN_MODES.items()})
    steps = {k: step_fn(m, batch, size) for k, m in variants.items()}
    for step in steps.values():  # warm-up: allocator, kernels, Adam state
        step()
    times = {k: [] for k in steps}
    for _ in range(iters):  # interleaved rounds
        for k, step in steps.items():
            times[k].append(step())
    med = {k: statistics.median(v) for k, v in times.items()}
    records = [dict(model=name, setting=setting, mode=mode, ratio=round(med[mode] / med['dense'], 3),
                    seconds=round(med[mode], 3), dense_seconds=round(med['dense'], 3))
               for mode in ENN_MODES]
    for mode in ('retract', 'penalty'):
        amortized = med['enn'] + (med[mode] - med['enn']) / 10
        records.append(dict(model=name, setting=setting, mode=f'{mode}@10',
                            ratio=round(amortized / med['dense'], 3), seconds=round(amortized, 3),
                            dense_seconds=round(med['dense'], 3), derived=True))

    dense_params = sum(p.numel() for p in variants['dense'].parameters())
    enn_params = sum(p.numel() for p in variants['penalty'].parameters())
    exported = enn_mm.export_dense(copy.deepcopy(variants['penalty'])).eval()
    dense = variants['dense'].eval()
    x = torch.randn(batch, 3, size, size)
    with torch.no_grad():
        for m in (dense, exported):
            m(x, mode='tensor')
        inf = {k: [] for k in ('dense', 'exported')}
        for _ in range(iters):
            for k, m in (('dense', dense), ('exported', exported)):
                t = time.perf_counter()
                m(x, mode='tensor')
                inf[k].append(time.perf_counter() - t)
    records.append(dict(model=name, setting=setting, mode='exported-inference',
                        ratio=round(statistics.median(inf['exported']) /
                                    statistics.median(inf['dense']), 3),
                        param_ratio=round(enn_params / dense_params, 3)))
    return records


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--models', nargs='+', default=list(MODELS_CFG), choices=list(MODELS_CFG))
    parser.add_argument('--settings', nargs='+', default=list(SETTINGS), choices=list(SETTINGS))
    parser.add_argument('--iters', type=int, default=3)
    parser.add_argument('--threads', type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    MMLogger.get_instance('enn_overhead', log_level='WARNING')  # stdout is for the JSON
    init_default_scope('mmpretrain')
    records = []
    for name in args.models:
        for setting in args.settings:
            records += measure(name, setting, args.iters)
    print(json.dumps(records, indent=1))


if __name__ == '__main__':
    main()
