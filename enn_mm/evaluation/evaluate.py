"""Retrieval evaluation of a trained checkpoint outside the Runner's loops.

What ``tools/retrieval_eval.py`` does, as a function: embed the config's test
set (the queries) and, if its ``FaissRetrievalMetric`` names one, the gallery
dataloader with the model's ``extract_feat`` (progress bars), then search and
compute the metrics, timing the two parts separately.
"""
import time
from typing import Optional

import numpy as np
from mmengine.runner import Runner
from mmengine.utils import ProgressBar
from mmpretrain.registry import METRICS

from ..models.loading import init_model
from .functional import evaluate_rankings
from .retrieval_loop import embed_batch

__all__ = ['retrieval_metric_cfg', 'evaluate_checkpoint']

DEFAULT_METRIC = dict(type='FaissRetrievalMetric', topk=(1, 5, 10),
                      metric_names=('Recall', 'Precision', 'mAP', 'AP', 'mAP@R'))


def retrieval_metric_cfg(cfg) -> Optional[dict]:
    """The ``FaissRetrievalMetric`` of ``cfg.test_evaluator``, or None.

    Args:
        cfg (Config): A config; its ``test_evaluator`` may be missing, one
            metric config, a list of them, or an evaluator dict with
            ``metrics``.

    Returns:
        dict | None: A shallow copy of the first metric config whose
        ``type`` is ``FaissRetrievalMetric`` (a scope prefix such as
        ``'mmpretrain.'`` is ignored), or None if there is none.
    """
    evaluators = cfg.get('test_evaluator') or []
    if isinstance(evaluators, dict):
        evaluators = evaluators.get('metrics', [evaluators])
    for ev in evaluators:
        if ev.get('type', '').split('.')[-1] == 'FaissRetrievalMetric':
            return dict(ev)
    return None


def _embed(model, loader, title, sink, extract_kwargs, key):
    print(f'{title}: {len(loader.dataset)} items')
    bar = ProgressBar(len(loader))
    for batch in loader:
        sink(embed_batch(model, batch, extract_kwargs=extract_kwargs, keys={key}))
        bar.update()
    print()


def evaluate_checkpoint(cfg, checkpoint: str, device: str = 'cpu', curve_k: int = 100) -> dict:
    """Embed, search and score a checkpoint with the config's retrieval metric.

    Without a ``FaissRetrievalMetric`` in ``test_evaluator`` the test set is
    retrieved against itself by label, self-matches excluded.

    Args:
        cfg (Config): The model's config (its ``default_scope`` already set).
        checkpoint (str): The checkpoint to load (strictly, into the model
            built as the Runner builds it: the config's ``data_preprocessor``
            included).
        device (str): Where the model runs.
        curve_k (int): Also compute Recall@1..curve_k (capped by the gallery).

    Returns:
        dict: ``summary`` (what ``metrics.json`` holds: the metrics, the search
        and ``embed_seconds`` / ``search_seconds``), ``curve`` (Recall@K array
        or None), ``data`` (the merged query and gallery embeddings and their
        ground truth) and ``searcher`` (the faiss searcher, for saving its index).

    Raises:
        CheckpointMismatchError: The checkpoint does not fit the config's model.
    """
    model, _ = init_model(cfg, checkpoint, device)
    extract_kwargs = (cfg.get('test_cfg') or {}).get('extract_kwargs')
    metric_cfg = retrieval_metric_cfg(cfg)
    if metric_cfg is None:
        print('test_evaluator has no FaissRetrievalMetric: retrieving the test set '
              'against itself by label, self-matches excluded')
        metric_cfg = dict(DEFAULT_METRIC)
    metric = METRICS.build(metric_cfg)

    start = time.time()  # embedding: data loading and the model's forward
    query_loader = Runner.build_dataloader(cfg.test_dataloader, seed=0)
    _embed(model, query_loader, 'queries', lambda s: metric.process(None, s),
           extract_kwargs, metric.feat_key)
    if metric.gallery_dataloader is not None:
        gallery_loader = Runner.build_dataloader(metric.gallery_dataloader, seed=0)
        metric.reset_gallery(len(gallery_loader.dataset))
        _embed(model, gallery_loader, 'gallery', metric.add_gallery, extract_kwargs,
               metric.feat_key)
    embed_seconds = time.time() - start

    start = time.time()  # search: gathering, index building, search, metrics
    data = metric.merge(metric.results, metric.gallery_parts, len(query_loader.dataset))
    searcher = metric.build_searcher(data['gallery'], len(data['query']))
    curve_k = min(curve_k, searcher.ntotal - int(metric.exclude_self))
    result = evaluate_rankings(searcher, data['query'], data['relevance'], metric.topk,
                               metric.metric_names, metric.exclude_self, metric.query_chunk,
                               curve_k=curve_k)
    search_seconds = time.time() - start
    curve = result.pop('recall_curve', None)
    summary = dict(search=searcher.description, exact=searcher.exact,
                   num_queries=len(data['query']), gallery_size=searcher.ntotal,
                   exclude_self=metric.exclude_self, embed_seconds=embed_seconds,
                   search_seconds=search_seconds, metrics=result)
    data['has_gallery'] = metric.gallery is not None
    data['topk'] = metric.topk
    return dict(summary=summary, curve=None if curve is None or not len(curve)
                else np.asarray(curve), data=data, searcher=searcher)
