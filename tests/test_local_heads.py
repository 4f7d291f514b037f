"""ENN-ℓ local heads and objectives (enn_mm.local.heads, enn_mm.local.objectives)."""
import copy

import pytest
import torch
import torch.nn.functional as F
from mmengine.optim import OptimWrapper, OptimWrapperDict
from mmengine.registry import init_default_scope
from torch import nn

import enn_mm
from enn_mm.local import (AuxNetHead, DownstreamHead, ReconstructionObjective,
                          SimilarityObjective, block_weights, similarity_matrix)
from mmpretrain.registry import MODELS

from test_local import LOCAL_CFG, LOCAL_DENSE_CFG, batch, build, local

INFOPRO = [dict(type='classification', weight=dict(start=0.5, end=1.0)),
           dict(type='reconstruction', weight=dict(start=1.0, end=0.0))]
PREDSIM = [dict(type='classification', weight=0.01), dict(type='similarity', weight=0.99)]
RECIPES = {
    'aux_net': dict(local_head=dict(type='aux_net')),
    'aux_net_dgl': dict(local_head=dict(type='aux_net', num_convs=2, pool_size=2,
                                        hidden=(32, 32))),
    'downstream': dict(local_head=dict(type='downstream', depth=2)),
    'reconstruction': dict(local_head=dict(type='aux_net'), local_objectives=INFOPRO),
    'similarity': dict(local_head=dict(type='pool_linear'), local_objectives=PREDSIM),
    'mixed_list': dict(local_head=[dict(type='downstream', depth=3), dict(type='aux_net'),
                                   dict(type='conv_aux'), dict(type='downstream', depth=1),
                                   dict(type='aux_net')],
                       local_objectives=[dict(type='classification'),
                                         dict(type='reconstruction', weight=[1, 1, 0, 0, 0.5]),
                                         dict(type='similarity', weight=0.5)]),
}


class CheckedWrapper(OptimWrapper):
    """An SGD wrapper that, before each step, checks which parameters the
    block's loss reaches: only its own (block, head, objectives)."""

    def __init__(self, model, k, log):
        self.model, self.k, self.log = model, k, log
        params = dict(model.named_parameters())
        super().__init__(torch.optim.SGD([params[n] for n in model.block_param_names(k)],
                                         lr=0.05))

    def update_params(self, loss, **kwargs):
        named = [(n, p) for n, p in self.model.named_parameters() if p.requires_grad]
        grads = torch.autograd.grad(loss, [p for _, p in named], allow_unused=True,
                                    retain_graph=True)
        self.log[self.k] = {n for (n, _), g in zip(named, grads) if g is not None}
        super().update_params(loss, **kwargs)


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
        assert any(n.startswith('local_heads.') for n in own) == (k < model.num_blocks - 1)
    # a later block's loss leaves every earlier block untouched, bit for bit:
    # scramble blocks 3-5 and their heads, train again from the same start
    scrambled = copy.deepcopy(model)
    scrambled.load_state_dict(before)
    model.load_state_dict(before)
    with torch.no_grad():
        params = dict(scrambled.named_parameters())
        for k in (3, 4, 5):
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
    model = build(path, cuts='resnet_block', local_head=dict(type='downstream', depth=2))
    net = [*model.backbone.parameters(), *model.backbone.buffers(), *model.head.parameters()]
    # cuts: stem, layer1.0, layer1.1, layer2.0, layer2.1. Copies taper 2, 2, 2, 1, 0
    # (nothing runs after layer2.1 but the pooled FC); layer2.0 changes the
    # shape, so it is always kept, and the other pick is the last unit.
    expect = [['backbone.layer2.0', 'backbone.layer2.1']] * 3 + [['backbone.layer2.1'], []]
    for k in range(model.num_blocks - 1):
        head = model.local_heads[f'block{k}']
        assert isinstance(head, DownstreamHead)
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
        local(cuts='resnet_block', local_head=dict(type='downstream', depth=9))
    with pytest.raises(ValueError, match=r'block 4 .*depth 1 reaches past the end.*at most 0'):
        local(cuts='resnet_block', local_head=dict(type='downstream', depth=[2, 2, 1, 1, 1]))
    with pytest.raises(ValueError, match='3 depths for 5 local blocks'):
        local(cuts='resnet_block', local_head=dict(type='downstream', depth=[1, 1, 1]))


def test_aux_net_shapes_zero_start_and_parameter_count():
    head = AuxNetHead((16, 14, 14), 10)  # InfoPro 1c2f: conv s2 x2 channels, FC128, FC
    conv = head.net[0]
    assert (conv.in_channels, conv.out_channels, conv.stride) == (16, 32, (2, 2))
    assert head.fc.in_features == 128 and not head.fc.weight.any() and not head.fc.bias.any()
    out = head(torch.randn(3, 16, 14, 14))
    assert out.shape == (3, 10) and not out.any()  # zero-initialised classifier
    assert AuxNetHead.num_params((16, 14, 14), 10) == sum(p.numel() for p in head.parameters())
    dgl = AuxNetHead((8, 7, 7), 10, num_convs=3, pool_size=2, hidden=(64, 64))
    strides = [m.stride[0] for m in dgl.net if isinstance(m, nn.Conv2d)]
    assert strides == [2, 2, 1]  # 7 -> 4 -> 2, then stride 1: never below min_size 2
    assert AuxNetHead.num_params((8, 7, 7), 10, num_convs=3, pool_size=2,
                                 hidden=(64, 64)) == sum(p.numel() for p in dgl.parameters())


def test_reconstruction_target_is_the_preprocessed_input_at_decoder_size():
    image = torch.randn(2, 1, 28, 28)
    full = ReconstructionObjective((8, 14, 14), 10, (1, 28, 28))
    assert torch.equal(full.target(image), image)
    assert full.decode(torch.randn(2, 8, 14, 14)).shape == (2, 1, 28, 28)
    half = ReconstructionObjective((8, 7, 7), 10, (1, 28, 28), size=14)
    torch.testing.assert_close(half.target(image), F.avg_pool2d(image, 2))
    assert half.decode(torch.randn(2, 8, 7, 7)).shape == (2, 1, 14, 14)
    z = torch.randn(2, 8, 7, 7)
    loss = half(z, None, None, image, None)
    torch.testing.assert_close(loss, ((half.decode(z) - F.avg_pool2d(image, 2))**2).mean())
    # through the model: block 0's objective is handed the preprocessed input
    model = build(LOCAL_CFG, cuts='resnet_stage', local_head=dict(type='aux_net'),
                  local_objectives=INFOPRO)
    seen = []
    obj = model.local_objectives.block0[1]
    obj.register_forward_pre_hook(lambda m, args: seen.append(args[3].clone()))
    data = batch(4)
    want = model.data_preprocessor(copy.deepcopy(data), True)['inputs']
    optim = OptimWrapperDict(**{f'block{k}': CheckedWrapper(model, k, {})
                                for k in range(model.num_blocks)})
    model.train_step(data, optim)
    torch.testing.assert_close(seen[0], want)


def test_similarity_loss_matches_a_hand_computed_value():
    # rows [1,2,3] and [3,1,2]: centred [-1,0,1] and [1,-1,0], cosine -1/2; both
    # label 0: label similarity 1 everywhere. MSE = 2 * (1 - (-1/2))^2 / 4 = 1.125
    obj = SimilarityObjective((3, ), 3, (1, 28, 28))
    z = torch.tensor([[1., 2., 3.], [3., 1., 2.]])
    torch.testing.assert_close(similarity_matrix(z), torch.tensor([[1., -.5], [-.5, 1.]]))
    loss = obj(z, torch.tensor([0, 0]), None, None, None)
    torch.testing.assert_close(loss, torch.tensor(1.125))
    # labels 0, 1 of 3 classes: one-hot cosine after centring is also -1/2: zero loss
    assert obj(z, torch.tensor([0, 1]), None, None, None).abs() < 1e-7
    # soft scores are used as they are
    soft = torch.tensor([[1., 0., 0.], [1., 0., 0.]])
    torch.testing.assert_close(obj(z, soft, None, None, None), torch.tensor(1.125))


def test_weight_schedules():
    assert block_weights(0.5, 3, 'x') == [0.5, 0.5, 0.5]
    assert block_weights(dict(start=1.0, end=0.0), 5, 'x') == [1.0, 0.75, 0.5, 0.25, 0.0]
    assert block_weights([1, 2], 2, 'x') == [1.0, 2.0]
    with pytest.raises(ValueError, match='3 weights for 2 local blocks'):
        block_weights([1, 2, 3], 2, 'x')
    with pytest.raises(KeyError, match=r'dict\(start=..., end=...\)'):
        block_weights(dict(start=1), 2, 'x')
    model = local(cuts='resnet_block', local_head=dict(type='aux_net'), local_objectives=INFOPRO)
    assert model.local_objective_names == ['classification', 'reconstruction']
    assert model.local_objective_weights[0] == [0.5, 1.0]
    assert model.local_objective_weights[-1] == [1.0, 0.0]
    # weight 0: no module built, nothing run
    assert isinstance(model.local_objectives.block4[1], nn.Identity)
    assert [n for n, _, _ in model.block_objectives(4)] == ['classification']


def test_registered_names_and_a_user_head():
    init_default_scope('mmpretrain')
    for name, cls in [('ENNAuxNetLocalHead', AuxNetHead),
                      ('ENNDownstreamLocalHead', DownstreamHead),
                      ('ENNReconstructionObjective', ReconstructionObjective),
                      ('ENNSimilarityObjective', SimilarityObjective)]:
        assert MODELS.get(name) is cls

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
    with pytest.raises(TypeError, match=r"local head 'TestMaxPoolLocalHead'.*options are \['scale'\]"):
        local(cuts='resnet_stage', local_head=dict(type='TestMaxPoolLocalHead', width=3))


@pytest.mark.parametrize('kw, error, match', [
    (dict(local_head=dict(type='mlp')), KeyError, 'unknown local head type'),
    (dict(local_objectives=[dict(type='contrastive')]), KeyError, 'unknown local objective'),
    (dict(local_objectives=dict(type='classification')), TypeError, 'non-empty list of dicts'),
    (dict(local_objectives=[dict(type='similarity'), dict(type='similarity')]), ValueError,
     'listed twice'),
    (dict(local_objectives=[dict(type='reconstruction', hidden=4, depth=2)]), TypeError,
     r"local objective 'reconstruction'.*options are \['size', 'hidden'\]"),
    (dict(local_head=[dict(type='aux_net')] * 3), ValueError,
     r'3 local head configs for 5 cut points \(6 blocks'),
    (dict(local_objectives=[dict(type='reconstruction', weight=[1, 0])]), ValueError,
     '2 weights for 5 local blocks'),
])
def test_bad_head_or_objective_is_named(kw, error, match):
    with pytest.raises(error, match=match):
        local(cuts='resnet_block', **kw)


def test_reconstruction_needs_an_image_and_a_feature_map():
    with pytest.raises(ValueError, match=r'rebuilds an image, but the network input is '
                                         r'\(16,\), not \(C, H, W\); use the similarity'):
        ReconstructionObjective((8, 4, 4), 10, (16, ))
    with pytest.raises(ValueError, match=r'decodes a \(C, H, W\) feature map, got a feature '
                                         r'of shape \(197, 64\)'):
        ReconstructionObjective((197, 64), 10, (3, 224, 224))
    with pytest.raises(ValueError, match=r'larger than the input'):
        ReconstructionObjective((8, 4, 4), 10, (1, 28, 28), size=56)


def test_stage_planning_counts_heads_and_decoders():
    from enn_mm.local.planning import local_head_costs
    model = local(cuts='resnet_block', local_head=dict(type='pool_linear'))
    # a pooled FC: C·classes multiply-adds a sample, forward + backward = 3x
    channels = [s[0] for s in model.local_partition.shapes]
    assert local_head_costs(model, 32) == [3.0 * 32 * c * 10 for c in channels] + [0.0]
    recon = local(cuts='resnet_block', local_head=dict(type='pool_linear'),
                  local_objectives=[dict(type='classification'),
                                    dict(type='reconstruction', weight=[1, 0, 0, 0, 0])])
    costs = local_head_costs(recon, 32)
    # block 0's decoder: conv3x3 8->12 and 12->1 at 28x28 on top of the FC
    decoder = 28 * 28 * 9 * (8 * 12 + 12 * 1)
    assert costs[0] == 3.0 * 32 * (8 * 10 + decoder)
    assert costs[1:] == local_head_costs(model, 32)[1:]


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


def test_local_accuracy_benchmark_configs(tmp_path):
    """The benchmark's generated configs: the variant's model overrides and
    the stratified subset on top of the shipped config, nothing else."""
    import importlib.util
    import os.path as osp

    from mmengine.config import Config

    from conftest import REPO
    spec = importlib.util.spec_from_file_location(
        'local_accuracy', osp.join(REPO, 'tools/benchmarks/local_accuracy.py'))
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    for dataset in ('fmnist', 'mnist'):
        for name in bench.VARIANTS:
            config, _ = bench.variant_config(name, dataset)
            assert osp.exists(osp.join(REPO, config)), (name, dataset, config)
            assert (dataset == 'mnist') == ('mnist' in config and 'fmnist' not in config)
    path = bench.write_config('block_aux_net_recon', 'mnist', 50, str(tmp_path))
    cfg = Config.fromfile(path)
    shipped = Config.fromfile(osp.join(REPO, 'configs/enn_local/resnet18w16_mnist.py'))
    assert cfg.model.local_head == dict(type='aux_net')
    assert cfg.model.local_objectives == bench.INFOPRO
    assert cfg.train_dataloader.dataset.type == 'ENNClassSubset'
    assert cfg.train_dataloader.dataset.per_class == 50
    assert cfg.train_dataloader.dataset.dataset == shipped.train_dataloader.dataset
    for key in ('optim_wrapper', 'param_scheduler', 'train_cfg', 'val_dataloader'):
        assert cfg[key] == shipped[key], key
    assert {k: v for k, v in cfg.model.items() if k not in ('local_head', 'local_objectives')} \
        == {k: v for k, v in shipped.model.items() if k != 'local_head'}


@pytest.mark.parametrize('split', ['stage', 'block'])
@pytest.mark.parametrize('dataset', ['fmnist', 'mnist'])
def test_best_configs_differ_from_the_baseline_only_in_enn_local_lines(split, dataset):
    import os.path as osp

    from mmengine.config import Config

    from conftest import REPO
    best = Config.fromfile(osp.join(REPO, f'configs/enn_local/resnet18w16_{dataset}_best_{split}.py'))
    base = Config.fromfile(osp.join(REPO, f'configs/baseline/resnet18w16_{dataset}.py'))
    for key in ('train_dataloader', 'val_dataloader', 'test_dataloader', 'param_scheduler',
                'train_cfg', 'data_preprocessor', 'randomness'):
        assert best[key] == base[key], key
    assert best.optim_wrapper.optimizer == base.optim_wrapper.optimizer
    assert best.model.model.model == base.model  # the same network, converted to ENN
    assert best.model.local_head == dict(type='downstream', depth=2)
    assert best.model.cuts == f'resnet_{split}'
    model = build(osp.join(REPO, f'configs/enn_local/resnet18w16_{dataset}_best_{split}.py'))
    assert all(isinstance(model.local_heads[f'block{k}'], DownstreamHead)
               for k in range(model.num_blocks - 1))


def test_local_accuracy_summary_ratios_and_table():
    """The benchmark's summary: ratios are the quotients of the two runs named,
    the table is rendered from the saved JSON."""
    import importlib.util
    import os.path as osp

    from conftest import REPO
    spec = importlib.util.spec_from_file_location(
        'local_accuracy', osp.join(REPO, 'tools/benchmarks/local_accuracy.py'))
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)

    def run(name, seed, top1, iter_s, rss):
        return dict(variant=name, dataset='fmnist', seed=seed, wall_s=1.0, epochs=[1, 2],
                    top1=top1, iter_s=iter_s, peak_rss_mb=rss)

    base = {0: run('bp_dense', 0, [50.0, 80.0], 0.2, 1000.0),
            1: run('bp_dense', 1, [52.0, 82.0], 0.25, 1100.0)}
    local_runs = [run('block_downstream', 0, [40.0, 79.0], 0.5, 900.0),
                  run('block_downstream', 1, [41.0, 80.0], 0.6, 1000.0)]
    summary = bench.summarize('block_downstream', 'fmnist', local_runs, base)
    assert summary['mean'] == 79.5 and summary['final_top1'] == [79.0, 80.0]
    assert summary['vs_bp_dense']['iter_time'] == [2.5, 2.4]
    assert summary['vs_bp_dense']['peak_rss'] == [0.9, round(1000 / 1100, 3)]
    assert summary['vs_bp_dense']['iter_time_median'] == 2.45
    results = {'fmnist': {'bp_dense': bench.summarize('bp_dense', 'fmnist', list(base.values()),
                                                      base),
                          'block_downstream': summary}}
    for r in results['fmnist'].values():
        r['vs_best_bp'] = dict(points_behind=round(81.0 - r['mean'], 2))
    table = bench.markdown(results, 'fmnist')
    assert '| `block_downstream` |' in table and '| 79.50 ± 0.71 | 79.00 / 80.00 | 1.50 |' in table
    assert '(best BP: `bp_dense`, 81.00)' in table


def test_one_block_builds_no_objective_but_checks_its_options():
    model = local(cuts=[], local_objectives=INFOPRO)
    assert model.num_blocks == 1 and len(model.local_objectives) == 0
    with pytest.raises(TypeError, match="local objective 'reconstruction'"):
        local(cuts=[], local_objectives=[dict(type='reconstruction', depth=2)])
