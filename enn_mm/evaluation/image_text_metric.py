"""``FaissImageTextRetrievalMetric``: image<->text Recall@K (Karpathy)."""
from typing import List, Optional, Sequence, Union

# MMPretrain registers its retrieval datasets only when `transformers` is
# installed (for its own text models); they need nothing of it, and dual
# encoders of other origins use them too.
import mmpretrain.datasets.coco_retrieval  # noqa: F401,E402
import mmpretrain.datasets.flickr30k_retrieval  # noqa: F401,E402
import numpy as np
from mmengine.logging import print_log
from mmpretrain.registry import METRICS

from .functional import image_text_retrieval_metrics
from .gather import collect_parts, compute_on_main, merge_parts
from .retrieval_metric import LOOP_HINT, FaissMetricBase, features_of, indices_of
from .search import to_numpy, topk_of_scores


def _texts_of(sample) -> list:
    text = sample.get('text')
    if text is None:
        return []
    return list(text) if isinstance(text, (list, tuple)) else [text]


@METRICS.register_module()
class FaissImageTextRetrievalMetric(FaissMetricBase):
    """Image-to-text and text-to-image Recall@K, several captions per image.

    The Karpathy COCO 5k / Flickr30k 1k protocol: an image query hits at K
    when any of its captions is among the K best texts, a caption query when
    its image is among the K best images. Two ways to feed it:

    - Embeddings (exact faiss search, DDP-correct): with
      ``test_cfg = dict(type='FaissRetrievalTestLoop')`` on an MMPretrain
      retrieval dataset in ``test_mode`` (``COCORetrieval``,
      ``Flickr30kRetrieval``: one sample per image with its captions). The
      loop runs the model in ``'tensor'`` mode (``extract_feat(images,
      data_samples)``), which for dual encoders such as ``BlipRetrieval``
      returns ``image_feat`` and ``text_feat``. Images are identified by
      ``image_id`` (or ``sample_idx``), captions by ``gt_text_id``; repeats
      from the distributed sampler's padding are dropped. Keys:
      ``i2t/Recall@K`` and ``t2i/Recall@K``. The ranking is the embedding
      similarity (BLIP's ``fast_match``; no ITM re-ranking).
    - Score matrices: with MMPretrain's ``RetrievalTestLoop``, whose model
      ``predict_all`` yields samples with ``pred_score`` over the whole
      gallery and ``gt_label``. The loop evaluates i2t and t2i separately
      and prefixes the keys itself (``i2t/retrieval/Recall@K``). Only the
      top-K indices of each sample are kept, not the score rows.

    Ties rank by ascending gallery index in both modes.

    Args:
        topk (int | Sequence[int]): Cut-offs. Defaults to (1, 5, 10).
        image_key (str): Data-sample field of the image embedding.
            Defaults to 'image_feat'.
        text_key (str): Data-sample field of the caption embeddings, one
            row per caption in the order of ``text``. Defaults to 'text_feat'.
        similarity (str): 'cosine' (default), 'ip' or 'l2'.
        index (str): 'Flat' (exact) or a faiss index-factory string.
        device (str): 'auto', 'cpu' or 'gpu'.
        float16 (bool): float16 gallery storage (approximate).
        collect_device (str): 'cpu' or 'gpu': how results are gathered
            across ranks, as in mmengine's BaseMetric. Defaults to 'cpu'.
        prefix (str, optional): Prefix of the metric keys
            (``'{prefix}/i2t/Recall@1'``). Defaults to None, i.e.
            ``'retrieval'``.
        collect_dir (str, optional): Shared folder for gathering with
            ``collect_device='cpu'``. Defaults to None (a temporary one).

    Raises:
        ValueError: Invalid ``topk`` or ``similarity``, or ``collect_dir``
            with ``collect_device='gpu'``.
    """

    def __init__(self,
                 topk: Union[int, Sequence[int]] = (1, 5, 10),
                 image_key: str = 'image_feat',
                 text_key: str = 'text_feat',
                 similarity: str = 'cosine',
                 index: str = 'Flat',
                 device: str = 'auto',
                 float16: bool = False,
                 collect_device: str = 'cpu',
                 prefix: Optional[str] = None,
                 collect_dir: Optional[str] = None) -> None:
        super().__init__(topk, dict(similarity=similarity, index=index, device=device,
                                    float16=float16),
                         collect_device, prefix, collect_dir)
        self.image_key = image_key
        self.text_key = text_key
        self.text_size: Optional[int] = None  # set by the loop, checked
        self._mode: Optional[str] = None

    # The loop asks for the model's 'tensor' output (images and texts).
    needs_texts = True

    def _set_mode(self, mode: str) -> None:
        if self._mode not in (None, mode):
            raise ValueError('data samples mix embeddings and pred_score; feed '
                             'one kind per evaluation')
        self._mode = mode

    def process(self, data_batch, data_samples: Sequence[dict]) -> None:
        """Keep embeddings (and ids), or the top-K of each score row.

        Embedding mode (the default): appends an
        ``('i', dict(idx, feat))`` entry for the images and a
        ``('t', dict(idx, feat, owner))`` entry for their captions to
        ``self.results``. Score mode (the first sample has ``pred_score``
        and no ``image_key``): appends each sample's 1-based rank of its first relevant item in the
        top ``max(topk)`` (0 if none).

        Args:
            data_batch (dict | None): The dataloader's batch (unused).
            data_samples (Sequence[dict]): Embedding mode: ``image_key``,
                ``text_key`` (one row per caption), ``gt_text_id`` and
                ``image_id`` or ``sample_idx``. Score mode:
                ``pred_score`` and ``gt_label``.

        Raises:
            KeyError: A field that the mode needs is missing.
            ValueError: An image's numbers of captions, ``gt_text_id`` and
                text embeddings differ, or the batches of one evaluation mix
                the two modes.
        """
        if not data_samples:
            return
        first = data_samples[0]
        if first.get(self.image_key) is None and first.get('pred_score') is not None:
            self._set_mode('scores')
            self._process_scores(data_samples)
            return
        self._set_mode('feats')
        idx = indices_of(data_samples, 'image_id')
        if idx is None:
            idx = indices_of(data_samples, 'sample_idx')
        if idx is None:
            raise KeyError("image samples carry neither 'image_id' nor "
                           "'sample_idx' (PackInputs meta_keys)")
        image_feat = features_of(data_samples, self.image_key, type(self).__name__)
        text_ids, owners, text_feats = [], [], []
        for img_id, ds in zip(idx, data_samples):
            n = len(_texts_of(ds))
            gt_text = ds.get('gt_text_id')
            if gt_text is None:
                raise KeyError("image samples lack 'gt_text_id': add it to "
                               "PackInputs' algorithm_keys (as MMPretrain's "
                               'retrieval test pipelines do) and use test_mode')
            gt_text = to_numpy(gt_text, 'gt_text_id').astype(np.int64).ravel()
            feats = ds.get(self.text_key)
            if feats is None:
                raise KeyError(f'no {self.text_key!r} in the data samples; '
                               f'{LOOP_HINT}')
            feats = to_numpy(feats, self.text_key).astype(np.float32, copy=False)
            feats = feats.reshape(-1, feats.shape[-1])
            if not len(gt_text) == len(feats) == (n or len(gt_text)):
                raise ValueError(f'image {img_id}: {n} captions, {len(gt_text)} '
                                 f'gt_text_id and {len(feats)} text embeddings')
            text_ids.append(gt_text)
            owners.append(np.full(len(gt_text), img_id, np.int64))
            text_feats.append(feats)
        self.results.append(('i', dict(idx=idx, feat=image_feat)))
        self.results.append(('t', dict(idx=np.concatenate(text_ids),
                                       feat=np.concatenate(text_feats),
                                       owner=np.concatenate(owners))))

    def _process_scores(self, data_samples) -> None:
        kmax = max(self.topk)
        for ds in data_samples:
            gt = ds.get('gt_label')
            if gt is None:
                raise KeyError("samples with pred_score need 'gt_label' (the "
                               'relevant gallery indices)')
            top = topk_of_scores(ds['pred_score'], kmax)[0]
            rel = np.isin(top, to_numpy(gt, 'gt_label').astype(np.int64).ravel())
            # 1-based rank of the first hit, 0 if none in the top kmax
            self.results.append(int(rel.argmax()) + 1 if rel.any() else 0)

    def evaluate(self, size: int) -> dict:
        """Score mode: BaseMetric's per-sample collection. Embedding mode:
        gather images and captions, drop padding repeats, search, score.

        Args:
            size (int): Length of the evaluation dataset; in embedding mode
                the number of distinct images gathered must equal it.

        Returns:
            dict: The prefixed metrics (``'retrieval/i2t/Recall@1'``, ... in
            embedding mode, ``'retrieval/Recall@1'``, ... in score mode), the
            same on every rank.
        """
        mode, self._mode = self._mode, None
        if mode != 'feats':
            return super().evaluate(size)
        items = collect_parts(self.results, self.collect_device, self.collect_dir)
        metrics = compute_on_main(lambda: self.compute_from_parts(items, size), self.prefix)
        self.results.clear()
        return metrics

    def compute_metrics(self, results: List) -> dict:
        """Recall@K from per-sample first-hit ranks (score mode).

        Args:
            results (list): Per sample, the 1-based rank of its first
                relevant item in the top ``max(topk)`` (0 if none).

        Returns:
            dict: ``'Recall@K'`` -> percent of samples with a hit at rank
            <= K, for each K in ``topk`` (unprefixed).
        """
        first_hit = np.asarray(results, dtype=np.int64)
        hit = first_hit > 0
        return {f'Recall@{k}': 100.0 * float(np.mean(hit & (first_hit <= k)))
                for k in self.topk}

    def merge_images_texts(self, items: list, size: Optional[int]) -> tuple:
        """Gathered ``('i', part)`` / ``('t', part)`` items -> ``(images,
        texts, pos)``: the merged image and caption entries (each sorted by
        id, padding repeats dropped) and, for each caption, the row of its
        image in ``images``.

        Args:
            items (list): Gathered ``(tag, part)`` pairs from :meth:`process`.
            size (int, optional): Expected number of distinct images; None
                skips the check. Captions are checked against
                ``self.text_size`` (set by the loop) likewise.

        Returns:
            tuple: ``(images, texts, pos)``: dicts of ``idx`` and ``feat``
            (``texts`` also ``owner``, each caption's image id) and the
            ``(n_texts, )`` row of each caption's image in ``images``.

        Raises:
            RuntimeError: A caption's image was not gathered, or the number
                of distinct images or captions is not the expected one.
            ValueError: No image or no caption was gathered.
        """
        images = merge_parts([p for tag, p in items if tag == 'i'], size, 'image',
                             contiguous=False)
        texts = merge_parts([p for tag, p in items if tag == 't'], self.text_size,
                            'caption', contiguous=False)
        pos = np.searchsorted(images['idx'], texts['owner'])
        pos = np.minimum(pos, len(images['idx']) - 1)
        if (images['idx'][pos] != texts['owner']).any():
            raise RuntimeError('some captions belong to images that were not '
                               'gathered')
        return images, texts, pos

    def compute_from_parts(self, items: list, size: Optional[int]) -> dict:
        """Merge gathered images and captions and run both searches.

        Args:
            items (list): Gathered ``(tag, part)`` pairs from :meth:`process`.
            size (int, optional): Expected number of distinct images; None
                skips the check.

        Returns:
            dict: ``'i2t/Recall@K'`` and ``'t2i/Recall@K'`` in percent
            (unprefixed).
        """
        images, texts, pos = self.merge_images_texts(items, size)
        print_log(f'{type(self).__name__}: {len(images["idx"])} images, '
                  f'{len(texts["idx"])} captions, faiss '
                  f'{self.search_cfg["index"]} search', logger='current')
        return image_text_retrieval_metrics(images['feat'], texts['feat'], pos,
                                            self.topk, **self.search_cfg)
