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

import numpy as np
import torch
from mmengine.config import DictAction


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

    import enn_mm  # noqa: F401  (registries, safe checkpoint loading)
    from enn_mm.evaluation import evaluate_checkpoint
    from enn_mm.models import CheckpointMismatchError

    cfg = Config.fromfile(args.config)
    if args.cfg_options:
        cfg.merge_from_dict(args.cfg_options)
    init_default_scope(cfg.get('default_scope', 'mmpretrain'))
    name = osp.splitext(osp.basename(args.config))[0]
    work_dir = args.work_dir or osp.join('work_dirs', 'retrieval_eval', name)
    os.makedirs(work_dir, exist_ok=True)

    try:
        out = evaluate_checkpoint(cfg, args.checkpoint, args.device, args.curve_k)
    except CheckpointMismatchError as err:  # a message, not a stack trace
        raise SystemExit(f'{args.checkpoint} / {args.config}: {err}')
    summary, data, searcher, curve = out['summary'], out['data'], out['searcher'], out['curve']
    print(f"search: {summary['search']}")
    print_table(summary['metrics'], data['topk'])
    summary = dict(config=args.config, checkpoint=args.checkpoint, **summary)
    with open(osp.join(work_dir, 'metrics.json'), 'w') as f:
        json.dump(summary, f, indent=2)
    if curve is not None:
        self_note = ', self excluded' if summary['exclude_self'] else ''
        save_curve(osp.join(work_dir, 'recall_curve.png'), curve,
                   f"{name}\n{summary['num_queries']} queries, gallery "
                   f"{summary['gallery_size']}{self_note}")
        with open(osp.join(work_dir, 'recall_curve.json'), 'w') as f:
            json.dump({f'Recall@{k + 1}': float(v) for k, v in enumerate(curve)}, f)
    if args.save_feats:
        np.save(osp.join(work_dir, 'query_feats.npy'), data['query'])
        save_gt(osp.join(work_dir, 'query'), data['query_gt'])
        if data['has_gallery']:
            np.save(osp.join(work_dir, 'gallery_feats.npy'), np.asarray(data['gallery']))
            save_gt(osp.join(work_dir, 'gallery'), data['gallery_gt'])
    if args.save_index:
        import faiss
        faiss.write_index(searcher.to_cpu_index(), osp.join(work_dir, 'gallery.index'))
    print(f"embedding {summary['embed_seconds']:.1f} s, search + metrics "
          f"{summary['search_seconds']:.2f} s; outputs in {work_dir}")


if __name__ == '__main__':
    main()
