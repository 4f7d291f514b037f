"""``ENNClassSubset``: the samples of some classes of a dataset.

For retrieval on classes a model never saw: train on some classes, embed
and retrieve among the others, e.g. Fashion-MNIST classes 0-4 / 5-9; and for
a class-stratified training subset (``per_class``) at a smaller budget.
"""
from typing import Optional, Sequence

import numpy as np

from mmpretrain.registry import DATASETS
from ..deprecation import deprecated_alias


def enn_class_subset(dataset: dict, classes: Optional[Sequence[int]] = None,
                   per_class: Optional[int] = None):
    """Build ``dataset`` and keep only the samples whose label is in ``classes``
    (and, with ``per_class``, only the first ``per_class`` of each).

    Labels are kept as they are (a subset of classes 5-9 still says 5-9);
    ``sample_idx`` becomes the index within the subset, as retrieval needs.
    Use it wherever a dataset config goes::

        dataset=dict(type='ENNClassSubset', classes=[0, 1, 2, 3, 4],
                     dataset=dict(type='FashionMNIST', data_root=...,
                                  split='train', pipeline=...))

    Args:
        dataset (dict): Config of an MMPretrain dataset with single labels.
        classes (Sequence[int], optional): Label values to keep. Defaults to
            every label present.
        per_class (int, optional): Keep the first ``per_class`` samples (in
            dataset order) of each kept class: a class-stratified subset.
    """
    built = DATASETS.build(dataset)
    labels = np.asarray(built.get_gt_labels(), dtype=np.int64)
    if classes is None:
        classes = np.unique(labels).tolist()
    keep = np.asarray(sorted({int(c) for c in classes}), dtype=np.int64)
    if not len(keep):
        raise ValueError('ENNClassSubset needs at least one class')
    if per_class is not None and (not isinstance(per_class, int) or per_class < 1):
        raise ValueError(f'per_class must be a positive integer, got {per_class!r}.')
    indices = np.flatnonzero(np.isin(labels, keep))
    if per_class is not None:
        short = {int(c): int((labels == c).sum()) for c in keep if (labels == c).sum() < per_class}
        if short:
            raise ValueError(f'per_class={per_class}, but some classes have fewer samples: '
                             f'{short}. Lower per_class.')
        rank = np.zeros(len(labels), dtype=np.int64)  # position within its class
        for c in keep:
            where = np.flatnonzero(labels == c)
            rank[where] = np.arange(len(where))
        indices = indices[rank[indices] < per_class]
    if not len(indices):
        raise ValueError(f'no sample of {type(built).__name__} has a label in '
                         f'{keep.tolist()} (labels present: '
                         f'{np.unique(labels).tolist()})')
    return built.get_subset(indices.tolist())


DATASETS.register_module(name='ENNClassSubset', module=enn_class_subset)

ENNClassSubset = deprecated_alias(enn_class_subset, 'ENNClassSubset')
