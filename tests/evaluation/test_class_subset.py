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


def test_class_subset_is_a_dataset_wrapper(fmnist_root):
    """A registered class named as in configs, wrapping the subset: labels
    kept, sample_idx the index within the subset, meta information passed on."""
    from mmpretrain.registry import DATASETS

    from enn_mm.evaluation import ENNClassSubset
    init_default_scope('mmpretrain')
    assert DATASETS.get('ENNClassSubset') is ENNClassSubset
    base = dict(type='FashionMNIST', data_root=fmnist_root, split='test',
                pipeline=[dict(type='PackInputs')])
    full = DATASETS.build(base)
    sub = DATASETS.build(dict(type='ENNClassSubset', dataset=base, classes=[7, 5]))
    assert isinstance(sub, ENNClassSubset)
    keep = [i for i, y in enumerate(full.get_gt_labels()) if y in (5, 7)]
    assert len(sub) == len(keep) and list(sub.get_gt_labels()) == \
        [int(full.get_gt_labels()[i]) for i in keep]
    assert sub.metainfo == full.metainfo
    for j in (0, len(sub) - 1):
        item = sub[j]
        assert item['data_samples'].sample_idx == j
        assert int(item['data_samples'].gt_label) == int(full.get_gt_labels()[keep[j]])
        assert sub.get_cat_ids(j) == full.get_cat_ids(keep[j])
