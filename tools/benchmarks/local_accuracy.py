"""Fashion-MNIST top-1 of ENN-ℓ against end-to-end BP, same budget, several seeds.

    python tools/benchmarks/local_accuracy.py [--seeds 0 1 2] [--epochs 8]

Trains each config once per seed with MMPretrain's loop (``tools/train.py``),
evaluates on the 10k test images after the last epoch and prints JSON:
``{name: {"config", "seeds", "top1", "mean", "std"}, "budget": {...}}``.
Defaults compare the demo recipe trained end to end (``configs/enn``) with
ENN-ℓ (``configs/enn_local``: the paper's split and heads) and its dense
ablation; ``local_enn_stage`` (per-stage split, conv heads) and ``bp_dense``
can be added with ``--runs``. ``--epochs`` below 8 shortens the cosine schedule to fit; the
``budget`` entry says whether the run was reduced.
"""
import argparse
import glob
import json
import os
import os.path as osp
import statistics
import subprocess
import sys
import time

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
CONFIGS = {
    'bp_enn': 'configs/enn/resnet18w16_fmnist.py',
    'local_enn': 'configs/enn_local/resnet18w16_fmnist.py',
    'local_enn_stage': 'configs/enn_local/resnet18w16_fmnist_stage.py',
    'local_dense': 'configs/enn_local/resnet18w16_fmnist_dense.py',
    'bp_dense': 'configs/baseline/resnet18w16_fmnist.py',
}
FULL_EPOCHS, FULL_SEEDS = 8, 3


def last_top1(work_dir: str, missing_ok: bool = False):
    """The last ``accuracy/top1`` the Runner logged in ``work_dir``."""
    top1 = None
    for path in sorted(glob.glob(osp.join(work_dir, '*', 'vis_data', 'scalars.json'))):
        with open(path) as f:
            for line in f:
                record = json.loads(line)
                if 'accuracy/top1' in record:
                    top1 = record['accuracy/top1']
    if top1 is None and not missing_ok:
        raise RuntimeError(f'no accuracy/top1 logged in {work_dir}')
    return top1


def train(config: str, seed: int, epochs: int, work_dir: str, threads: int) -> float:
    options = [f'randomness.seed={seed}', f'train_cfg.max_epochs={epochs}',
               f'train_cfg.val_interval={epochs}', 'default_hooks.checkpoint.interval=1000',
               f'param_scheduler.1.end={epochs}']
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads),
               PYTHONPATH=REPO + os.pathsep + os.environ.get('PYTHONPATH', ''))
    cmd = [sys.executable, osp.join(REPO, 'tools/train.py'), osp.join(REPO, config),
           '--work-dir', work_dir, '--cfg-options', *options]
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f'{config} seed {seed} failed:\n{proc.stderr[-3000:]}')
    return last_top1(work_dir)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--seeds', type=int, nargs='+', default=[0, 1, 2])
    parser.add_argument('--epochs', type=int, default=FULL_EPOCHS)
    parser.add_argument('--runs', nargs='+', default=['bp_enn', 'local_enn', 'local_dense'],
                        choices=list(CONFIGS), help='which configs to train')
    parser.add_argument('--threads', type=int, default=2)
    parser.add_argument('--work-dir', default=osp.join(REPO, 'work_dirs', 'local_accuracy'))
    parser.add_argument('--reuse', action='store_true',
                        help='take the accuracy of runs already in --work-dir instead of '
                        'training them again')
    args = parser.parse_args()
    if args.epochs < 2:
        raise SystemExit('--epochs must be at least 2 (one warm-up epoch, then cosine).')

    results = {}
    for name in args.runs:
        top1 = []
        for seed in args.seeds:
            t = time.time()
            work_dir = osp.join(args.work_dir, f'{name}_e{args.epochs}_s{seed}')
            done = last_top1(work_dir, missing_ok=True) if args.reuse else None
            top1.append(done if done is not None else
                        train(CONFIGS[name], seed, args.epochs, work_dir, args.threads))
            print(f'{name} seed {seed}: top-1 {top1[-1]:.2f} ({time.time() - t:.0f} s)',
                  file=sys.stderr)
        results[name] = dict(config=CONFIGS[name], seeds=args.seeds, top1=top1,
                             mean=round(statistics.mean(top1), 2),
                             std=round(statistics.stdev(top1), 2) if len(top1) > 1 else None)
    results['budget'] = dict(epochs=args.epochs, seeds=len(args.seeds), threads=args.threads,
                             reduced=args.epochs < FULL_EPOCHS or len(args.seeds) < FULL_SEEDS)
    print(json.dumps(results, indent=1))


if __name__ == '__main__':
    main()
