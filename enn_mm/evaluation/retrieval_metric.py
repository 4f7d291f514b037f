"""``FaissRetrievalMetric``: image-to-image retrieval metrics for configs."""
import logging
from typing import List, Optional, Sequence, Union

import numpy as np
from mmengine.dist import get_world_size
from mmengine.evaluator import BaseMetric
from mmengine.logging import print_log
from mmpretrain.registry import METRICS

from .functional import (
    DEFAULT_METRICS,
    Relevance,
    check_metric_names,
    check_topk,
    evaluate_rankings,
)
from .gather import collect_parts, compute_on_main, merge_parts
from .search import SIMILARITIES, FaissSearcher, to_numpy

LOOP_HINT = ("set val_cfg = dict(type='FaissRetrievalValLoop') / test_cfg = "
             "dict(type='FaissRetrievalTestLoop'), which put the model's "
             "extract_feat output into the data samples")


def features_of(data_samples: Sequence, key: str, who: str) -> np.ndarray:
    """Stack the per-sample embeddings ``key`` of a batch into (B, d).

    Args:
        data_samples (Sequence[dict]): The batch's data samples (dicts or
            ``DataSample``).
        key (str): The field holding each sample's embedding.
        who (str): Who asks, for the error message.

    Returns:
        np.ndarray: ``(B, d)`` float32, each embedding flattened.

    Raises:
        KeyError: A sample has no ``key`` (the loop did not embed it).
    """
    feats = []
    for ds in data_samples:
        feat = ds.get(key) if hasattr(ds, 'get') else None
        if feat is None:
            raise KeyError(f'{who} found no {key!r} embedding in the data '
                           f'samples; {LOOP_HINT}')
        feats.append(to_numpy(feat, key).astype(np.float32, copy=False).ravel())
    return np.stack(feats)


def indices_of(data_samples: Sequence, key: str = 'sample_idx') -> Optional[np.ndarray]:
    """Dataset index of each sample, or None if a sample has none.

    Args:
        data_samples (Sequence[dict]): The batch's data samples.
        key (str): The field holding the index. Defaults to 'sample_idx'.

    Returns:
        np.ndarray | None: ``(B, )`` int64 indices (the first element of
        each value), or None.
    """
    idx = [ds.get(key) for ds in data_samples]
    if any(i is None for i in idx):
        return None
    return np.asarray([int(to_numpy(i, key).ravel()[0]) for i in idx], np.int64)


def labels_of(data_samples: Sequence, key: str = 'gt_label') -> list:
    """Each sample's ground truth as an int64 array (None where absent).

    Args:
        data_samples (Sequence[dict]): The batch's data samples.
        key (str): The ground-truth field. Defaults to 'gt_label'.

    Returns:
        list: Per sample, a flat int64 array or None.
    """
    out = []
    for ds in data_samples:
        gt = ds.get(key)
        out.append(None if gt is None else
                   to_numpy(gt, key).astype(np.int64).ravel())
    return out


class FaissMetricBase(BaseMetric):
    """What the faiss retrieval metrics share: the checked cut-offs
    (``self.topk``) and search settings (``self.search_cfg``, the keyword
    arguments of the search), and mmengine's collection arguments.

    Args:
        topk (int | Sequence[int]): Cut-offs K.
        search_cfg (dict): ``similarity`` (checked against ``SIMILARITIES``),
            ``index``, ``device``, ``float16`` and any further search option.
        collect_device (str): 'cpu' or 'gpu': how results are gathered
            across ranks, as in mmengine's BaseMetric. Defaults to 'cpu'.
        prefix (str, optional): Prefix of the metric keys. Defaults to None,
            i.e. ``default_prefix`` ('retrieval').
        collect_dir (str, optional): Shared folder for gathering with
            ``collect_device='cpu'``. Defaults to None (a temporary one).

    Raises:
        ValueError: Invalid ``topk`` or ``similarity``, or ``collect_dir``
            with ``collect_device='gpu'``.
    """
    default_prefix: Optional[str] = 'retrieval'

    def __init__(self, topk: Union[int, Sequence[int]], search_cfg: dict,
                 collect_device: str = 'cpu', prefix: Optional[str] = None,
                 collect_dir: Optional[str] = None) -> None:
        super().__init__(collect_device=collect_device, prefix=prefix,
                         collect_dir=collect_dir)
        self.topk = check_topk(topk)
        if search_cfg.get('similarity') not in SIMILARITIES:
            raise ValueError(f'similarity must be one of {SIMILARITIES}')
        self.search_cfg = search_cfg


@METRICS.register_module()
class FaissRetrievalMetric(FaissMetricBase):
    """Image-to-image retrieval metrics with an exact faiss search.

    Queries are the evaluation dataloader's samples, embedded by the loop
    (``FaissRetrievalValLoop`` / ``FaissRetrievalTestLoop``) with the model's
    ``extract_feat``. The gallery is one of:

    - ``None``: the queries themselves, each query's own item excluded
      (``exclude_self`` defaults to True then);
    - a dataloader config (a dict with ``dataset``): embedded by the loop
      with the same model, e.g. MMPretrain's InShop ``gallery`` split;
    - ``dict(feats='gallery.npy', labels='gallery_labels.npy')``: saved
      embeddings (``tools/retrieval_eval.py --save-feats``), read as a
      memmap and searched shard by shard; ``labels`` is optional.

    Relevance (``relevance='auto'``): equal ``gt_label`` when the gallery
    items have labels, else the query's ``gt_label`` lists the relevant
    gallery indices (MMPretrain's InShop query split).

    Under DDP every rank embeds its share of queries and gallery; the
    features are gathered to the main process, where each dataset index is
    kept once (the distributed sampler's padding repeats some), so the
    numbers equal a single-process run.

    Args:
        topk (int | Sequence[int]): Cut-offs K. Defaults to (1, 5, 10).
        metric_names (Sequence[str]): From 'Recall' (MMPretrain's hit rate),
            'Precision', 'mAP' (MMPretrain's AP normalized by the number of
            relevant items), 'AP' (normalized by min(K, #relevant)) and
            'mAP@R'. Defaults to all but 'mAP@R'. Keys are ``'Recall@1'`` etc.
        gallery (dict, optional): See above. Defaults to None.
        exclude_self (bool, optional): Drop query ``i``'s own item from its
            ranking; defaults to ``gallery is None``.
        relevance (str): 'auto', 'label' or 'index'. Defaults to 'auto'.
        feat_key (str): The data-sample field holding the embedding.
            Defaults to 'image_feat' (what the loops write).
        similarity (str): 'cosine', 'ip' or 'l2'. Defaults to 'cosine'
            (MMPretrain's ``ImageToImageRetriever`` default).
        index (str): 'Flat' (exact) or a faiss index-factory string
            (approximate, logged as such). Defaults to 'Flat'.
        device (str): 'auto' (all GPUs with faiss-gpu), 'cpu' or 'gpu'.
        float16 (bool): float16 gallery storage (approximate).
        query_chunk (int, optional): Queries per faiss call.
        shard_rows (int, optional): Gallery rows per exact-search shard.
        collect_device (str): 'cpu' or 'gpu', as in mmengine's BaseMetric.
        prefix (str, optional): Defaults to 'retrieval'.
        collect_dir (str, optional): As in mmengine's BaseMetric.

    Raises:
        TypeError: ``gallery`` is neither None nor a dict.
        ValueError: ``gallery`` has neither ``dataset`` nor ``feats``,
            ``exclude_self=True`` with a gallery, an unknown ``relevance``,
            or invalid ``topk``, ``metric_names`` or ``similarity``.
    """

    def __init__(self,
                 topk: Union[int, Sequence[int]] = (1, 5, 10),
                 metric_names: Sequence[str] = DEFAULT_METRICS,
                 gallery: Optional[dict] = None,
                 exclude_self: Optional[bool] = None,
                 relevance: str = 'auto',
                 feat_key: str = 'image_feat',
                 similarity: str = 'cosine',
                 index: str = 'Flat',
                 device: str = 'auto',
                 float16: bool = False,
                 query_chunk: Optional[int] = None,
                 shard_rows: Optional[int] = None,
                 collect_device: str = 'cpu',
                 prefix: Optional[str] = None,
                 collect_dir: Optional[str] = None) -> None:
        super().__init__(topk, dict(similarity=similarity, index=index, device=device,
                                    float16=float16, shard_rows=shard_rows),
                         collect_device, prefix, collect_dir)
        # (not `metrics`: mmengine reads an evaluator config with a `metrics`
        # key as an Evaluator, not a metric)
        self.metric_names = check_metric_names(metric_names)
        if gallery is not None and not isinstance(gallery, dict):
            raise TypeError('gallery must be None, a dataloader config or '
                            f'dict(feats=..., labels=...), got {type(gallery)}')
        if gallery is not None and 'dataset' not in gallery and 'feats' not in gallery:
            raise ValueError('gallery must be a dataloader config (with a '
                             "'dataset') or dict(feats='x.npy', labels='y.npy')"
                             f'; got keys {sorted(gallery)}')
        self.gallery = gallery
        self.exclude_self = gallery is None if exclude_self is None else exclude_self
        if self.exclude_self and gallery is not None:
            raise ValueError('exclude_self=True needs gallery=None (the queries '
                             'are the gallery)')
        if relevance not in ('auto', 'label', 'index'):
            raise ValueError("relevance must be 'auto', 'label' or 'index', got "
                             f'{relevance!r}')
        self.relevance = relevance
        self.feat_key = feat_key
        self.query_chunk = query_chunk
        self._gallery_parts: List[dict] = []
        self._gallery_size: Optional[int] = None
        self._missing_idx = False

    # ------------------------------------------------------- the loop's side
    @property
    def gallery_dataloader(self) -> Optional[dict]:
        """The gallery dataloader config the loop must embed, if any."""
        if self.gallery is not None and 'dataset' in self.gallery:
            return self.gallery
        return None

    @property
    def gallery_parts(self) -> List[dict]:
        """The embedded gallery batches kept by :meth:`add_gallery` (this rank's)."""
        return self._gallery_parts

    def reset_gallery(self, size: int) -> None:
        """Start a new gallery of ``size`` items (the gallery dataset length).

        Args:
            size (int): Length of the gallery dataset; :meth:`merge` checks
                the number of distinct gathered gallery samples against it.
        """
        self._gallery_parts = []
        self._gallery_size = size

    def add_gallery(self, data_samples: Sequence) -> None:
        """Keep one batch of this rank's embedded gallery samples.

        Args:
            data_samples (Sequence): The batch's data samples (as
                :func:`embed_batch` returns them), each with ``sample_idx``,
                the ``feat_key`` embedding and, optionally, ``gt_label``.

        Raises:
            KeyError: A sample lacks ``sample_idx`` or its embedding.
        """
        idx = indices_of(data_samples)
        if idx is None:
            raise KeyError("gallery samples lack 'sample_idx' (needed to "
                           "match InShop-style ground truth and to drop DDP "
                           "padding): keep 'sample_idx' in PackInputs' meta_keys")
        self._gallery_parts.append(dict(
            idx=idx, feat=features_of(data_samples, self.feat_key, 'gallery'),
            gt=labels_of(data_samples)))

    # ---------------------------------------------------------- the queries
    def process(self, data_batch, data_samples: Sequence[dict]) -> None:
        """Keep the batch's query embeddings, dataset indices and labels.

        Without ``sample_idx`` the samples are numbered in arrival order,
        which only a single process allows (:meth:`evaluate` refuses it
        under DDP).

        Args:
            data_batch (dict | None): The dataloader's batch (unused).
            data_samples (Sequence[dict]): The query batch's data samples,
                with the ``feat_key`` embedding, ``gt_label`` and
                ``sample_idx``.

        Raises:
            KeyError: A sample has no ``feat_key`` embedding.
        """
        idx = indices_of(data_samples)
        if idx is None:  # only valid without DDP: arrival order then
            offset = sum(len(p['idx']) for p in self.results)
            idx = np.arange(offset, offset + len(data_samples))
            self._missing_idx = True
        self.results.append(dict(
            idx=idx, feat=features_of(data_samples, self.feat_key, type(self).__name__),
            gt=labels_of(data_samples)))

    def evaluate(self, size: int) -> dict:
        """Gather queries (and an embedded gallery) from all ranks, compute
        the metrics on the main process and broadcast them.

        Overrides BaseMetric's version: its truncation to ``size`` assumes
        one result per sample, here one entry holds a batch.

        Args:
            size (int): Length of the query dataset: the number of distinct
                query samples gathered must equal it.

        Returns:
            dict: ``'{prefix}/Recall@1'`` etc. in percent, the same on every
            rank.

        Raises:
            KeyError: Query samples lacked ``sample_idx`` under DDP.
        """
        if self._missing_idx and get_world_size() > 1:
            raise KeyError("query samples lack 'sample_idx', needed to drop the "
                           "distributed sampler's padding: keep 'sample_idx' in "
                           "PackInputs' meta_keys")
        # One collective for both, so a shared collect_dir is never reused
        # while another rank still reads it.
        items = [('q', p) for p in self.results]
        items += [('g', p) for p in self._gallery_parts]
        items = collect_parts(items, self.collect_device, self.collect_dir)
        metrics = compute_on_main(lambda: self.compute_from_parts(
            [p for tag, p in items if tag == 'q'], [p for tag, p in items if tag == 'g'], size),
            self.prefix)
        self.results.clear()
        self._gallery_parts = []
        self._missing_idx = False
        return metrics

    def compute_metrics(self, results: list) -> dict:
        """Metrics of single-process results (see :meth:`evaluate`).

        Args:
            results (list): The query entries kept by :meth:`process`.

        Returns:
            dict: Metric name (``'Recall@1'``, ...) -> percent, unprefixed.
        """
        return self.compute_from_parts(results, self._gallery_parts, None)

    # ------------------------------------------------------------- compute
    def compute_from_parts(self, query_parts: List[dict],
                           gallery_parts: List[dict], size: Optional[int]) -> dict:
        """Merge gathered parts, build the gallery, search and score.

        Args:
            query_parts (List[dict]): Gathered query entries (``idx``,
                ``feat``, ``gt``).
            gallery_parts (List[dict]): Gathered gallery entries (used only
                when the gallery is a dataloader).
            size (int, optional): Expected number of distinct queries; None
                skips the check.

        Returns:
            dict: Metric name (``'Recall@1'``, ...) -> percent, unprefixed.
        """
        data = self.merge(query_parts, gallery_parts, size)
        searcher = self.build_searcher(data['gallery'], len(data['query']))
        return evaluate_rankings(searcher, data['query'], data['relevance'], self.topk,
                                 self.metric_names, self.exclude_self,
                                 self.query_chunk)

    def merge(self, query_parts: List[dict], gallery_parts: List[dict],
              size: Optional[int]):
        """Gathered parts -> dict of ``query``/``gallery`` embeddings, their
        ground truth ``query_gt``/``gallery_gt`` and the ``relevance``.

        ``tools/retrieval_eval.py`` uses this too, to save what it scores.

        Args:
            query_parts (List[dict]): Gathered query entries (``idx``,
                ``feat``, ``gt``).
            gallery_parts (List[dict]): Gathered gallery entries (used only
                when the gallery is a dataloader).
            size (int, optional): Expected number of distinct queries; None
                skips the check.

        Returns:
            dict: ``query`` ``(n, d)`` and ``gallery`` ``(N, d)`` embeddings
            (the query embeddings themselves without a gallery, a memmap or
            array for saved features), ``relevance`` (:class:`Relevance`),
            ``query_gt`` (per query, an int64 array or None) and
            ``gallery_gt`` (such a list, the saved labels array, or None).

        Raises:
            ValueError: No parts, saved labels that do not match the saved
                embeddings, queries without ``gt_label``, or ground truth
                that does not fit the ``relevance`` mode.
            RuntimeError: The gathered sample counts differ from the dataset
                lengths, or the indices are not ``0..n-1``.
        """
        q = merge_parts(query_parts, size, 'query')
        if self.gallery is None:
            g_feat, g_gt = q['feat'], q['gt']
        elif self.gallery_dataloader is not None:
            g = merge_parts(gallery_parts, self._gallery_size, 'gallery')
            g_feat, g_gt = g['feat'], g['gt']
        else:
            g_feat, g_gt = self._load_saved_gallery()
        relevance = self._relevance(q['gt'], g_gt, len(q['feat']), len(g_feat))
        return dict(query=q['feat'], gallery=g_feat, relevance=relevance,
                    query_gt=q['gt'], gallery_gt=g_gt)

    def build_searcher(self, gallery, num_queries: int) -> FaissSearcher:
        """The faiss searcher of ``gallery``, logged with its kind.

        Args:
            gallery (np.ndarray | np.memmap | torch.Tensor): ``(N, d)``
                gallery embeddings.
            num_queries (int): Number of queries, for the log line.

        Returns:
            FaissSearcher: Built with ``self.search_cfg``; an approximate
            search is also logged as a warning.
        """
        searcher = FaissSearcher(gallery, **self.search_cfg)
        print_log(f'{type(self).__name__}: {num_queries} queries, '
                  f'{searcher.description}', logger='current')
        if not searcher.exact:
            print_log('retrieval metrics below come from an APPROXIMATE search',
                      logger='current', level=logging.WARNING)
        return searcher

    def _load_saved_gallery(self):
        feats = self.gallery['feats']
        feats = np.load(feats, mmap_mode='r') if isinstance(feats, str) else feats
        labels = self.gallery.get('labels')
        if isinstance(labels, str):
            labels = np.load(labels)
        if labels is not None:
            labels = to_numpy(labels, 'gallery labels').ravel()
            if len(labels) != len(feats):
                raise ValueError(f'the saved gallery has {len(feats)} embeddings '
                                 f'but {len(labels)} labels')
        return feats, labels

    def _relevance(self, q_gt, g_gt, nq, ng) -> Relevance:
        if any(gt is None for gt in q_gt):
            raise ValueError("some query samples have no 'gt_label': retrieval "
                             'metrics need the ground truth of every query')
        if isinstance(g_gt, np.ndarray):  # saved labels: one per item
            g_has_labels, g_labels = True, g_gt
        else:
            g_has_labels = g_gt is not None and all(
                gt is not None and len(gt) == 1 for gt in g_gt)
            g_labels = np.concatenate(g_gt) if g_has_labels else None
        mode = self.relevance
        if mode == 'auto':
            mode = 'label' if g_has_labels else 'index'
        if mode == 'label':
            if not g_has_labels:
                raise ValueError('relevance by label needs one gt_label per '
                                 'gallery item, and some gallery items have '
                                 "none (for InShop-style data use relevance="
                                 "'index')")
            if any(len(gt) != 1 for gt in q_gt):
                raise ValueError("a query's gt_label holds several values; if "
                                 'they are relevant gallery indices (InShop), '
                                 "set relevance='index'")
            return Relevance(nq, ng, np.concatenate(q_gt), g_labels,
                             exclude_self=self.exclude_self)
        return Relevance(nq, ng, query_gt=q_gt, exclude_self=self.exclude_self)
