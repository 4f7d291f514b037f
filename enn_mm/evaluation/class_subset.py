"""``ENNClassSubset``: the samples of some classes of a dataset.

For retrieval on classes a model never saw: train on some classes, embed
and retrieve among the others, e.g. Fashion-MNIST classes 0-4 / 5-9; and for
a class-stratified training subset (``per_class``) at a smaller budget.
"""
from typing import Optional, Sequence

import numpy as np
from mmpretrain.registry import DATASETS
from torch.utils.data import Dataset

__all__ = ['ENNClassSubset']


@DATASETS.register_module()
class ENNClassSubset(Dataset):
    """The samples of some classes of a dataset (a dataset wrapper, as
    mmengine's ``ConcatDataset`` / ``ClassBalancedDataset`` are).

    Labels are kept as they are (a subset of classes 5-9 still says 5-9);
    ``sample_idx`` becomes the index within the subset, as retrieval needs.
    Use it wherever a dataset config goes::

        dataset=dict(type='ENNClassSubset', classes=[0, 1, 2, 3, 4],
                     dataset=dict(type='FashionMNIST', data_root=...,
                                  split='train', pipeline=...))

    Args:
        dataset (dict | BaseDataset): An MMPretrain dataset with single
            labels, or its config.
        classes (Sequence[int], optional): Label values to keep. Defaults to
            every label present.
        per_class (int, optional): Keep the first ``per_class`` samples (in
            dataset order) of each kept class: a class-stratified subset.
            Defaults to None (all samples of the kept classes).

    Raises:
        ValueError: ``classes`` is empty, ``per_class`` is not a positive
            int or exceeds the size of a kept class, or no sample has a kept
            label.
    """

    def __init__(self, dataset, classes: Optional[Sequence[int]] = None,
                 per_class: Optional[int] = None):
        built = DATASETS.build(dataset) if isinstance(dataset, dict) else dataset
        indices = self._indices(built, classes, per_class)
        #: the subset itself (``BaseDataset.get_subset``): what is read
        self.dataset = built.get_subset(indices.tolist())

    @staticmethod
    def _indices(built, classes, per_class) -> np.ndarray:
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
            short = {int(c): int((labels == c).sum()) for c in keep
                     if (labels == c).sum() < per_class}
            if short:
                raise ValueError(f'per_class={per_class}, but some classes have fewer '
                                 f'samples: {short}. Lower per_class.')
            rank = np.zeros(len(labels), dtype=np.int64)  # position within its class
            for c in keep:
                where = np.flatnonzero(labels == c)
                rank[where] = np.arange(len(where))
            indices = indices[rank[indices] < per_class]
        if not len(indices):
            raise ValueError(f'no sample of {type(built).__name__} has a label in '
                             f'{keep.tolist()} (labels present: '
                             f'{np.unique(labels).tolist()})')
        return indices

    @property
    def metainfo(self) -> dict:
        """The wrapped dataset's meta information (classes, ...)."""
        return self.dataset.metainfo

    def full_init(self) -> None:
        """Nothing left to load: the subset is built in ``__init__``."""

    def get_data_info(self, idx: int) -> dict:
        """The annotation of sample ``idx`` of the subset.

        Args:
            idx (int): Index within the subset.

        Returns:
            dict: The wrapped dataset's annotation of that sample.
        """
        return self.dataset.get_data_info(idx)

    def get_gt_labels(self) -> np.ndarray:
        """The labels of the subset, in order."""
        return self.dataset.get_gt_labels()

    def get_cat_ids(self, idx: int) -> list:
        """The label of sample ``idx`` of the subset, as a list.

        Args:
            idx (int): Index within the subset.

        Returns:
            list: The wrapped dataset's category ids of that sample
            (``[label]`` for single-label data).
        """
        return self.dataset.get_cat_ids(idx)

    def __getitem__(self, idx: int) -> dict:
        return self.dataset[idx]

    def __len__(self) -> int:
        return len(self.dataset)

    def __repr__(self) -> str:
        return f'{type(self).__name__} of {len(self)} samples of\n{self.dataset!r}'
