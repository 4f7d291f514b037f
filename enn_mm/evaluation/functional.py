"""Retrieval metrics over faiss rankings: pure numpy/torch/faiss.

Everything here works on plain arrays (numpy or torch) and is what the
mmengine metrics in this package call after gathering features, and what
notebooks call directly through :func:`retrieval_metrics`.

Metric definitions (all in percent, averaged over queries; ``rel(r)`` is 1
if the item at rank ``r`` (1-based) is relevant, ``R`` is the number of
relevant gallery items of the query, ``P(r)`` the precision at rank ``r``):

- ``Recall@K``: hit rate, 100 if any relevant item is in the top K (the
  definition of MMPretrain's ``RetrievalRecall``).
- ``Precision@K``: ``#relevant in top K / K``.
- ``mAP@K``: MMPretrain's ``RetrievalAveragePrecision`` (mode 'IR'):
  ``sum_{r<=K} P(r) rel(r) / R``.
- ``AP@K``: the usual truncated AP, ``sum_{r<=K} P(r) rel(r) / min(K, R)``.
- ``mAP@R``: ``sum_{r<=R} P(r) rel(r) / R`` (Musgrave et al., 2020).

Ranking: exact searches order by float64 scores, equal scores by ascending
gallery index (the rank rule of :mod:`enn_mm.evaluation.search`). Queries
with no relevant gallery item are left out of the averages with a warning
(MMPretrain's metrics fail on them).
"""
import warnings
from typing import Dict, Optional, Sequence, Union

import numpy as np

from .search import FaissSearcher, check_features, to_numpy

RANK_METRICS = ('Recall', 'Precision', 'mAP', 'AP', 'mAP@R')
DEFAULT_METRICS = ('Recall', 'Precision', 'mAP', 'AP')
# Entries of one (queries x k) ranking chunk: bounds the search results'
# memory (scores + ids + relevance ~ 13 bytes each) to ~200 MiB.
CHUNK_ENTRIES = 2**24


def check_topk(topk) -> tuple:
    """``int | Sequence[int]`` -> sorted tuple of distinct positive ints.

    Args:
        topk (int | Sequence[int]): One cut-off or several.

    Returns:
        tuple: The distinct cut-offs as ints, ascending.

    Raises:
        ValueError: ``topk`` is empty or holds a non-integer, a bool or a
            value <= 0.
    """
    topk = (topk, ) if isinstance(topk, (int, np.integer)) else tuple(topk)
    if not topk or any(not isinstance(k, (int, np.integer)) or isinstance(k, bool)
                       or k <= 0 for k in topk):
        raise ValueError(f'topk must be a positive int or a sequence of them, '
                         f'got {topk!r}')
    return tuple(sorted({int(k) for k in topk}))


def check_metric_names(metrics) -> tuple:
    """Check metric names against :data:`RANK_METRICS`.

    Args:
        metrics (str | Sequence[str]): One name or several.

    Returns:
        tuple: The names in the given order (a single str becomes a 1-tuple).

    Raises:
        ValueError: A name is unknown, or no name is given.
    """
    metrics = (metrics, ) if isinstance(metrics, str) else tuple(metrics)
    bad = [m for m in metrics if m not in RANK_METRICS]
    if bad or not metrics:
        raise ValueError(f'unknown retrieval metrics {bad}; choose from '
                         f'{RANK_METRICS}')
    return metrics


def check_labels(labels, name: str, n: int) -> np.ndarray:
    """Integer label per item -> int64 array of length ``n``.

    An ``(n, 1)`` array is flattened; float labels are accepted when every
    value is a whole number.

    Args:
        labels (np.ndarray | torch.Tensor | Sequence[int]): One label per
            item.
        name (str): What the labels are, for error messages.
        n (int): Number of items.

    Returns:
        np.ndarray: ``(n, )`` int64 labels.

    Raises:
        ValueError: ``labels`` is None, has the wrong shape or length, or
            holds non-integer or NaN/inf floats.
        TypeError: ``labels`` is not array-like, or neither integer nor
            float.
    """
    if labels is None:
        raise ValueError(f'{name} are missing: relevance by equal label needs '
                         'a label for every query and gallery item (or pass '
                         'query_gt, lists of relevant gallery indices)')
    labels = to_numpy(labels, name)
    if labels.ndim == 2 and labels.shape[1] == 1:
        labels = labels[:, 0]
    if labels.ndim != 1 or len(labels) != n:
        raise ValueError(f'{name} must be one label per item ({n}), got shape '
                         f'{tuple(labels.shape)}')
    if np.issubdtype(labels.dtype, np.floating):
        if not np.isfinite(labels).all() or (labels != np.round(labels)).any():
            raise ValueError(f'{name} must be integers; got non-integer or '
                             'NaN values (is a label missing?)')
    elif not np.issubdtype(labels.dtype, np.integer):
        raise TypeError(f'{name} must be integers, got dtype {labels.dtype}')
    return labels.astype(np.int64)


class Relevance:
    """Which gallery items are relevant to each query.

    Either by equal label (``query_labels``/``gallery_labels``) or by explicit
    lists of relevant gallery indices per query (``query_gt``, as MMPretrain's
    InShop query split gives). With ``exclude_self`` the queries are the
    gallery and item ``i`` is removed from query ``i``'s relevant set.
    ``num_relevant`` holds the number of relevant gallery items per query.

    Args:
        num_queries (int): Number of queries.
        num_gallery (int): Number of gallery items.
        query_labels (np.ndarray | torch.Tensor | Sequence[int], optional):
            One integer label per query. Defaults to None.
        gallery_labels (np.ndarray | torch.Tensor | Sequence[int], optional):
            One integer label per gallery item. Defaults to None.
        query_gt (Sequence, optional): Per query, the indices of its relevant
            gallery items (array-likes of any shape; duplicates count once).
            Used instead of the labels (``gallery_labels`` is then ignored).
            Defaults to None.
        exclude_self (bool): The queries are the gallery: item ``i`` is not
            relevant to query ``i``. Defaults to False.

    Raises:
        ValueError: Both ``query_labels`` and ``query_gt`` are given, labels
            are missing or malformed (see :func:`check_labels`), or
            ``query_gt`` has the wrong length or an index outside the gallery.
    """

    def __init__(self, num_queries: int, num_gallery: int, query_labels=None,
                 gallery_labels=None, query_gt=None, exclude_self=False):
        self.num_gallery = num_gallery
        self.exclude_self = exclude_self
        if query_gt is not None:
            if query_labels is not None:
                raise ValueError('pass either labels or query_gt, not both')
            self._init_gt(query_gt, num_queries, num_gallery)
        else:
            self.query_labels = check_labels(query_labels, 'query labels',
                                             num_queries)
            self.gallery_labels = check_labels(gallery_labels, 'gallery labels',
                                               num_gallery)
            values, counts = np.unique(self.gallery_labels, return_counts=True)
            pos = np.searchsorted(values, self.query_labels)
            pos = np.minimum(pos, len(values) - 1)
            found = values[pos] == self.query_labels
            self.num_relevant = np.where(found, counts[pos], 0) - int(exclude_self)
            self.gt_keys = None

    def _init_gt(self, query_gt, num_queries, num_gallery):
        if len(query_gt) != num_queries:
            raise ValueError(f'query_gt has {len(query_gt)} entries for '
                             f'{num_queries} queries')
        rows = []
        for i, gt in enumerate(query_gt):
            gt = np.unique(to_numpy(gt, 'query_gt').astype(np.int64).ravel())
            if len(gt) and (gt[0] < 0 or gt[-1] >= num_gallery):
                raise ValueError(f'query_gt[{i}] holds gallery index '
                                 f'{gt[0] if gt[0] < 0 else gt[-1]}, outside '
                                 f'the gallery of {num_gallery} items')
            if self.exclude_self:
                gt = gt[gt != i]
            rows.append(gt)
        lengths = np.array([len(r) for r in rows], dtype=np.int64)
        self.num_relevant = lengths
        q = np.repeat(np.arange(num_queries, dtype=np.int64), lengths)
        flat = np.concatenate(rows) if rows else np.zeros(0, np.int64)
        self.gt_keys = q * num_gallery + flat  # sorted: rows and cols ascend

    def is_relevant(self, query_rows: np.ndarray, ids: np.ndarray) -> np.ndarray:
        """Bool (n, k): is gallery item ``ids[i, j]`` relevant to query
        ``query_rows[i]``? Missing results (-1) are not.

        Args:
            query_rows (np.ndarray): ``(n, )`` int query indices.
            ids (np.ndarray): ``(n, k)`` int gallery indices, -1 for missing.

        Returns:
            np.ndarray: ``(n, k)`` bool.
        """
        valid = ids >= 0
        safe = np.where(valid, ids, 0)
        if self.gt_keys is None:
            rel = (self.gallery_labels[safe]
                   == self.query_labels[query_rows][:, None])
        else:
            keys = query_rows[:, None] * self.num_gallery + safe
            pos = np.searchsorted(self.gt_keys, keys)
            pos = np.minimum(pos, max(len(self.gt_keys) - 1, 0))
            rel = (self.gt_keys[pos] == keys) if len(self.gt_keys) else \
                np.zeros(keys.shape, bool)
        return rel & valid


def drop_self(ids: np.ndarray, scores: np.ndarray, query_rows: np.ndarray):
    """Remove each query's own index from its ranking (one column less).

    Rows where the query itself is not listed (it lost a tie to identical
    items with lower indices) drop their last result instead.

    Args:
        ids (np.ndarray): ``(n, k)`` ranked gallery indices.
        scores (np.ndarray): ``(n, k)`` their scores.
        query_rows (np.ndarray): ``(n, )`` index of each query, which is also
            its own gallery index.

    Returns:
        tuple: ``(ids, scores)``, ``(n, k - 1)`` each, in the same order.
    """
    keep = ids != query_rows[:, None]
    missing = keep.all(axis=1)
    keep[missing, -1] = False
    n, k = ids.shape
    return ids[keep].reshape(n, k - 1), scores[keep].reshape(n, k - 1)


def rank_metrics(rel: np.ndarray, num_relevant: np.ndarray, topk: Sequence[int],
                 metrics: Sequence[str]) -> Dict[str, np.ndarray]:
    """Per-query metrics (in [0, 1]) from a relevance matrix of rankings.

    Args:
        rel (np.ndarray): Bool (n, K), ``rel[i, r]``: the item at rank ``r``
            (0-based) of query ``i`` is relevant.
        num_relevant (np.ndarray): (n, ) relevant items per query (> 0).
        topk (Sequence[int]): Cut-offs, each ``<= K``.
        metrics (Sequence[str]): Names from :data:`RANK_METRICS`; 'mAP@R'
            needs ``K >= max(num_relevant)``.

    Returns:
        dict: ``'Recall@k'`` etc. -> (n, ) float64 arrays, plus
        ``'first_hit'``: 1-based rank of the first relevant item (0 if none
        in the top K).
    """
    n, K = rel.shape
    hits = np.cumsum(rel, axis=1, dtype=np.int64)
    ranks = np.arange(1, K + 1, dtype=np.float64)
    # sum_{r' <= r} P(r') rel(r'): the AP numerators at every cut-off
    ap_sum = np.cumsum(np.where(rel, hits / ranks, 0.0), axis=1)
    R = num_relevant.astype(np.float64)
    out = {}
    for k in topk:
        if 'Recall' in metrics:
            out[f'Recall@{k}'] = (hits[:, k - 1] > 0).astype(np.float64)
        if 'Precision' in metrics:
            out[f'Precision@{k}'] = hits[:, k - 1] / k
        if 'mAP' in metrics:
            out[f'mAP@{k}'] = ap_sum[:, k - 1] / R
        if 'AP' in metrics:
            out[f'AP@{k}'] = ap_sum[:, k - 1] / np.minimum(k, R)
    if 'mAP@R' in metrics:
        out['mAP@R'] = ap_sum[np.arange(n), num_relevant - 1] / R
    out['first_hit'] = np.where(hits[:, -1] > 0, rel.argmax(axis=1) + 1, 0)
    return out


def _search_plan(searcher: FaissSearcher, nq: int, num_rel: np.ndarray, topk: tuple,
                 metrics: tuple, exclude_self: bool, curve_k: int):
    """The queries to search and how deep, after checking the request.

    Args:
        searcher (FaissSearcher): The gallery.
        nq (int): Number of queries.
        num_rel (np.ndarray): ``(nq, )`` relevant gallery items per query.
        topk (tuple): Checked cut-offs.
        metrics (tuple): Checked metric names.
        exclude_self (bool): Whether query ``i`` is gallery item ``i``.
        curve_k (int): Largest K of the recall curve (0: none).

    Returns:
        tuple: The indices of the queries with a relevant item, and the
        number of results each needs (before excluding itself).

    Raises:
        ValueError: ``exclude_self`` with queries that are not the gallery,
            a cut-off above the candidates per query, or no query with a
            relevant item.
    """
    if exclude_self and nq != searcher.ntotal:
        raise ValueError(f'exclude_self needs the queries to be the gallery, but '
                         f'there are {nq} queries and {searcher.ntotal} gallery '
                         'items')
    n_eff = searcher.ntotal - int(exclude_self)
    kmax = max(max(topk), curve_k)
    if kmax > n_eff:
        raise ValueError(f'top-{kmax} asked for but the gallery has only {n_eff} '
                         f'candidates per query{" (self excluded)" if exclude_self else ""}: '
                         'lower topk or enlarge the gallery')
    valid = num_rel > 0
    if not valid.any():
        raise ValueError('no query has a relevant item in the gallery: check the '
                         'labels (query and gallery label spaces must match)')
    if not valid.all():
        warnings.warn(f'{int((~valid).sum())} of {nq} queries have no relevant '
                      'gallery item and are left out of the averages',
                      stacklevel=3)
    valid_rows = np.flatnonzero(valid)
    if 'mAP@R' in metrics:
        kmax = max(kmax, int(num_rel[valid_rows].max()))
    return valid_rows, kmax


def evaluate_rankings(searcher: FaissSearcher,
                      queries,
                      relevance: Relevance,
                      topk=(1, 5, 10),
                      metric_names=DEFAULT_METRICS,
                      exclude_self: bool = False,
                      query_chunk: Optional[int] = None,
                      curve_k: int = 0,
                      return_per_query: bool = False) -> dict:
    """Search every query and average the rank metrics over the queries.

    Queries are searched in chunks so memory stays bounded by the gallery
    (or its shard) plus one chunk of results.

    Args:
        searcher (FaissSearcher): The gallery.
        queries (np.ndarray | torch.Tensor): ``(n, d)`` query embeddings
            (with ``exclude_self``, the gallery itself: query ``i`` is
            gallery item ``i``).
        relevance (Relevance): Ground truth.
        topk (int | Sequence[int]): Cut-offs K (see :func:`rank_metrics`).
            Defaults to (1, 5, 10).
        metric_names (str | Sequence[str]): Names from
            :data:`RANK_METRICS`. Defaults to :data:`DEFAULT_METRICS`.
        exclude_self (bool): Remove query ``i``'s own gallery item ``i``.
            Defaults to False.
        query_chunk (int, optional): Queries per search call. Defaults to
            4096, in any case capped so one chunk has at most
            :data:`CHUNK_ENTRIES` results.
        curve_k (int): Also return ``'recall_curve'``, Recall@1..curve_k.
            Defaults to 0 (none).
        return_per_query (bool): Also return ``'per_query'``, the per-query
            values (and the indices of the queries they belong to).
            Defaults to False.

    Returns:
        dict: Metric name (``'Recall@1'``, ..., ``'mAP@R'``) -> mean over
        the queries with a relevant item, in percent; plus
        ``'recall_curve'`` (``(curve_k, )`` array, percent) if ``curve_k``,
        and ``'per_query'`` (name -> array in [0, 1], with ``'query_index'``
        and ``'first_hit'``, the 1-based rank of the first hit or 0) if
        ``return_per_query``.

    Raises:
        ValueError: Invalid ``topk``, metric names or queries, ``exclude_self``
            with queries that are not the gallery, a cut-off above the
            number of candidates per query, or no query with a relevant item.
    """
    topk = check_topk(topk)
    metrics = check_metric_names(metric_names)
    queries = check_features(queries, 'query embeddings', searcher.dim)
    num_rel = relevance.num_relevant
    valid_rows, kmax = _search_plan(searcher, len(queries), num_rel, topk, metrics,
                                    exclude_self, curve_k)
    k_search = kmax + int(exclude_self)
    chunk = max(1, min(query_chunk or 4096, CHUNK_ENTRIES // k_search))

    sums = {}
    per_query = {}
    first_hits = []
    for start in range(0, len(valid_rows), chunk):
        rows = valid_rows[start:start + chunk]
        scores, ids = searcher.search(queries[rows], k_search)
        if exclude_self:
            ids, scores = drop_self(ids, scores, rows)
        rel = relevance.is_relevant(rows, ids)
        values = rank_metrics(rel, num_rel[rows], topk, metrics)
        first_hits.append(values.pop('first_hit'))
        for name, v in values.items():
            sums[name] = sums.get(name, 0.0) + float(v.sum())
            if return_per_query:
                per_query.setdefault(name, []).append(v)
    n_valid = len(valid_rows)
    result = {name: 100.0 * s / n_valid for name, s in sums.items()}
    first_hit = np.concatenate(first_hits)
    if curve_k:
        found = first_hit[first_hit > 0]
        counts = np.bincount(found, minlength=curve_k + 1)[1:curve_k + 1]
        result['recall_curve'] = 100.0 * np.cumsum(counts) / n_valid
    if return_per_query:
        result['per_query'] = {k: np.concatenate(v) for k, v in per_query.items()}
        result['per_query']['query_index'] = valid_rows
        result['per_query']['first_hit'] = first_hit
    return result


def _as_search_input(x):
    """Torch/numpy/memmap features, or a path to a ``.npy`` file (memmapped)."""
    if isinstance(x, str):
        return np.load(x, mmap_mode='r')
    return x


def retrieval_metrics(query_feats,
                      gallery_feats=None,
                      query_labels=None,
                      gallery_labels=None,
                      topk: Union[int, Sequence[int]] = (1, 5, 10),
                      exclude_self: Optional[bool] = None,
                      index: str = 'Flat',
                      *,
                      query_gt: Optional[Sequence] = None,
                      metric_names: Sequence[str] = DEFAULT_METRICS,
                      similarity: str = 'cosine',
                      device: str = 'auto',
                      float16: bool = False,
                      query_chunk: Optional[int] = None,
                      shard_rows: Optional[int] = None,
                      curve_k: int = 0,
                      return_per_query: bool = False) -> Dict[str, float]:
    """Image retrieval metrics of query embeddings against a gallery.

    Example::

        >>> import enn_mm
        >>> enn_mm.retrieval_metrics(q, g, q_labels, g_labels, topk=(1, 5))
        {'Recall@1': ..., 'Precision@1': ..., 'mAP@1': ..., 'AP@1': ...,
         'Recall@5': ..., ...}
        >>> # the queries are the gallery, each query's own item excluded:
        >>> enn_mm.retrieval_metrics(feats, None, labels, topk=10)

    Args:
        query_feats (np.ndarray | torch.Tensor | str): ``(n, d)`` numpy array
            or torch tensor (any float dtype), or a ``.npy`` path (memmapped).
        gallery_feats (np.ndarray | torch.Tensor | np.memmap | str, optional):
            ``(N, d)`` array/tensor, a ``.npy`` path or memmap (streamed), or
            None to use the queries as the gallery.
        query_labels (np.ndarray | torch.Tensor | Sequence[int], optional):
            One integer label per query; an item is relevant to a query when
            the labels are equal.
        gallery_labels (np.ndarray | torch.Tensor | Sequence[int], optional):
            One integer label per gallery item. Defaults to ``query_labels``
            when the gallery is the queries.
        topk (int | Sequence[int]): Cut-offs K. Defaults to (1, 5, 10).
        exclude_self (bool, optional): Query ``i`` is gallery item ``i`` and
            is removed from its own ranking. Defaults to True when
            ``gallery_feats`` is None, else False.
        index (str): 'Flat' (exact) or a faiss index-factory string
            (approximate, with a warning).
        query_gt (Sequence, optional): Instead of labels, the relevant gallery
            indices of each query (MMPretrain's InShop format).
        metric_names (Sequence[str]): Any of 'Recall', 'Precision', 'mAP',
            'AP', 'mAP@R' (see the module docstring). Defaults to all but
            'mAP@R'.
        similarity (str): 'cosine' (default), 'ip' or 'l2'.
        device (str): 'auto', 'cpu' or 'gpu'.
        float16 (bool): float16 gallery storage (approximate).
        query_chunk (int, optional): Queries per search call.
        shard_rows (int, optional): Gallery rows per exact-search shard.
        curve_k (int): Also return 'recall_curve' (Recall@1..curve_k array).
        return_per_query (bool): Also return per-query values.

    Returns:
        dict: metric name -> value in percent, e.g. ``'Recall@1'``,
        ``'mAP@10'``, ``'AP@10'``, ``'mAP@R'``; plus ``'recall_curve'`` and
        ``'per_query'`` when asked (see :func:`evaluate_rankings`).

    Raises:
        ValueError: Malformed embeddings or labels, bad search settings, or
            see :func:`evaluate_rankings`.
    """
    if exclude_self is None:
        exclude_self = gallery_feats is None
    if gallery_feats is None:
        if not exclude_self:
            warnings.warn('the gallery is the queries and exclude_self=False: '
                          'every query retrieves itself first', stacklevel=2)
        gallery_feats = query_feats
        if gallery_labels is None:
            gallery_labels = query_labels
    query_feats = check_features(_as_search_input(query_feats), 'query embeddings')
    searcher = FaissSearcher(_as_search_input(gallery_feats), similarity, index,
                             device, float16, shard_rows)
    if query_feats.shape[1] != searcher.dim:
        check_features(query_feats, 'query embeddings', searcher.dim)
    relevance = Relevance(len(query_feats), searcher.ntotal, query_labels,
                          gallery_labels, query_gt, exclude_self)
    return evaluate_rankings(searcher, query_feats, relevance, topk, metric_names,
                             exclude_self, query_chunk, curve_k, return_per_query)


def image_text_retrieval_metrics(image_feats,
                                 text_feats,
                                 text_to_image,
                                 topk: Union[int, Sequence[int]] = (1, 5, 10),
                                 index: str = 'Flat',
                                 *,
                                 similarity: str = 'cosine',
                                 device: str = 'auto',
                                 float16: bool = False,
                                 query_chunk: Optional[int] = None) -> Dict[str, float]:
    """Image-to-text and text-to-image Recall@K (the Karpathy protocol).

    Each image has several captions. Image-to-text: an image query hits when
    any of its captions is in the top K texts; text-to-image: a caption hits
    when its image is in the top K images (COCO 5k / Flickr30k 1k test).

    Args:
        image_feats (np.ndarray | torch.Tensor): ``(n_images, d)``
            embeddings.
        text_feats (np.ndarray | torch.Tensor): ``(n_texts, d)`` embeddings,
            one per caption.
        text_to_image (np.ndarray | torch.Tensor | Sequence[int]):
            ``(n_texts, )`` index of each caption's image (a row of
            ``image_feats``).
        topk (int | Sequence[int]): Cut-offs K. Defaults to (1, 5, 10).
        index (str): 'Flat' (exact) or a faiss index-factory string
            (approximate, with a warning). Defaults to 'Flat'.
        similarity (str): 'cosine' (default), 'ip' or 'l2'.
        device (str): 'auto' (default), 'cpu' or 'gpu'.
        float16 (bool): float16 gallery storage (approximate). Defaults to
            False.
        query_chunk (int, optional): Queries per search call.

    Returns:
        dict: ``'i2t/Recall@K'`` and ``'t2i/Recall@K'`` in percent.

    Raises:
        ValueError: Malformed embeddings (or different dimensions), or a
            caption-to-image index outside ``[0, n_images)``.
    """
    image_feats = check_features(image_feats, 'image embeddings')
    text_feats = check_features(text_feats, 'text embeddings', image_feats.shape[1])
    n_img, n_txt = len(image_feats), len(text_feats)
    owner = check_labels(text_to_image, 'caption-to-image indices', n_txt)
    if owner.min() < 0 or owner.max() >= n_img:
        raise ValueError(f'caption-to-image indices must lie in [0, {n_img}), got '
                         f'[{owner.min()}, {owner.max()}]')
    image_ids = np.arange(n_img)
    out = {}
    # relevance by equal "label": a caption's label is its image's index
    texts = FaissSearcher(text_feats, similarity, index, device, float16)
    i2t = evaluate_rankings(texts, image_feats,
                            Relevance(n_img, n_txt, image_ids, owner),
                            topk, ('Recall', ), query_chunk=query_chunk)
    del texts
    images = FaissSearcher(image_feats, similarity, index, device, float16)
    t2i = evaluate_rankings(images, text_feats,
                            Relevance(n_txt, n_img, owner, image_ids),
                            topk, ('Recall', ), query_chunk=query_chunk)
    out.update({f'i2t/{k}': v for k, v in i2t.items()})
    out.update({f't2i/{k}': v for k, v in t2i.items()})
    return out
