"""enn_mm.local.partition: cut presets, bad partitions, parameters outside
every block, a gradient crossing a cut."""
import copy

import pytest
import torch
from mmengine.optim import build_optim_wrapper
from mmengine.registry import init_default_scope
from mmpretrain.registry import MODELS
from mmpretrain.structures import DataSample

import enn_mm
import enn_mm.local

from helpers import (
    SGD,
    TINY,
    TINY_VIT,
    local,
    one_thread,  # noqa: F401  (an autouse fixture)
)


def test_presets_resnet50_and_vit():
    init_default_scope('mmpretrain')
    r50 = MODELS.build(dict(type='ImageClassifier', backbone=dict(type='ResNet', depth=50),
                            neck=dict(type='GlobalAveragePooling'),
                            head=dict(type='LinearClsHead', num_classes=10, in_channels=2048)))
    cuts = enn_mm.local.partition.resolve_cuts(r50, 'resnet_block')
    assert cuts[0] == 'backbone.maxpool' and len(cuts) == 17 and cuts[-1] == 'backbone.layer4.2'
    assert enn_mm.local.partition.resolve_cuts(r50, 'resnet_stage') == [
        'backbone.layer1', 'backbone.layer2', 'backbone.layer3']

    vit = copy.deepcopy(TINY_VIT)
    model = MODELS.build(dict(type='ENNLocalClassifier', model=vit,
                              cuts=dict(preset='vit', every=2), input_shape=(3, 32, 32),
                              local_head=dict(type='ENNPoolLinearLocalHead')))
    part = model.local_partition
    assert part.cuts == ['backbone.layers.1']
    assert {'backbone.cls_token', 'backbone.pos_embed'} <= set(part.params[0])
    assert 'backbone.ln1.weight' in part.params[1] and 'head.layers.head.weight' in part.params[1]
    optim = build_optim_wrapper(model, SGD)
    data = dict(inputs=torch.rand(4, 3, 32, 32) * 255,
                data_samples=[DataSample().set_gt_label(i) for i in range(4)])
    logs = model.train_step(data, optim)
    assert set(logs) >= {'block0.loss', 'block1.loss', 'block0.top1'}
    assert all(torch.isfinite(torch.as_tensor(v)) for v in logs.values())


@pytest.mark.parametrize('kw, error, match', [
    (dict(cuts=['backbone.layer1.2']), ValueError,
     r"cut point 'backbone.layer1.2' is not a module .*Did you mean"),
    (dict(cuts=['backbone.layer2.0', 'backbone.layer1.0']), ValueError,
     r'out of forward order.*in the order \[.backbone.layer1.0., .backbone.layer2.0.\]'),
    (dict(cuts=['backbone.bn1', 'backbone.relu']), ValueError,
     r"block 1 \(from 'backbone.bn1' to 'backbone.relu'\) has no trainable parameters"),
    (dict(cuts=['backbone.layer1', 'backbone.layer1']), ValueError, 'more than once'),
    (dict(cuts='resnet_block', input_shape=(1, 224, 224), max_head_params=10**6), ValueError,
     r'local head ENNFrozenLinearLocalHead of block 0 .* over the budget max_head_params'),
    (dict(cuts='resnet_block', local_head=dict(type='mlp')), KeyError, 'unknown local head type'),
    (dict(cuts='resnet_blocks'), KeyError, 'unknown cut preset'),
    (dict(cuts=dict(preset='vit')), TypeError, 'vit cut preset needs'),
])
def test_bad_partition_or_head_is_named(kw, error, match):
    with pytest.raises(error, match=match):
        local(**kw)


def test_parameters_outside_every_block_are_named():
    init_default_scope('mmpretrain')
    inner = copy.deepcopy(TINY)
    inner['backbone']['out_indices'] = (0, )  # stage 2 runs but feeds nothing
    inner['head']['in_channels'] = 8
    with pytest.raises(ValueError, match=r"outside every block, e.g. \['backbone.layer2.0"):
        MODELS.build(dict(type='ENNLocalClassifier', model=inner, cuts=['backbone.relu'],
                          input_shape=(1, 28, 28)))
    # raising the budget admits the large frozen head
    model = local(cuts=['backbone.relu'], input_shape=(1, 64, 64), max_head_params=10**6)
    assert model.local_heads.block0.weight.shape == (10, 8 * 64 * 64)


class _SkipAcrossCut(torch.nn.Module):
    """a -> b -> c, plus a skip from a's output to the end (across cut 'b')."""

    def __init__(self, tied=False):
        super().__init__()
        self.a, self.b, self.c = (torch.nn.Linear(4, 4) for _ in range(3))
        self.tied = tied
        if tied:  # no skip, but b and c share a weight
            self.c.weight = self.b.weight

    def forward(self, x, mode='tensor'):
        h = self.a(x)
        y = self.c(self.b(h))
        return y if self.tied else y + h


@pytest.mark.parametrize('tied, cut, name', [(False, 'b', 'a.weight'), (True, 'b', 'b.weight')])
def test_gradient_crossing_a_cut_is_named(tied, cut, name):
    with pytest.raises(ValueError, match=rf"parameter '{name}' is used by blocks \[0, 1\]"):
        enn_mm.local.partition.probe_partition(_SkipAcrossCut(tied), [cut], (4, ))
    # cut after the skip's source instead: a valid partition
    part = enn_mm.local.partition.probe_partition(_SkipAcrossCut(), ['a'], (4, ))
    assert part.params == [['a.weight', 'a.bias'], ['b.weight', 'b.bias', 'c.weight', 'c.bias']]
