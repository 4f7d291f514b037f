"""``ENNClassImageTextRetrievalMetric``: image<->text recall, relevance by class."""
from typing import Optional, Sequence, Union

import numpy as np
from mmengine.logging import print_log
from mmpretrain.registry import METRICS

from ..evaluation import FaissImageTextRetrievalMetric, retrieval_metrics
from ..evaluation.functional import check_metric_names
from ..evaluation.retrieval_metric import labels_of

__all__ = ['ENNClassImageTextRetrievalMetric']


@METRICS.register_module()
class ENNClassImageTextRetrievalMetric(FaissImageTextRetrievalMetric):
    """Class-level image<->text retrieval: a caption is relevant to every
    image of its class, not only to the image it is attached to.

    Inputs and gathering are those of :class:`FaissImageTextRetrievalMetric`
    in embedding mode (``FaissRetrievalTestLoop``; captions attached to
    image samples with ``gt_text_id``); additionally every image sample needs
    ``gt_label``, and a caption takes the label of the image carrying it
    (``ENNFashionMNISTCaptions`` attaches each class's captions to one image
    of that class). Search: exact faiss by default, as the parent.

    - ``i2t/Recall@K``: an image hits when a caption of its class is among
      its K best captions.
    - ``t2i/Recall@K``: a caption hits when an image of its class is among
      its K best images.

    With ``unseen_classes`` the same metrics are also reported per split,
    ``'seen/...'`` and ``'unseen/...'``: queries of the split's classes
    against a gallery of the split's classes only (for unseen classes, the
    zero-shot protocol: which of the classes never trained on does the text
    tower's wording single out).

    Args:
        metric_names (Sequence[str]): Any of ``'Recall'``, ``'Precision'``,
            ``'mAP'``, ``'AP'``, ``'mAP@R'`` (see ``retrieval_metrics``), for
            both directions. Defaults to ('Recall', ).
        unseen_classes (Sequence[str | int], optional): Classes held out of
            training, by name (of the dataset's ``classes``) or index.
            Defaults to None (no split).
        **kwargs: As for :class:`FaissImageTextRetrievalMetric`.

    Raises:
        ValueError: An unknown metric name, or see
            :class:`FaissImageTextRetrievalMetric`.
    """

    def __init__(self, metric_names: Sequence[str] = ('Recall', ),
                 unseen_classes: Optional[Sequence[Union[str, int]]] = None, **kwargs):
        super().__init__(**kwargs)
        self.metric_names = check_metric_names(metric_names)
        self.unseen_classes = None if unseen_classes is None else tuple(unseen_classes)

    def _unseen_ids(self, present) -> np.ndarray:
        """``unseen_classes`` as label indices, checked against the data."""
        classes = list((self.dataset_meta or {}).get('classes') or [])
        ids = []
        for c in self.unseen_classes:
            if isinstance(c, str):
                if c not in classes:
                    raise ValueError(f'unseen class {c!r} is not a class of the evaluated '
                                     f'dataset ({classes or "no classes in its metainfo"}); '
                                     'name one of them or give label indices')
                c = classes.index(c)
            ids.append(int(c))
        absent = sorted(set(ids) - set(present.tolist()))
        if absent:
            raise ValueError(f'unseen classes {absent} have no image in the evaluated data: '
                             'check unseen_classes against the test split')
        return np.asarray(ids)

    def process(self, data_batch, data_samples: Sequence) -> None:
        """As the parent; the image entries also keep ``gt_label``.

        Args:
            data_batch (dict | None): The dataloader's batch (unused).
            data_samples (Sequence): Image samples as for the parent's
                embedding mode, each also with one ``gt_label``.

        Raises:
            ValueError: The metric is not in embedding mode (e.g. the
                samples carry ``pred_score``), or see the parent.
            KeyError: An image sample has no single ``gt_label``, or see the
                parent.
        """
        start = len(self.results)
        super().process(data_batch, data_samples)
        if self._mode != 'feats':
            raise ValueError(f'{type(self).__name__} needs embeddings '
                             '(FaissRetrievalTestLoop), not pred_score')
        labels = labels_of(data_samples)
        if any(lb is None or len(lb) != 1 for lb in labels):
            raise KeyError('class-level retrieval needs one gt_label per image sample')
        for tag, part in self.results[start:]:
            if tag == 'i':
                part['label'] = np.concatenate(labels)

    def compute_from_parts(self, items: list, size) -> dict:
        """Merge images (with labels) and captions, search both ways.

        Args:
            items (list): Gathered ``(tag, part)`` pairs from :meth:`process`.
            size (int, optional): Expected number of distinct images; None
                skips the check.

        Returns:
            dict: ``'i2t/<name>'`` and ``'t2i/<name>'`` in percent for every
            key of :func:`retrieval_metrics` (``'Recall@1'``, ...,
            ``'mAP@R'``), unprefixed; with ``unseen_classes`` also
            ``'seen/i2t/<name>'``, ``'unseen/t2i/<name>'`` etc.

        Raises:
            ValueError: An unseen class that is not in the data.
        """
        images, texts, pos = self.merge_images_texts(items, size)
        img_labels, txt_labels = images['label'], images['label'][pos]
        print_log(f'{type(self).__name__}: {len(img_labels)} images, '
                  f'{len(txt_labels)} captions, {len(np.unique(img_labels))} '
                  'classes, relevance by class', logger='current')
        out = self._both_ways(images['feat'], texts['feat'], img_labels, txt_labels, '')
        if self.unseen_classes is not None:
            unseen = self._unseen_ids(np.unique(img_labels))
            for split, inside in (('seen', False), ('unseen', True)):
                im = np.isin(img_labels, unseen) == inside
                tm = np.isin(txt_labels, unseen) == inside
                if not im.any() or not tm.any():
                    raise ValueError(f'the {split} classes have no images or no captions in '
                                     'the evaluated data')
                out.update(self._both_ways(images['feat'][im], texts['feat'][tm],
                                           img_labels[im], txt_labels[tm], f'{split}/'))
        return out

    def _both_ways(self, img, txt, img_labels, txt_labels, prefix: str) -> dict:
        out = {}
        for name, q, g, ql, gl in (('i2t', img, txt, img_labels, txt_labels),
                                   ('t2i', txt, img, txt_labels, img_labels)):
            res = retrieval_metrics(q, g, ql, gl, self.topk, exclude_self=False,
                                    metric_names=self.metric_names, **self.search_cfg)
            out.update({f'{prefix}{name}/{k}': v for k, v in res.items()})
        return out
