"""``ENNClassSubset``: the samples of some classes of a dataset.

For retrieval on classes a model never saw: train on some classes, embed
and retrieve among the others, e.g. Fashion-MNIST classes 0-4 / 5-9.
"""
from typing import Sequence

import numpy as np

from mmpretrain.registry import DATASETS


def ENNClassSubset(dataset: dict, classes: Sequence[int]):
    """Build ``dataset`` and keep only the samples whose label is in ``classes``.

    Labels are kept as they are (a subset of classes 5-9 still says 5-9);
    ``sample_idx`` becomes the index within the subset, as retrieval needs.
    Use it wherever a dataset config goes::

        dataset=dict(type='ENNClassSubset', classes=[0, 1, 2, 3, 4],
                     dataset=dict(type='FashionMNIST', data_root=...,
                                  split='train', pipeline=...))

    Args:
        dataset (dict): Config of an MMPretrain dataset with single labels.
        classes (Sequence[int]): Label values to keep.
    """
    built = DATASETS.build(dataset)
    keep = np.asarray(sorted({int(c) for c in classes}), dtype=np.int64)
    if not len(keep):
        raise ValueError('ENNClassSubset needs at least one class')
    labels = np.asarray(built.get_gt_labels(), dtype=np.int64)
    indices = np.flatnonzero(np.isin(labels, keep))
    if not len(indices):
        raise ValueError(f'no sample of {type(built).__name__} has a label in '
                         f'{keep.tolist()} (labels present: '
                         f'{np.unique(labels).tolist()})')
    return built.get_subset(indices.tolist())


DATASETS.register_module(name='ENNClassSubset', module=ENNClassSubset)
