"""Peak training memory and step time of ENN-ℓ against end-to-end BP.

    python tools/benchmarks/local_memory.py [--threads 1] [--enn] [--num-classes 1000 10]

ResNet-50 (MMPretrain's ``ResNet(depth=50)``, global pooling, linear head),
batch 16 at 112 px, SGD with momentum. Every variant runs in a fresh process
with ``MALLOC_MMAP_THRESHOLD_=131072`` (large buffers are mmap-ed and go back
to the OS when freed, so the resident set follows the live tensors) and is
measured on its first training step:

- ``memory_ratio``: peak RSS growth during the step (activations, gradients,
  optimizer state, workspace; the model's own weights excluded), ENN-ℓ / BP;
- ``rss_ratio``: whole-process peak RSS (interpreter, libraries and weights
  included), ENN-ℓ / BP;
- ``saved_activation_ratio``: peak bytes of tensors saved for backward
  (:class:`enn_mm.local.SavedTensorMeter`), ENN-ℓ / BP;
- ``time_ratio``: median time of the next ``--steps`` steps, ENN-ℓ / BP.

Each repeat (``--repeats``, default 3) runs BP and every variant once, each
in a fresh process; each ratio is the median of the per-repeat pairs, with
its range beside it (``*_range``).

Splits: ``stage`` (one block per stage, K = 4) and ``block`` (the paper's:
stem, 16 bottlenecks, head, K = 18); local heads from ``--heads`` (default
``pool_linear``: ``ENNPoolLinearLocalHead``; also ``conv_aux``:
``ENNConvAuxLocalHead``, ``aux_net``: ``ENNAuxNetLocalHead``,
``aux_net_recon``: the same with InfoPro's reconstruction decoder,
``ENNReconstructionObjective``, ``downstream``: ``ENNDownstreamLocalHead``,
AugLocal copies, depth 2),
and with ``--frozen-heads`` also frozen pooled ones (no gradients, no
optimizer state). Prints a JSON list of ``{"model", "split", "local_heads",
"memory_ratio", "rss_ratio", "time_ratio", ...}`` on stdout; the absolute
numbers are in the extra keys.
"""
import argparse
import gc
import itertools
import json
import os
import statistics
import subprocess
import sys
import time

from _common import machine_info, paired_ratio, status_kb

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

SPLITS = {'bp': [], 'stage': 'resnet_stage', 'block': 'resnet_block'}
INFOPRO = [dict(type='ENNClassificationObjective', weight=dict(start=0.5, end=1.0)),
           dict(type='ENNReconstructionObjective', weight=dict(start=1.0, end=0.0))]
HEADS = {  # --heads choice (the label in the results) -> (local_head, local_objectives)
    'pool_linear': (dict(type='ENNPoolLinearLocalHead'), None),
    'pool_linear_frozen': (dict(type='ENNPoolLinearLocalHead', frozen=True), None),
    'conv_aux': (dict(type='ENNConvAuxLocalHead', stride=2), None),
    'aux_net': (dict(type='ENNAuxNetLocalHead'), None),
    'aux_net_recon': (dict(type='ENNAuxNetLocalHead'), INFOPRO),
    'downstream': (dict(type='ENNDownstreamLocalHead', depth=2), None),
}


def worker(args) -> dict:
    import torch
    torch.set_num_threads(args.threads)
    from mmengine.optim import OptimWrapper, build_optim_wrapper
    from mmengine.registry import init_default_scope
    from mmpretrain.registry import MODELS
    from mmpretrain.structures import DataSample

    import enn_mm  # noqa: F401
    import enn_mm.local  # noqa: F401
    from enn_mm.local import SavedTensorMeter

    init_default_scope('mmpretrain')
    torch.manual_seed(0)
    depth = {'resnet50': 50, 'resnet18': 18}[args.arch]
    model = dict(type='ImageClassifier', backbone=dict(type='ResNet', depth=depth),
                 neck=dict(type='GlobalAveragePooling'),
                 head=dict(type='LinearClsHead', num_classes=args.num_classes,
                           in_channels=2048 if depth == 50 else 512))
    if args.enn:
        model = dict(type='ENNModel', model=model, enn=dict(ortho='penalty', gamma=1e-5))
    optimizer = dict(type='SGD', lr=0.01, momentum=0.9, weight_decay=1e-4)
    if args.split == 'bp':
        model = MODELS.build(model)
        params = [p for p in model.parameters() if p.requires_grad]
        optim = OptimWrapper(torch.optim.SGD(params, **{k: v for k, v in optimizer.items()
                                                        if k != 'type'}))
    else:
        head, objectives = HEADS[args.head]
        model = MODELS.build(dict(type='ENNLocalClassifier', model=model, cuts=SPLITS[args.split],
                                  input_shape=(3, args.size, args.size), local_head=head,
                                  local_objectives=objectives, max_head_params=2**28))
        optim = build_optim_wrapper(model, dict(constructor='ENNLocalOptimWrapperConstructor',
                                                optimizer=optimizer))
    model.train()
    g = torch.Generator().manual_seed(0)
    data = dict(inputs=torch.randint(0, 256, (args.batch, 3, args.size, args.size), generator=g,
                                     dtype=torch.uint8),
                data_samples=[DataSample().set_gt_label(i % args.num_classes)
                              for i in range(args.batch)])

    gc.collect()
    rss_before = status_kb('VmRSS')
    with open('/proc/self/clear_refs', 'w') as f:  # restart the peak (VmHWM) here
        f.write('5')
    with SavedTensorMeter() as meter:
        model.train_step(data, optim)
    peak = status_kb('VmHWM')
    times = []
    for _ in range(args.steps):
        t = time.perf_counter()
        model.train_step(data, optim)
        times.append(time.perf_counter() - t)
    return dict(blocks=getattr(model, 'num_blocks', 1), rss_before_mb=rss_before / 1024,
                peak_rss_mb=peak / 1024, step_peak_mb=(peak - rss_before) / 1024,
                saved_peak_mb=meter.peak / 2**20, step_s=statistics.median(times))


def run_variant(args, enn: bool, split: str, num_classes: int, head: str = 'pool_linear') -> dict:
    """One fresh-process measurement."""
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_='131072', OMP_NUM_THREADS=str(args.threads),
               MKL_NUM_THREADS=str(args.threads))
    cmd = [sys.executable, __file__, '--worker', split, '--threads', str(args.threads),
           '--batch', str(args.batch), '--size', str(args.size), '--steps', str(args.steps),
           '--num-classes', str(num_classes), '--head', head, '--arch', args.arch] \
        + (['--enn'] if enn else [])
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f'{split} (enn={enn}) failed:\n{proc.stderr[-3000:]}')
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    print(f'{"enn-" if enn else ""}{args.arch} {split} {head} ({num_classes} classes): {result}',
          file=sys.stderr)
    return result


def paired(samples, bp_samples, key):
    """Median and range of the per-repeat ratios sample / BP sample."""
    return paired_ratio([s[key] for s in samples], [b[key] for b in bp_samples])


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--threads', type=int, default=1)
    parser.add_argument('--arch', default='resnet50', choices=['resnet50', 'resnet18'],
                        help='the network (resnet18: for smoke tests)')
    parser.add_argument('--splits', nargs='+', default=['stage', 'block'],
                        choices=['stage', 'block'])
    parser.add_argument('--batch', type=int, default=16)
    parser.add_argument('--size', type=int, default=112)
    parser.add_argument('--steps', type=int, default=5, help='timed steps after the first')
    parser.add_argument('--num-classes', type=int, nargs='+', default=[1000, 10],
                        help='head sizes to measure (the local heads grow with it)')
    parser.add_argument('--enn', action='store_true', help='also measure the ENN ResNet-50')
    parser.add_argument('--enn-only', action='store_true', help='only the ENN ResNet-50')
    parser.add_argument('--repeats', type=int, default=3,
                        help='fresh processes per variant, each paired with a fresh BP run; '
                        'ratios are the median of the pairs, with their range')
    parser.add_argument('--frozen-heads', action='store_true',
                        help='also measure the splits with frozen pooled heads '
                        '(ENNPoolLinearLocalHead, frozen=True: no gradients, no optimizer '
                        'state)')
    parser.add_argument('--heads', nargs='+', default=['pool_linear'], choices=list(HEADS),
                        help='local heads to measure')
    parser.add_argument('--head', default='pool_linear', choices=list(HEADS),
                        help=argparse.SUPPRESS)
    parser.add_argument('--worker', choices=list(SPLITS), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        args.split, args.num_classes = args.worker, args.num_classes[0]
        print(json.dumps(worker(args)))
        return

    records = []
    models = [True] if args.enn_only else [False, True] if args.enn else [False]
    names = list(args.heads) + (['pool_linear_frozen'] if args.frozen_heads else [])
    for enn, num_classes in itertools.product(models, args.num_classes):
        variants = list(itertools.product(names, args.splits))
        bp, samples = [], {v: [] for v in variants}
        for _ in range(args.repeats):  # BP and each variant once per repeat: paired
            bp.append(run_variant(args, enn, 'bp', num_classes))
            for head, split in variants:
                samples[head, split].append(run_variant(args, enn, split, num_classes, head))
        med = lambda rows, k: statistics.median(r[k] for r in rows)  # noqa: E731
        for (head, split), rows in samples.items():
            rec = dict(model=('enn-' if enn else '') + args.arch, split=split,
                       local_heads=head.replace('_frozen', ' (frozen)'))
            for name, key in (('memory_ratio', 'step_peak_mb'), ('rss_ratio', 'peak_rss_mb'),
                              ('time_ratio', 'step_s'),
                              ('saved_activation_ratio', 'saved_peak_mb')):
                rec[name], rec[name + '_range'] = paired(rows, bp, key)
            rec.update(blocks=rows[0]['blocks'], step_peak_mb=round(med(rows, 'step_peak_mb'), 1),
                       bp_step_peak_mb=round(med(bp, 'step_peak_mb'), 1),
                       peak_rss_mb=round(med(rows, 'peak_rss_mb'), 1),
                       bp_peak_rss_mb=round(med(bp, 'peak_rss_mb'), 1),
                       step_s=round(med(rows, 'step_s'), 3), bp_step_s=round(med(bp, 'step_s'), 3),
                       batch=args.batch, size=args.size, num_classes=num_classes,
                       threads=args.threads, samples=args.repeats,
                       paired_samples={key: [[round(r[key], 4), round(b[key], 4)]
                                             for r, b in zip(rows, bp)]
                                       for key in ('step_peak_mb', 'peak_rss_mb', 'step_s',
                                                   'saved_peak_mb')})
            rec['machine'] = machine_info()
            records.append(rec)
    print(json.dumps(records, indent=1))


if __name__ == '__main__':
    main()
