"""Orthogonality error over training: the paper's penalty against QR retraction.

    python tools/benchmarks/orthogonality.py [--epochs 2] [--threads 1] \
        [--out docs/results/orthogonality.json] [--plot docs/results/orthogonality.png]

Trains the demo recipe (Fashion-MNIST, ``configs/enn/``) once per
orthonormality mode with MMPretrain's loop and reads what
``ENNDiagnosticsHook`` logged every ``--log-interval`` iterations (``enn/ortho_err_max``:
max ``|BᵀB − I|`` over every basis, and the mean) from the run's
``vis_data/scalars.json``. Modes: the paper's penalty
(``resnet18w16_fmnist_penalty.py``), retraction after every step
(``resnet18w16_fmnist_retract.py``) and the default, every 10th step
(``resnet18w16_fmnist.py``). ``--epochs`` shortens the cosine schedule to
fit. Prints (and writes to ``--out``) one JSON object per mode with the logged
series, its final value, and the last epoch's test top-1.
"""
import argparse
import glob
import json
import os
import os.path as osp
import subprocess
import sys

from _common import machine_info

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
MODES = {
    'penalty': 'configs/enn/resnet18w16_fmnist_penalty.py',
    'retract@1': 'configs/enn/resnet18w16_fmnist_retract.py',
    'retract@10': 'configs/enn/resnet18w16_fmnist.py',
}


def train(config: str, work_dir: str, epochs: int, threads: int, log_interval: int) -> dict:
    options = [f'train_cfg.max_epochs={epochs}', f'train_cfg.val_interval={epochs}',
               f'param_scheduler.1.end={epochs}', 'randomness.seed=0',
               f'custom_hooks.0.interval={log_interval}']
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    with open(osp.join(work_dir, 'train.log'), 'w') as log:
        proc = subprocess.run([sys.executable, osp.join(REPO, 'tools', 'train.py'), config,
                               '--work-dir', work_dir, '--cfg-options', *options],
                              cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
    if proc.returncode:
        raise SystemExit(f'training {config} failed: see {work_dir}/train.log')
    return parse(config, work_dir, epochs)


def parse(config: str, work_dir: str, epochs: int) -> dict:
    """The logged series of the (last) finished run in ``work_dir``."""
    found = sorted(glob.glob(osp.join(work_dir, '*', 'vis_data', 'scalars.json')))
    if not found:
        raise FileNotFoundError(f'no run in {work_dir}')
    scalars = found[-1]
    series, top1 = dict(iter=[], max=[], mean=[]), None
    with open(scalars) as f:
        for line in f:
            row = json.loads(line)
            if 'enn/ortho_err_max' in row:
                series['iter'].append(row['step'])
                series['max'].append(row['enn/ortho_err_max'])
                series['mean'].append(row['enn/ortho_err_mean'])
            if 'accuracy/top1' in row:
                top1 = row['accuracy/top1']
    if not series['iter']:
        raise SystemExit(f'{scalars}: ENNDiagnosticsHook logged no orthogonality error')
    if top1 is None:
        raise FileNotFoundError(f'{scalars}: the run did not finish (no test top-1)')
    return dict(config=config, epochs=epochs, ortho_err_max=series['max'],
                ortho_err_mean=series['mean'], iters=series['iter'],
                log_interval=series['iter'][1] - series['iter'][0] if len(series['iter']) > 1
                else None, final_ortho_err_max=series['max'][-1], test_top1=top1)


def plot(results: dict, path: str):
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(6, 3.6), dpi=120)
    for mode, r in results.items():
        ax.plot(r['iters'], r['ortho_err_max'], marker='.', label=mode)
    ax.set_yscale('log')
    ax.set_xlabel('iteration')
    ax.set_ylabel('max |BᵀB − I| over all bases')
    ax.set_title('Orthogonality error over training (demo recipe)', fontsize=8)
    ax.grid(True, which='both', alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--epochs', type=int, default=2)
    parser.add_argument('--threads', type=int, default=1)
    parser.add_argument('--modes', nargs='+', default=list(MODES), choices=list(MODES))
    parser.add_argument('--work-dir', default=osp.join(REPO, 'work_dirs', 'orthogonality'))
    parser.add_argument('--log-interval', type=int, default=97,
                        help="ENNDiagnosticsHook's interval; not a multiple of retract_interval, "
                        'so that the logged steps fall at every distance from a retraction')
    parser.add_argument('--reuse', nargs='*', default=[], choices=list(MODES),
                        help='modes whose finished run in --work-dir is read, not retrained')
    parser.add_argument('--out', help='also write the JSON here')
    parser.add_argument('--plot', help='PNG of the error over training')
    args = parser.parse_args()
    results = {}
    for mode in args.modes:
        work_dir = osp.join(args.work_dir, mode.replace('@', '_'))
        os.makedirs(work_dir, exist_ok=True)
        print(f"{'reading' if mode in args.reuse else 'training'} {mode} ({MODES[mode]}), "
              f'{args.epochs} epochs ...', file=sys.stderr)
        if mode in args.reuse:
            results[mode] = parse(MODES[mode], work_dir, args.epochs)
        else:
            results[mode] = train(MODES[mode], work_dir, args.epochs, args.threads,
                                  args.log_interval)
        print(f"  final max |BᵀB − I| = {results[mode]['final_ortho_err_max']:.3g}, "
              f"top-1 {results[mode]['test_top1']}", file=sys.stderr)
    for record in results.values():
        record['machine'] = machine_info()
    text = json.dumps(results, indent=1)
    print(text)
    if args.out:
        with open(args.out, 'w') as f:
            f.write(text + '\n')
    if args.plot:
        plot(results, args.plot)


if __name__ == '__main__':
    main()
