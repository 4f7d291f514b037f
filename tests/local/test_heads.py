"""enn_mm.local.heads: no gradient crosses a block boundary whatever the
heads and objectives, downstream / aux-net heads, registered names (one per
component, its class name) and a user head."""
import copy

import pytest
import torch
from mmengine.optim import OptimWrapperDict
from mmengine.registry import init_default_scope
from mmpretrain.registry import MODELS
from torch import nn

import enn_mm.local.heads
import enn_mm.local.objectives
from enn_mm.local import (
    ENNAuxNetLocalHead,
    ENNDownstreamLocalHead,
    ENNReconstructionObjective,
    ENNSimilarityObjective,
)

from helpers import INFOPRO, LOCAL_CFG, LOCAL_DENSE_CFG, CheckedWrapper, batch, build, local

PREDSIM = [dict(type='ENNClassificationObjective', weight=0.01),
           dict(type='ENNSimilarityObjective', weight=0.99)]


RECIPES = {
    'aux_net': dict(local_head=dict(type='ENNAuxNetLocalHead')),
    'downstream_narrow': dict(local_head=dict(type='ENNDownstreamLocalHead', depth=2,
                                              width=0.5)),
    'random_projection': dict(local_head=dict(type='ENNRandomProjectionLocalHead', pool_size=2)),
    'aux_net_dgl': dict(local_head=dict(type='ENNAuxNetLocalHead', num_convs=2, pool_size=2,
                                        hidden=(32, 32))),
    'downstream': dict(local_head=dict(type='ENNDownstreamLocalHead', depth=2)),
    'downstream_pyramid': dict(local_head=dict(type='ENNDownstreamLocalHead', depth=3, tau=0.5)),
    # nothing but the pooled FC runs after the last cut point: no unit to follow there
    'momentum': dict(local_head=[dict(type='ENNMomentumLocalHead', momentum=0.9)] * 4
                     + [dict(type='ENNPoolLinearLocalHead')]),
    'reconstruction': dict(local_head=dict(type='ENNAuxNetLocalHead'), local_objectives=INFOPRO),
    'similarity': dict(local_head=dict(type='ENNPoolLinearLocalHead'), local_objectives=PREDSIM),
    'mixed_list': dict(local_head=[dict(type='ENNDownstreamLocalHead', depth=3),
                                   dict(type='ENNAuxNetLocalHead'),
                                   dict(type='ENNConvAuxLocalHead'),
                                   dict(type='ENNDownstreamLocalHead', depth=1),
                                   dict(type='ENNAuxNetLocalHead')],
                       local_objectives=[dict(type='ENNClassificationObjective'),
                                         dict(type='ENNReconstructionObjective',
                                              weight=[1, 1, 0, 0, 0.5]),
                                         dict(type='ENNSimilarityObjective', weight=0.5)]),
}


@pytest.mark.parametrize('recipe', list(RECIPES))
@pytest.mark.parametrize('path', [LOCAL_CFG, LOCAL_DENSE_CFG])
def test_no_gradient_crosses_a_block_boundary(recipe, path):
    model = build(path, cuts='resnet_block', **RECIPES[recipe])
    assert model.num_blocks == 6
    reached = {}
    optim = OptimWrapperDict(**{f'block{k}': CheckedWrapper(model, k, reached)
                                for k in range(model.num_blocks)})
    before = copy.deepcopy(model.state_dict())
    logs = model.train_step(batch(16), optim)
    assert sorted(reached) == list(range(model.num_blocks))
    for k in range(model.num_blocks):
        own = set(model.block_param_names(k))
        assert reached[k] == own, (k, reached[k] ^ own)
        trained_head = k < model.num_blocks - 1 and any(
            p.requires_grad for p in model.local_heads[f'block{k}'].parameters())
        assert any(n.startswith('local_heads.') for n in own) == trained_head
    # a later block's loss leaves every earlier block untouched, bit for bit:
    # scramble blocks 3-5 and their heads, train again from the same start. (A
    # momentum head reads the weights, not the gradients, of the next block:
    # block 2's follows block 3, so scramble 4-5 there.)
    later = (4, 5) if recipe == 'momentum' else (3, 4, 5)
    scrambled = copy.deepcopy(model)
    scrambled.load_state_dict(before)
    model.load_state_dict(before)
    with torch.no_grad():
        params = dict(scrambled.named_parameters())
        for k in later:
            for n in scrambled.block_param_names(k):
                params[n].copy_(torch.randn_like(params[n]) * 3)
    results = []
    for m in (model, scrambled):
        optim = OptimWrapperDict(**{f'block{k}': CheckedWrapper(m, k, {})
                                    for k in range(m.num_blocks)})
        m.train_step(batch(16, seed=1), optim)
        results.append(dict(m.named_parameters()))
    for k in (0, 1, 2):
        for n in model.block_param_names(k):
            assert torch.equal(results[0][n], results[1][n]), n
    if len(model.local_objective_names) > 1:  # each term logged per block
        assert 'block0.loss_classification' in logs


def _storage(tensors):
    return {t.untyped_storage().data_ptr() for t in tensors}


@pytest.mark.parametrize('path', [LOCAL_CFG, LOCAL_DENSE_CFG])
def test_downstream_heads_are_fresh_copies_of_later_blocks(path):
    model = build(path, cuts='resnet_block',
                  local_head=dict(type='ENNDownstreamLocalHead', depth=2))
    net = [*model.backbone.parameters(), *model.backbone.buffers(), *model.head.parameters()]
    # cuts: stem, layer1.0, layer1.1, layer2.0, layer2.1. Copies taper 2, 2, 2, 1, 0
    # (nothing runs after layer2.1 but the pooled FC); layer2.0 changes the
    # shape, so it is always kept, and the other pick is the last unit.
    expect = [['backbone.layer2.0', 'backbone.layer2.1']] * 3 + [['backbone.layer2.1'], []]
    for k in range(model.num_blocks - 1):
        head = model.local_heads[f'block{k}']
        assert isinstance(head, ENNDownstreamLocalHead)
        assert head.copied == expect[k], k
        mine = [*head.parameters(), *head.buffers()]
        assert not _storage(mine) & _storage(net)  # no tensor shared with the network
        # dense copies (no ENN factors), freshly initialized: not the network's weights
        assert not any(hasattr(m, 'parametrizations') for m in head.modules())
        modules = dict(model.named_modules())
        for name, copy_ in zip(head.copied, head.blocks):
            src = modules[name]
            assert type(copy_) is type(src)
            w_src = src.conv1.weight.detach()
            assert w_src.shape == copy_.conv1.weight.shape
            assert not torch.allclose(w_src, copy_.conv1.weight)
    # the head maps the block output to logits
    z = torch.randn(4, 8, 28, 28)
    assert model.local_heads.block0(z).shape == (4, 10)


def test_downstream_depth_past_the_end_is_refused():
    with pytest.raises(ValueError, match=r'depth=9 .* past the end of the network.*depth <= 4'):
        local(cuts='resnet_block', local_head=dict(type='ENNDownstreamLocalHead', depth=9))
    with pytest.raises(ValueError, match=r'block 4 .*depth 1 reaches past the end.*at most 0'):
        local(cuts='resnet_block',
              local_head=dict(type='ENNDownstreamLocalHead', depth=[2, 2, 1, 1, 1]))
    with pytest.raises(ValueError, match='3 depths for 5 local blocks'):
        local(cuts='resnet_block', local_head=dict(type='ENNDownstreamLocalHead', depth=[1, 1, 1]))


def test_aux_net_shapes_zero_start_and_parameter_count():
    head = ENNAuxNetLocalHead((16, 14, 14), 10)  # InfoPro 1c2f: conv s2 x2 channels, FC128, FC
    conv = head.net[0]
    assert (conv.in_channels, conv.out_channels, conv.stride) == (16, 32, (2, 2))
    assert head.fc.in_features == 128 and not head.fc.weight.any() and not head.fc.bias.any()
    out = head(torch.randn(3, 16, 14, 14))
    assert out.shape == (3, 10) and not out.any()  # zero-initialised classifier
    n = sum(p.numel() for p in head.parameters())
    assert ENNAuxNetLocalHead.num_params((16, 14, 14), 10) == n
    dgl = ENNAuxNetLocalHead((8, 7, 7), 10, num_convs=3, pool_size=2, hidden=(64, 64))
    strides = [m.stride[0] for m in dgl.net if isinstance(m, nn.Conv2d)]
    assert strides == [2, 2, 1]  # 7 -> 4 -> 2, then stride 1: never below min_size 2
    n = sum(p.numel() for p in dgl.parameters())
    assert ENNAuxNetLocalHead.num_params((8, 7, 7), 10, num_convs=3, pool_size=2,
                                         hidden=(64, 64)) == n


def test_registered_names_and_a_user_head():
    init_default_scope('mmpretrain')
    for cls in [ENNAuxNetLocalHead, ENNDownstreamLocalHead, ENNReconstructionObjective,
                ENNSimilarityObjective]:
        assert MODELS.get(cls.__name__) is cls

    @MODELS.register_module(name='TestMaxPoolLocalHead', force=True)
    class MaxPoolHead(nn.Module):
        def __init__(self, in_shape, num_classes, scale=1.0):
            super().__init__()
            self.fc = nn.Linear(in_shape[0], num_classes)

        def forward(self, x):
            return self.fc(x.amax(dim=(2, 3)))

    model = local(cuts='resnet_stage', local_head=dict(type='TestMaxPoolLocalHead', scale=2.0))
    assert isinstance(model.local_heads.block0, MaxPoolHead)
    assert 'local_heads.block0.fc.weight' in model.block_param_names(0)
    with pytest.raises(TypeError,
                       match=r"local head 'TestMaxPoolLocalHead'.*options are \['scale'\]"):
        local(cuts='resnet_stage', local_head=dict(type='TestMaxPoolLocalHead', width=3))


HEADS = ['ENNAuxNetLocalHead', 'ENNConvAuxLocalHead', 'ENNDownstreamLocalHead',
         'ENNFrozenLinearLocalHead', 'ENNMomentumLocalHead', 'ENNPoolLinearLocalHead',
         'ENNRandomProjectionLocalHead']
OBJECTIVES = ['ENNClassificationObjective', 'ENNReconstructionObjective',
              'ENNSimilarityObjective']


def test_one_name_per_component_its_class_name():
    modules = (enn_mm.local.heads.__name__, enn_mm.local.objectives.__name__)
    ours = {key: cls for key, cls in MODELS.module_dict.items()
            if key.startswith('ENN') and getattr(cls, '__module__', None) in modules}
    assert sorted(ours) == sorted(HEADS + OBJECTIVES)
    for key, cls in ours.items():
        assert cls.__name__ == key, (key, cls.__name__)
    # each class is registered once, under that one name
    for cls in ours.values():
        assert [k for k, c in MODELS.module_dict.items() if c is cls] == [cls.__name__]
    for gone in ('HEAD_TYPES', 'OBJECTIVE_TYPES', 'module_class'):
        assert not hasattr(enn_mm.local, gone)
        assert not hasattr(enn_mm.local.heads, gone)
        assert not hasattr(enn_mm.local.objectives, gone)
    # log names: short, from the class
    assert [enn_mm.local.objectives.log_name(MODELS.get(n)) for n in OBJECTIVES] == [
        'classification', 'reconstruction', 'similarity']


@pytest.mark.parametrize('kw, error, match', [
    (dict(local_head=dict(type='frozen_linear')), KeyError,
     r"unknown local head type 'frozen_linear'\. Did you mean 'ENNFrozenLinearLocalHead'\?"),
    (dict(local_head=dict(type='downstream', depth=2)), KeyError,
     r"Did you mean 'ENNDownstreamLocalHead'"),
    (dict(local_head=dict(type='mlp')), KeyError,
     r"unknown local head type 'mlp'\. The registered ENN local heads are "
     + repr(HEADS).replace('[', r'\[').replace(']', r'\]')),
    (dict(local_objectives=[dict(type='reconstruction')]), KeyError,
     r"unknown local objective type 'reconstruction'\. Did you mean "
     r"'ENNReconstructionObjective'\? The registered ENN local objectives are "
     + repr(OBJECTIVES).replace('[', r'\[').replace(']', r'\]')),
])
def test_old_aliases_are_refused_naming_the_registered_ones(kw, error, match):
    with pytest.raises(error, match=match):
        local(cuts='resnet_stage', **kw)


HEAD_OPTIONS = [
    ('ENNFrozenLinearLocalHead', {}),
    ('ENNPoolLinearLocalHead', {}),
    ('ENNPoolLinearLocalHead', dict(frozen=True)),
    ('ENNConvAuxLocalHead', {}),
    ('ENNConvAuxLocalHead', dict(channels=24, kernel_size=1)),
    ('ENNAuxNetLocalHead', {}),
    ('ENNAuxNetLocalHead', dict(num_convs=3, channel_mult=1.5, pool_size=2, hidden=(32, 16))),
    ('ENNRandomProjectionLocalHead', {}),
    ('ENNRandomProjectionLocalHead', dict(pool_size=2, scale=3.0, seed=5)),
]
MAPS, TOKENS = [(16, 14, 14), (8, 7, 7), (12, 28, 28)], [(5, 32)]


@pytest.mark.parametrize('head, options, in_shape', [
    (h, o, s) for h, o in HEAD_OPTIONS
    for s in MAPS + (TOKENS if h in ('ENNFrozenLinearLocalHead', 'ENNPoolLinearLocalHead',
                                     'ENNRandomProjectionLocalHead') else [])
])
def test_num_params_is_what_the_head_holds(head, options, in_shape):
    """The budget check (max_head_params) reads num_params before building:
    it must equal the built head's weights, trainable or frozen (buffers),
    BatchNorm's running statistics aside."""
    cls = MODELS.get(head)
    built = cls(in_shape, 10, **options)
    stats = ('running_mean', 'running_var', 'num_batches_tracked')
    held = sum(p.numel() for p in built.parameters()) + sum(
        b.numel() for n, b in built.named_buffers() if not n.endswith(stats))
    assert cls.num_params(in_shape, 10, **options) == held


def test_downstream_heads_on_a_vit():
    """AugLocal heads from a ViT's own later encoder layers: token features
    in, logits out, fresh copies, and a training step that reaches every
    block's parameters."""
    from mmengine.optim import build_optim_wrapper
    from mmpretrain.structures import DataSample

    from helpers import SGD, TINY_VIT
    init_default_scope('mmpretrain')
    model = MODELS.build(dict(type='ENNLocalClassifier', model=copy.deepcopy(TINY_VIT),
                              cuts=dict(preset='vit', every=1), input_shape=(3, 32, 32),
                              local_head=dict(type='ENNDownstreamLocalHead', depth=2)))
    assert model.num_blocks == 4
    modules = dict(model.named_modules())
    for k in range(model.num_blocks - 1):
        head = model.local_heads[f'block{k}']
        assert isinstance(head, ENNDownstreamLocalHead)
        assert head.copied and all(n.startswith('backbone.layers.') for n in head.copied)
        for name, copy_ in zip(head.copied, head.blocks):
            assert type(copy_) is type(modules[name]) and copy_ is not modules[name]
    tokens = torch.randn(2, 17, 32)  # 16 patches + the cls token
    assert model.local_heads.block0(tokens).shape == (2, 10)
    optim = build_optim_wrapper(model, SGD)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    data = dict(inputs=torch.rand(4, 3, 32, 32) * 255,
                data_samples=[DataSample().set_gt_label(i) for i in range(4)])
    logs = model.train_step(data, optim)
    assert {f'block{k}.loss' for k in range(4)} <= set(logs)
    for k in range(model.num_blocks):
        moved = [n for n in model.block_param_names(k)
                 if not torch.equal(before[n], dict(model.named_parameters())[n])]
        assert moved, k


def test_random_projection_head_is_fixed_seeded_and_norm_preserving():
    """SLL-style head: no trainable weight, the projection a function of its
    seed alone (not of the global random stream), orthonormal columns scaled
    by sqrt(D / classes), logits = pooled feature @ R."""
    from enn_mm.local import ENNRandomProjectionLocalHead as Head
    torch.manual_seed(0)
    a = Head((16, 7, 7), 10, pool_size=2, seed=3)
    torch.manual_seed(1)
    b = Head((16, 7, 7), 10, pool_size=2, seed=3)
    assert list(a.parameters()) == [] and torch.equal(a.weight, b.weight)
    assert not torch.equal(a.weight, Head((16, 7, 7), 10, pool_size=2, seed=4).weight)
    d = 16 * 2 * 2
    gram = a.weight.double().T @ a.weight.double()
    assert torch.allclose(gram, torch.eye(10, dtype=torch.float64) * d / 10, atol=1e-5)
    x = torch.randn(3, 16, 7, 7)
    want = torch.nn.functional.adaptive_avg_pool2d(x, 2).flatten(1) @ a.weight
    assert torch.allclose(a(x), want)
    # fewer features than classes: orthonormal rows; scale multiplies the logits
    small = Head((4, ), 10, scale=2.0)
    assert torch.allclose(small.weight @ small.weight.T, torch.eye(4) * 2.0**2 * 4 / 10,
                          atol=1e-5)
    # the block still learns through it: gradients reach the feature
    z = torch.randn(3, 16, 7, 7, requires_grad=True)
    a(z).sum().backward()
    assert z.grad.abs().sum() > 0
    with pytest.raises(ValueError, match='pool_size=0 must be >= 1'):
        Head((16, 7, 7), 10, pool_size=0)


def test_narrow_downstream_heads():
    """width=0.5: a 1x1 conv to half the block's channels, then copies with
    half the channels of every conv and batch norm, newly initialized; the
    head's FLOPs fall with the width (counted by local_flops)."""
    from enn_mm.local import local_flops
    full = local(cuts='resnet_stage', local_head=dict(type='ENNDownstreamLocalHead', depth=2))
    narrow = local(cuts='resnet_stage',
                   local_head=dict(type='ENNDownstreamLocalHead', depth=2, width=0.5))
    head = narrow.local_heads.block0
    modules = dict(narrow.named_modules())
    proj, copies = head.blocks[0], list(head.blocks)[1:]
    c = narrow.local_partition.shapes[0][0]
    assert isinstance(proj, nn.Conv2d) and (proj.in_channels, proj.out_channels) == (c, c // 2)
    for name, copy_ in zip(head.copied, copies):
        src = modules[name]
        assert type(copy_) is type(src)
        assert copy_.conv1.weight.shape[0] == src.conv1.weight.shape[0] // 2
        assert copy_.conv1.weight.shape[1] == src.conv1.weight.shape[1] // 2
    assert head.fc.in_features == narrow.head.fc.in_features // 2
    z = torch.randn(2, *narrow.local_partition.shapes[0])
    assert head(z).shape == (2, 10)
    ratios = [r['head_ratio'] for r in local_flops(narrow)[:-1]]
    full_ratios = [r['head_ratio'] for r in local_flops(full)[:-1]]
    for r, f in zip(ratios, full_ratios):  # about w² of the full-width copies
        assert 0.15 * f < r < 0.45 * f
    with pytest.raises(ValueError, match='width=0 must be > 0'):
        local(cuts='resnet_stage', local_head=dict(type='ENNDownstreamLocalHead', width=0))


def test_narrow_downstream_heads_refuse_token_features():
    from helpers import TINY_VIT
    init_default_scope('mmpretrain')
    with pytest.raises(ValueError, match=r'width != 1 needs \(C, H, W\) feature maps.*width=1'):
        MODELS.build(dict(type='ENNLocalClassifier', model=copy.deepcopy(TINY_VIT),
                          cuts=dict(preset='vit', every=1), input_shape=(3, 32, 32),
                          local_head=dict(type='ENNDownstreamLocalHead', width=0.5)))


@pytest.mark.parametrize('path', [LOCAL_CFG, LOCAL_DENSE_CFG])
def test_momentum_heads_follow_the_ema_rule_and_not_their_loss(path):
    """MAN: each head holds buffer copies of the next unit; at the start of a
    step they become m·e + (1 − m)·w of the network's dense weight (w itself
    on the first step); the head's loss trains only its scale, bias and
    linear layer; resuming from the state dict continues exactly."""
    from enn_mm.local import ENNMomentumLocalHead
    m = 0.9
    model = build(path, cuts='resnet_block', **RECIPES['momentum'])
    modules = dict(model.named_modules())
    heads = [model.local_heads[f'block{k}'] for k in range(4)]
    assert all(isinstance(h, ENNMomentumLocalHead) for h in heads)
    # cuts: stem, layer1.0, layer1.1, layer2.0, layer2.1: each head follows
    # the unit after its cut (the last cut has none after it: refused, see below)
    assert [h.copied for h in heads] == [['backbone.layer1.0'], ['backbone.layer1.1'],
                                         ['backbone.layer2.0'], ['backbone.layer2.1']]
    assert [model.momentum_sources(k) for k in range(4)] == [[1], [2], [3], [4]]
    for h in heads:
        trainable = {n for n, p in h.named_parameters()}
        assert trainable == {'affine.0.weight', 'affine.0.bias', 'fc.weight', 'fc.bias'}

    def dense(name, k):  # the network's dense weight (ENN: Q·diag(λ)·Pᵀ) of a tracked tensor
        src = modules[heads[k].copied[0]]
        owner, _, attr = name.rpartition('.')
        return getattr(src.get_submodule(owner), attr).detach().clone()

    def copies(k):
        return {n: heads[k].blocks[0].get_buffer(n).clone() for n in heads[k].tracked[0]}

    optim = OptimWrapperDict(**{f'block{k}': CheckedWrapper(model, k, {})
                                for k in range(model.num_blocks)})
    for step in range(3):
        e_before = [copies(k) for k in range(4)]
        w_before = [{n: dense(n, k) for n in heads[k].tracked[0]} for k in range(4)]
        model.train_step(batch(16, seed=step), optim)
        for k in range(4):
            for n, e in copies(k).items():
                w = w_before[k][n]
                want = w if step == 0 else e_before[k][n] * m + w * (1 - m)
                assert torch.allclose(e, want, atol=1e-6, rtol=1e-5), (step, k, n)
        assert int(heads[0].steps) == step + 1
        if step == 0:  # the followed units trained: the copies now lag them
            assert any(not torch.equal(e, dense(n, 0)) for n, e in copies(0).items())
    # a state dict carries the copies and the step count: the same next step
    twin = build(path, cuts='resnet_block', **RECIPES['momentum'])
    twin.load_state_dict(model.state_dict())
    for mod in (model, twin):
        o = OptimWrapperDict(**{f'block{k}': CheckedWrapper(mod, k, {})
                                for k in range(mod.num_blocks)})
        mod.train_step(batch(16, seed=7), o)
    for (n, a), (_, b) in zip(model.state_dict().items(), twin.state_dict().items()):
        assert torch.equal(a, b), n


def test_momentum_head_bad_input():
    with pytest.raises(ValueError, match=r'block 4 .*only 0 do .*no later block to average.*'
                                         r'another head for this block'):
        local(cuts='resnet_block', local_head=dict(type='ENNMomentumLocalHead'))
    with pytest.raises(ValueError, match=r'momentum=1.0 must be in \[0, 1\)'):
        local(cuts='resnet_stage', local_head=dict(type='ENNMomentumLocalHead', momentum=1.0))
    with pytest.raises(ValueError, match='depth=0 must be an int >= 1'):
        local(cuts='resnet_stage', local_head=dict(type='ENNMomentumLocalHead', depth=0))
    # the fix the message names: another head where nothing is left to follow
    model = local(cuts='resnet_block', local_head=[dict(type='ENNMomentumLocalHead')] * 4
                  + [dict(type='ENNPoolLinearLocalHead')])
    assert model.momentum_sources(3) == [4] and model.momentum_sources(4) == []


def test_downstream_pyramid_depth_is_auglocal_rule():
    """tau: AugLocal's max(1, round(d(1 − iτ/(L−1)) + iτ/(L−1))), Python's
    round; here d = 4, L = 5, τ = 0.5 -> 4, 4, 3, 3, 2, capped by the units
    left after each block (4, 3, 2, 1, 0)."""
    from enn_mm.local.heads import _taper
    assert [_taper(4, 1, i, 5, 0.5) for i in range(5)] == [4, 4, 3, 3, 2]
    assert [_taper(4, 1, i, 5, 0.0) for i in range(5)] == [4] * 5
    assert [_taper(4, 1, i, 5, 1.0) for i in range(5)] == [4, 3, 2, 2, 1]
    model = local(cuts='resnet_block', local_head=dict(type='ENNDownstreamLocalHead', depth=4,
                                                       tau=0.5))
    got = [len(model.local_heads[f'block{k}'].copied) for k in range(5)]
    assert got == [4, 3, 2, 1, 0]
    with pytest.raises(ValueError, match=r'tau=1.5 must be in \[0, 1\]'):
        local(cuts='resnet_block', local_head=dict(type='ENNDownstreamLocalHead', tau=1.5))
