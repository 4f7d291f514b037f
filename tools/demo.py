"""The end-to-end demo behind the README's first command.

Trains the ENN config on Fashion-MNIST with MMPretrain's loop, tests it on the
10k test images, exports it to a dense model, tests that model with vanilla
MMPretrain (no plugin loaded) and checks both predict the same.

    python tools/demo.py [--config CONFIG] [--work-dir DIR] [--cfg-options KEY=VALUE ...]
"""
import argparse
import json
import os
import os.path as osp
import pickle
import re
import subprocess
import sys
import time

import torch

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))


def lscpu(field: str) -> str:
    """A field of ``lscpu`` ('' where there is none)."""
    try:
        out = subprocess.run(['lscpu'], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return ''
    found = re.search(rf'^{field}:\s*(.+)$', out, re.M)
    return found.group(1).strip() if found else ''


def cpu_model() -> str:
    """``lscpu``'s model name (the demo's time depends on it), else the
    platform's processor string."""
    import platform
    return lscpu('Model name') or platform.processor() or platform.machine()


def step(title, args, log):
    print(f'\n=== {title}\n$ {" ".join(args)}', flush=True)
    start = time.time()
    announced = False
    with open(log, 'w') as f:
        proc = subprocess.Popen([sys.executable, *args], cwd=REPO, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True)
        for line in proc.stdout:
            f.write(line)
            if ' - mmengine - ' in line or 'Error' in line:  # progress, not the env dump
                print(line.rstrip()[:200], flush=True)
            eta = re.search(r'eta: ([^ ]+(?: days?, [^ ]+)?)', line)
            if eta and not announced:  # mmengine's estimate after the first logged steps
                announced = True
                print(f'[demo] this step should take about {eta.group(1).rstrip(",")} more '
                      f'on this CPU ({cpu_model()}; {os.cpu_count()} cores)', flush=True)
    if proc.wait():
        raise SystemExit(f'step "{title}" failed, see {log}')
    return time.time() - start


def predictions(path):
    with open(path, 'rb') as f:
        results = pickle.load(f)
    pred = torch.stack([torch.as_tensor(r['pred_label']).flatten()[0] for r in results])
    gt = torch.stack([torch.as_tensor(r['gt_label']).flatten()[0] for r in results])
    scores = torch.stack([torch.as_tensor(r['pred_score']).flatten() for r in results])
    return pred, gt, scores


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--config', default='configs/enn/resnet18w16_fmnist.py')
    parser.add_argument('--work-dir', default='work_dirs/demo')
    parser.add_argument('--skip-train', action='store_true',
                        help='reuse the last checkpoint in --work-dir')
    parser.add_argument('--cfg-options', nargs='+', default=[], metavar='KEY=VALUE',
                        help='passed to every step (train, test, export, vanilla test), '
                        'e.g. a data_root or a shorter schedule')
    parser.add_argument('--setup-seconds', type=float, default=None,
                        help='time tools/demo.sh spent installing and preparing data '
                        '(recorded in the summary, for the end-to-end time)')
    args = parser.parse_args()
    work = osp.join(REPO, args.work_dir)
    os.makedirs(work, exist_ok=True)
    import mmpretrain
    vanilla_test = osp.join(osp.dirname(mmpretrain.__file__), '.mim', 'tools', 'test.py')

    opts = ['--cfg-options', *args.cfg_options] if args.cfg_options else []
    times = {} if args.setup_seconds is None else {'setup': args.setup_seconds}
    if not args.skip_train:
        times['train'] = step('1/4 train the ENN model (MMPretrain training loop)',
                              ['tools/train.py', args.config, '--work-dir', work, *opts],
                              osp.join(work, 'demo_train.log'))
    with open(osp.join(work, 'last_checkpoint')) as f:
        ckpt = f.read().strip()
    times['test'] = step('2/4 test the ENN model on the test set',
                         ['tools/test.py', args.config, ckpt, '--work-dir',
                          osp.join(work, 'test_enn'), '--out', osp.join(work, 'enn_preds.pkl'),
                          *opts],
                         osp.join(work, 'demo_test.log'))
    dense = osp.join(work, 'dense.pth')
    times['export'] = step('3/4 export to a dense model',
                           ['tools/export_dense.py', args.config, ckpt, dense, *opts],
                           osp.join(work, 'demo_export.log'))
    times['vanilla_test'] = step(
        '4/4 test the dense model with vanilla MMPretrain (plugin not loaded)',
        [vanilla_test, osp.splitext(dense)[0] + '.py', dense, '--work-dir',
         osp.join(work, 'test_dense'), '--out', osp.join(work, 'dense_preds.pkl'), *opts],
        osp.join(work, 'demo_vanilla_test.log'))

    enn_pred, gt, enn_scores = predictions(osp.join(work, 'enn_preds.pkl'))
    dense_pred, dense_gt, dense_scores = predictions(osp.join(work, 'dense_preds.pkl'))
    assert torch.equal(gt, dense_gt)
    # The ENN model may apply its factors where that is cheaper than building
    # W (compute='auto'): the same map up to float rounding, so the softmax
    # scores agree to ~1e-6 and a prediction can only flip on an exact tie.
    score_diff = (enn_scores - dense_scores).abs().max().item()
    top2 = enn_scores.topk(2, dim=1).values
    tie = (top2[:, 0] - top2[:, 1]) < 1e-4
    meta = torch.load(dense, map_location='cpu', weights_only=True)['meta']['enn_mm']
    summary = {
        'config': args.config,
        'test_images': len(gt),
        'enn_top1': round(100 * (enn_pred == gt).float().mean().item(), 2),
        'dense_export_top1': round(100 * (dense_pred == gt).float().mean().item(), 2),
        'prediction_agreement': round(100 * (enn_pred == dense_pred).float().mean().item(), 3),
        'max_score_difference': score_diff,
        'orthogonality_error': meta['orthogonality_error'],
        'enn_checkpoint': osp.relpath(ckpt, REPO),
        'dense_checkpoint': osp.relpath(dense, REPO),
        'dense_config': osp.relpath(osp.splitext(dense)[0] + '.py', REPO),
        'seconds': {k: round(v, 1) for k, v in times.items()},
        'total_seconds': round(sum(times.values()), 1),
        'cpu_model': cpu_model(),
        # the vector units the kernels can use (AVX-512 trains the demo much faster)
        'cpu_flags': [f for f in ('avx2', 'avx512f') if f in lscpu('Flags').split()],
        'threads': torch.get_num_threads(),
        'cpus': os.cpu_count(),
    }
    with open(osp.join(work, 'summary.json'), 'w') as f:
        json.dump(summary, f, indent=2)
    print('\n=== results (Fashion-MNIST test set)')
    print(f"ENN model top-1           : {summary['enn_top1']:.2f} %  ({len(gt)} images)")
    print(f"dense export top-1        : {summary['dense_export_top1']:.2f} %  (vanilla MMPretrain)")
    print(f"same prediction           : {summary['prediction_agreement']:.3f} % of images "
          f"(scores differ by at most {score_diff:.1e})")
    print(f"orthogonality error       : {summary['orthogonality_error']:.3e}  "
          '(max |BᵀB − I| over Q, P)')
    print(f"ENN checkpoint            : {summary['enn_checkpoint']}")
    print(f"dense checkpoint / config : {summary['dense_checkpoint']} / {summary['dense_config']}")
    print(f"time (s)                  : {summary['seconds']}, total {summary['total_seconds']}")
    print(f"summary written to {osp.relpath(osp.join(work, 'summary.json'), REPO)}")
    if score_diff > 1e-4 or bool(((enn_pred != dense_pred) & ~tie).any()):
        raise SystemExit('the dense export does not predict as the ENN model')


if __name__ == '__main__':
    main()
