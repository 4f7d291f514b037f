"""enn_mm.evaluation.class_subset: ENNClassSubset against a brute-force
selection."""
import pytest
from mmengine.registry import init_default_scope

import enn_mm  # noqa: F401  (registers ENNClassSubset)


def test_class_stratified_subset(fmnist_root):
    from mmpretrain.registry import DATASETS
    init_default_scope('mmpretrain')
    base = dict(type='FashionMNIST', data_root=fmnist_root, split='train', pipeline=[])
    full = DATASETS.build(base)
    labels = list(full.get_gt_labels())
    sub = DATASETS.build(dict(type='ENNClassSubset', dataset=base, per_class=3))
    got = list(sub.get_gt_labels())
    # the first 3 of each class, in dataset order: a brute-force selection
    want, seen = [], {}
    for y in labels:
        seen[y] = seen.get(y, 0) + 1
        if seen[y] <= 3:
            want.append(y)
    assert got == want and len(got) == 3 * len(set(labels))
    with pytest.raises(ValueError, match=r'per_class=99, but some classes have fewer samples'):
        DATASETS.build(dict(type='ENNClassSubset', dataset=base, per_class=99))
