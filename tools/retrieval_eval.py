"""Retrieval evaluation of a trained MMPretrain model (dense or ENN).

    python tools/retrieval_eval.py CONFIG CHECKPOINT [--work-dir DIR]
        [--save-feats] [--save-index] [--curve-k 100] [--device cpu|cuda]
        [--cfg-options KEY=VALUE ...]

Embeds the config's test dataloader (the queries) and, if its
``FaissRetrievalMetric`` names one, the gallery dataloader, with the model's
``extract_feat`` (progress bar), then prints the metrics table and writes to
the work dir (default ``work_dirs/retrieval_eval/<config name>``):

- ``metrics.json``: the metrics, how they were searched, and where the time
  went (``embed_seconds``: data loading and the model's forward;
  ``search_seconds``: index building, exact search and metrics);
- ``recall_curve.png`` (and ``.json``): Recall@K for K = 1..--curve-k;
- with ``--save-feats``: ``query_feats.npy`` / ``query_labels.npy`` (or
  ``query_gt.json`` for index lists), ``gallery_*`` likewise, reusable as
  ``gallery=dict(feats=..., labels=...)`` or with ``enn_mm.retrieval_metrics``;
- with ``--save-index``: ``gallery.index``, the faiss index (faiss.read_index).

Without a ``FaissRetrievalMetric`` in ``test_evaluator`` the test set is
retrieved against itself by label (self-matches excluded).
"""
import argparse
import json
import os
import os.path as osp
import sys
import time

import numpy as np
import torch
from mmengine.config import DictAction

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
if REPO not in sys.path:  # run from a checkout without installing
    sys.path.insert(0, REPO)


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('config')
    parser.add_argument('checkpoint')
    parser.add_argument('--work-dir', help='where outputs go')
    parser.add_argument('--save-feats', action='store_true',
                        help='save the embeddings and labels as .npy')
    parser.add_argument('--save-index', action='store_true',
                        help='save the gallery faiss index')
    parser.add_argument('--curve-k', type=int, default=100,
                        help='largest K of the recall curve (0: no curve)')
    parser.add_argument('--device', default='cuda' if torch.cuda.is_available()
                        else 'cpu', help='device of the model')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override config keys, e.g. '
                        'test_evaluator.index=IVF256,Flat')
    return parser.parse_args()


def retrieval_metric_cfg(cfg):
    """The FaissRetrievalMetric config of test_evaluator, or a default."""
    evaluators = cfg.get('test_evaluator') or []
    if isinstance(evaluators, dict):
        evaluators = evaluators.get('metrics', [evaluators])
    for ev in evaluators:
        if ev.get('type', '').split('.')[-1] == 'FaissRetrievalMetric':
            return dict(ev)
    print('test_evaluator has no FaissRetrievalMetric: retrieving the test set '
          'against itself by label, self-matches excluded')
    return dict(type='FaissRetrievalMetric', topk=(1, 5, 10),
                metric_names=('Recall', 'Precision', 'mAP', 'AP', 'mAP@R'))


def embed(model, loader, title, sink, extract_kwargs, key):
    from mmengine.utils import ProgressBar

    from enn_mm.evaluation import embed_batch
    print(f'{title}: {len(loader.dataset)} items')
    bar = ProgressBar(len(loader))
    for batch in loader:
        sink(embed_batch(model, batch, extract_kwargs=extract_kwargs,
                         keys={key}))
        bar.update()
    print()


def save_gt(path_prefix, gt):
    """Labels as .npy when one per item, else index lists as .json."""
    if isinstance(gt, np.ndarray):
        np.save(path_prefix + '_labels.npy', gt)
    elif gt is not None and all(g is not None and len(g) == 1 for g in gt):
        np.save(path_prefix + '_labels.npy', np.concatenate(gt))
    elif gt is not None:
        with open(path_prefix + '_gt.json', 'w') as f:
            json.dump([[int(i) for i in g] for g in gt], f)


def print_table(metrics, topk):
    names = [n for n in ('Recall', 'Precision', 'mAP', 'AP')
             if f'{n}@{topk[0]}' in metrics]
    width = max(10, *(len(f'@{k}') + 2 for k in topk))
    print('\n' + 'metric'.ljust(10) + ''.join(f'@{k}'.rjust(width) for k in topk))
    for name in names:
        print(name.ljust(10) + ''.join(f'{metrics[f"{name}@{k}"]:{width}.2f}'
                                       for k in topk))
    if 'mAP@R' in metrics:
        print('mAP@R'.ljust(10) + f'{metrics["mAP@R"]:{width}.2f}')
    print('(percent; Recall@K = hit rate as in MMPretrain, mAP@K = MMPretrain '
          'AP / #relevant, AP@K = AP / min(K, #relevant))\n')


def save_curve(path, curve, title):
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    ks = np.arange(1, len(curve) + 1)
    fig, ax = plt.subplots(figsize=(5, 3.5), dpi=120)
    ax.plot(ks, curve, marker='.' if len(ks) <= 30 else None)
    ax.set_xscale('log')
    ax.set_xlabel('K')
    ax.set_ylabel('Recall@K (%)')
    ax.set_title(title, fontsize=9)
    ax.grid(True, which='both', alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def main():
    args = parse_args()
    from mmengine.config import Config
    from mmengine.registry import init_default_scope
    from mmengine.runner import Runner, load_checkpoint

    import enn_mm  # noqa: F401  (registries, safe checkpoint loading)
    import enn_mm.evaluation  # noqa: F401
    from enn_mm.evaluation.functional import evaluate_rankings
    from mmpretrain.registry import METRICS, MODELS

    cfg = Config.fromfile(args.config)
    if args.cfg_options:
        cfg.merge_from_dict(args.cfg_options)
    init_default_scope(cfg.get('default_scope', 'mmpretrain'))
    name = osp.splitext(osp.basename(args.config))[0]
    work_dir = args.work_dir or osp.join('work_dirs', 'retrieval_eval', name)
    os.makedirs(work_dir, exist_ok=True)

    model = MODELS.build(cfg.model)
    load_checkpoint(model, args.checkpoint, map_location='cpu', logger='silent')
    model.to(args.device).eval()
    extract_kwargs = (cfg.get('test_cfg') or {}).get('extract_kwargs')

    metric = METRICS.build(retrieval_metric_cfg(cfg))
    start = time.time()
    query_loader = Runner.build_dataloader(cfg.test_dataloader, seed=0)
    embed(model, query_loader, 'queries', lambda s: metric.process(None, s),
          extract_kwargs, metric.feat_key)
    if metric.gallery_dataloader is not None:
        gallery_loader = Runner.build_dataloader(metric.gallery_dataloader, seed=0)
        metric.reset_gallery(len(gallery_loader.dataset))
        embed(model, gallery_loader, 'gallery', metric.add_gallery, extract_kwargs,
              metric.feat_key)
    embed_time = time.time() - start

    start = time.time()  # search time: gathering, index building, search, metrics
    data = metric.merge(metric.results, metric._gallery_parts,
                        len(query_loader.dataset))
    searcher = metric.build_searcher(data['gallery'], len(data['query']))
    n_eff = searcher.ntotal - int(metric.exclude_self)
    curve_k = min(args.curve_k, n_eff)
    result = evaluate_rankings(searcher, data['query'], data['relevance'],
                               metric.topk, metric.metric_names,
                               metric.exclude_self, metric.query_chunk,
                               curve_k=curve_k)
    search_time = time.time() - start
    curve = result.pop('recall_curve', None)

    print(f'search: {searcher.description}')
    print_table(result, metric.topk)
    summary = dict(config=args.config, checkpoint=args.checkpoint,
                   search=searcher.description, exact=searcher.exact,
                   num_queries=len(data['query']), gallery_size=searcher.ntotal,
                   exclude_self=metric.exclude_self, embed_seconds=embed_time,
                   search_seconds=search_time, metrics=result)
    with open(osp.join(work_dir, 'metrics.json'), 'w') as f:
        json.dump(summary, f, indent=2)
    if curve is not None and len(curve):
        self_note = ', self excluded' if metric.exclude_self else ''
        save_curve(osp.join(work_dir, 'recall_curve.png'), curve,
                   f'{name}\n{len(data["query"])} queries, gallery '
                   f'{searcher.ntotal}{self_note}')
        with open(osp.join(work_dir, 'recall_curve.json'), 'w') as f:
            json.dump({f'Recall@{k + 1}': float(v) for k, v in enumerate(curve)}, f)
    if args.save_feats:
        np.save(osp.join(work_dir, 'query_feats.npy'), data['query'])
        save_gt(osp.join(work_dir, 'query'), data['query_gt'])
        if metric.gallery is not None:
            np.save(osp.join(work_dir, 'gallery_feats.npy'),
                    np.asarray(data['gallery']))
            save_gt(osp.join(work_dir, 'gallery'), data['gallery_gt'])
    if args.save_index:
        import faiss
        faiss.write_index(searcher.to_cpu_index(), osp.join(work_dir, 'gallery.index'))
    print(f'embedding {embed_time:.1f} s, search + metrics {search_time:.2f} s; '
          f'outputs in {work_dir}')


if __name__ == '__main__':
    main()
