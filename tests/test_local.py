"""ENN-ℓ: block-wise local learning (enn_mm.local)."""
import copy
import itertools
import os
import os.path as osp
import pickle
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F
from mmengine.config import Config
from mmengine.optim import OptimWrapper, build_optim_wrapper
from mmengine.registry import init_default_scope
from mmengine.runner import Runner

import enn_mm
import enn_mm.local
from enn_mm.local import SavedTensorMeter, plain_config, strip_local_heads
from mmpretrain.registry import MODELS
from mmpretrain.structures import DataSample

from conftest import REPO

LOCAL_CFG = osp.join(REPO, 'configs/enn_local/resnet18w16_fmnist.py')
LOCAL_DENSE_CFG = osp.join(REPO, 'configs/enn_local/resnet18w16_fmnist_dense.py')
# the paper's penalty: these tests follow loss_ortho through training
ENN_CFG = osp.join(REPO, 'configs/enn/resnet18w16_fmnist_penalty.py')
# weight_decay given: the ENN constructor's decay rules need a base value
SGD = dict(constructor='ENNLocalOptimWrapperConstructor',
           optimizer=dict(type='SGD', lr=0.1, weight_decay=0.0))
_RUN_IDS = itertools.count()


@pytest.fixture(autouse=True, scope='module')
def one_thread():
    """Tiny models run as fast on one thread, and a second thread on a busy
    machine can make them many times slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _inner(model_cfg):
    """The ImageClassifier config inside ENNLocalClassifier / ENNModel."""
    while model_cfg.type != 'ImageClassifier':
        model_cfg = model_cfg.model
    return model_cfg


def tiny_cfg(path, data_root, work_dir, epochs=2, **local):
    """A repo config, shrunk: width 8, two stages (6 blocks with the paper's
    split), 64 images, no augmentation, 4 iterations an epoch."""
    cfg = Config.fromfile(path)
    inner = _inner(cfg.model)
    inner.backbone.update(stem_channels=8, base_channels=8, num_stages=2, strides=(1, 2),
                          dilations=(1, 1), out_indices=(1, ))
    inner.head.in_channels = 16
    if cfg.model.type == 'ENNLocalClassifier':
        cfg.model.update(local)
    for loader in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        cfg[loader].update(batch_size=16, num_workers=0, persistent_workers=False)
        cfg[loader].dataset.data_root = data_root
    cfg.train_dataloader.dataset.pipeline = [dict(type='PackInputs')]
    cfg.optim_wrapper.optimizer.lr = 3e-2
    cfg.train_cfg = dict(by_epoch=True, max_epochs=epochs, val_interval=epochs)
    cfg.param_scheduler = [dict(type='CosineAnnealingLR', by_epoch=False, begin=0, end=20)]
    cfg.default_hooks.logger.interval = 1
    cfg.default_hooks.checkpoint = dict(type='CheckpointHook', interval=1)
    cfg.custom_hooks = []  # no diagnostics plots: speed
    cfg.work_dir = str(work_dir)
    # the Runner names its message hub after the config file and the second:
    # two runs started in one second would share their logs
    cfg.experiment_name = f'test_local_{next(_RUN_IDS)}'
    cfg.log_level = 'WARNING'
    return cfg


def build(path, **local):
    init_default_scope('mmpretrain')
    cfg = tiny_cfg(path, '', '', **local)
    torch.manual_seed(0)
    model = MODELS.build(cfg.model)
    model.init_weights()
    return model


def batch(n=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    return dict(inputs=torch.rand(n, 1, 28, 28, generator=g) * 255,
                data_samples=[DataSample().set_gt_label(i % 10) for i in range(n)])


def record_grads(model, optim_wrapper):
    """{param name: grad} as each block's optimizer is about to step."""
    names = {id(p): n for n, p in model.named_parameters()}
    grads = {}

    def hook(optimizer, args, kwargs):
        for group in optimizer.param_groups:
            for p in group['params']:
                if p.grad is not None:
                    grads[names[id(p)]] = p.grad.clone()

    for wrapper in optim_wrapper.values():
        wrapper.optimizer.register_step_pre_hook(hook)
    return grads


def hand_computed_grads(model, data, gamma):
    """Each block's gradient by hand on a copy: its input detached, its own
    head's cross-entropy plus gamma times its own modules' ENN penalty."""
    m = copy.deepcopy(model).train()
    x = m.data_preprocessor(data, True)['inputs']
    y = torch.tensor([s.gt_label.item() for s in data['data_samples']])
    bb = m.backbone
    stem = torch.nn.Sequential(bb.conv1, bb.bn1, bb.relu)
    blocks = [stem, bb.layer1[0], bb.layer1[1], bb.layer2[0], bb.layer2[1]]
    z = x
    for k, block in enumerate(blocks):
        z = block(z.detach())
        loss = F.cross_entropy(m.local_heads[f'block{k}'](z), y)
        (loss + gamma * enn_mm.orthogonality_penalty(block)).backward()
    logits = m.head.fc(z.detach().mean(dim=(2, 3)))
    (F.cross_entropy(logits, y) + gamma * enn_mm.orthogonality_penalty(m.head)).backward()
    return {n: p.grad for n, p in m.named_parameters() if p.grad is not None}


@pytest.mark.parametrize('path', [LOCAL_CFG, LOCAL_DENSE_CFG])
def test_each_block_gets_only_its_local_gradient(path):
    model = build(path)
    gamma = 0.0
    if hasattr(model, 'enn_options'):  # make the penalty matter
        gamma = model.enn_options.gamma = 0.1
        with torch.no_grad():
            for B in enn_mm.core.bases(model):
                B.mul_(1.1)
    assert model.num_blocks == 6
    data = batch()
    expected = hand_computed_grads(model, data, gamma)

    scrambled = copy.deepcopy(model)  # blocks 3-5 changed beyond recognition
    with torch.no_grad():
        for k in (3, 4, 5):
            for n in scrambled.block_param_names(k):
                p = dict(scrambled.named_parameters())[n]
                p.copy_(torch.randn_like(p) * 10)

    optim = build_optim_wrapper(model, SGD)
    grads = record_grads(model, optim)
    model.train_step(data, optim)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert set(grads) == set(expected) == trainable
    for n in expected:
        torch.testing.assert_close(grads[n], expected[n], rtol=1e-5, atol=1e-7, msg=n)

    optim = build_optim_wrapper(scrambled, SGD)
    grads_scrambled = record_grads(scrambled, optim)
    scrambled.train_step(data, optim)
    for k in (0, 1, 2):  # bit for bit: nothing of the later blocks reaches them
        for n in model.block_param_names(k):
            assert torch.equal(grads_scrambled[n], grads[n]), n


@pytest.mark.parametrize('wrapper, enn', [
    (dict(), dict()),
    (dict(accumulative_counts=2, clip_grad=dict(max_norm=0.5)), dict()),
    (dict(), dict(gamma=1e-3, penalty_interval=3)),
])
def test_one_block_is_end_to_end_training(fmnist_root, tmp_path, wrapper, enn):
    runs = []
    for path, local in ((ENN_CFG, {}), (LOCAL_CFG, dict(cuts=[]))):
        cfg = tiny_cfg(path, fmnist_root, tmp_path / str(len(runs)), epochs=2, **local)
        cfg.optim_wrapper.update(wrapper)
        enn_cfg = cfg.model if cfg.model.type == 'ENNModel' else cfg.model.model
        enn_cfg.enn.update(enn)
        runner = Runner.from_cfg(cfg)
        runner.train()
        runs.append(runner)
    bp, local = runs
    assert type(local.model).__name__ == 'LocalENNImageClassifier'
    assert list(local.optim_wrapper.keys()) == ['block0']
    hub_bp, hub_local = bp.message_hub, local.message_hub
    for key in ('loss', 'loss_ortho'):  # step for step
        a = hub_bp.get_scalar(f'train/{key}').data[0]
        b = hub_local.get_scalar(f'train/{key}').data[0]
        assert len(a) == len(b) == 8
        assert (a == b).all(), key
    assert (hub_bp.get_scalar('train/lr').data[0] ==
            hub_local.get_scalar('train/block0.lr').data[0]).all()
    a, b = bp.model.state_dict(), local.model.state_dict()
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_training_lowers_every_local_loss_and_logs_per_block(fmnist_root, tmp_path):
    cfg = tiny_cfg(LOCAL_CFG, fmnist_root, tmp_path, epochs=5)
    runner = Runner.from_cfg(cfg)
    heads_before = copy.deepcopy(runner.model.local_heads.state_dict())
    runner.train()
    hub = runner.message_hub
    for k in range(6):
        loss = hub.get_scalar(f'train/block{k}.loss').data[0]
        assert len(loss) == 20
        assert loss[-4:].mean() < 0.95 * loss[:4].mean(), (k, loss)  # frozen head on the stem: -7%
        assert len(hub.get_scalar(f'train/block{k}.top1').data[0]) == 20
        lr = hub.get_scalar(f'train/block{k}.lr').data[0]
        assert lr[0] == pytest.approx(3e-2) and lr[-1] < lr[0]  # each block's own schedule
    # the frozen heads stayed as they were, the checkpoint has them and
    # every block's optimizer and scheduler state
    for key, value in runner.model.local_heads.state_dict().items():
        assert torch.equal(value, heads_before[key])
    ckpt = torch.load(tmp_path / 'epoch_5.pth', map_location='cpu', weights_only=False)
    keys = [f'block{k}' for k in range(6)]
    assert list(ckpt['optimizer']) == keys and list(ckpt['param_schedulers']) == keys
    assert all(ckpt['optimizer'][k]['state'] for k in keys)
    assert any(k.startswith('local_heads.block0.') for k in ckpt['state_dict'])


def test_resume_is_exact(fmnist_root, tmp_path):
    extra = dict(local_head=dict(type='conv_aux', channels=8))  # trained heads too
    full = Runner.from_cfg(tiny_cfg(LOCAL_CFG, fmnist_root, tmp_path / 'full', epochs=3, **extra))
    full.train()
    half = Runner.from_cfg(tiny_cfg(LOCAL_CFG, fmnist_root, tmp_path / 'half', epochs=1, **extra))
    half.train()
    cfg = tiny_cfg(LOCAL_CFG, fmnist_root, tmp_path / 'half', epochs=3, **extra)
    cfg.resume = True
    resumed = Runner.from_cfg(cfg)
    resumed.train()
    assert resumed.iter == full.iter == 12
    a, b = full.model.state_dict(), resumed.model.state_dict()
    assert any(k.startswith('local_heads.block0.conv') for k in a)
    for k in a:
        assert torch.allclose(a[k], b[k], rtol=0, atol=1e-6), k
    for key in full.optim_wrapper.keys():
        sa = full.optim_wrapper[key].state_dict()['state']
        sb = resumed.optim_wrapper[key].state_dict()['state']
        assert sa.keys() == sb.keys()
        for i in sa:
            assert torch.allclose(sa[i]['exp_avg'], sb[i]['exp_avg'], rtol=0, atol=1e-6)


def _run(args):
    proc = subprocess.run([sys.executable, *args], cwd=REPO, capture_output=True, text=True,
                          timeout=600, env=dict(os.environ, OMP_NUM_THREADS='1'))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout + proc.stderr


def test_tools_test_and_export_ignore_the_heads(fmnist_root, tmp_path, monkeypatch):
    cfg = tiny_cfg(LOCAL_CFG, fmnist_root, tmp_path, epochs=1)
    runner = Runner.from_cfg(cfg)
    runner.train()
    cfg_path = str(tmp_path / 'cfg.py')
    cfg.dump(cfg_path)
    # heads poisoned: any use of them would show as NaN scores
    ckpt = torch.load(tmp_path / 'epoch_1.pth', map_location='cpu', weights_only=False)
    for key in ckpt['state_dict']:
        if key.startswith('local_heads.'):
            ckpt['state_dict'][key] = torch.full_like(ckpt['state_dict'][key], float('nan'))
    torch.save(ckpt, tmp_path / 'poisoned.pth')

    out = _run(['tools/test.py', cfg_path, str(tmp_path / 'poisoned.pth'), '--out',
                str(tmp_path / 'preds.pkl'), '--cfg-options', 'log_level=INFO'])
    assert 'accuracy/top1' in out
    with open(tmp_path / 'preds.pkl', 'rb') as f:
        scores = torch.stack([p['pred_score'] for p in pickle.load(f)])
    assert scores.shape == (40, 10)

    # the plain classifier, without heads or plugin model, predicts the same
    plain_cfg = plain_config(cfg)
    init_default_scope('mmpretrain')
    plain = MODELS.build(
        dict(plain_cfg.model, data_preprocessor=plain_cfg.data_preprocessor)).eval()
    plain.load_state_dict(strip_local_heads(ckpt['state_dict']), strict=True)
    assert not any('local' in n for n, _ in plain.named_modules())
    loader = Runner.build_dataloader(plain_cfg.test_dataloader)
    with torch.no_grad():
        ref = torch.cat([torch.stack([s.pred_score for s in plain.val_step(d)]) for d in loader])
    torch.testing.assert_close(scores, ref)

    monkeypatch.setattr(sys, 'argv', ['export', cfg_path, str(tmp_path / 'epoch_1.pth'),
                                      str(tmp_path / 'plain.pth')])
    enn_mm.local.export.main()
    state = torch.load(tmp_path / 'plain.pth', map_location='cpu', weights_only=True)['state_dict']
    assert not any(k.startswith('local_heads.') for k in state)
    exported = Config.fromfile(str(tmp_path / 'plain.py'))
    assert exported.model.type == 'ENNModel'
    assert exported.optim_wrapper.constructor == 'ENNOptimWrapperConstructor'
    MODELS.build(exported.model).load_state_dict(state, strict=True)


def test_local_learning_keeps_one_block_of_activations():
    data = batch(16)
    peaks = {}
    for cuts in ([], 'resnet_block'):
        model = build(LOCAL_DENSE_CFG, cuts=cuts, local_head=dict(type='pool_linear'))
        optim = build_optim_wrapper(model, SGD)
        with SavedTensorMeter() as meter:
            model.train_step(data, optim)
        assert meter.live == 0  # every graph was freed
        peaks[str(cuts)] = meter.peak
    # 6 blocks: the largest block holds well under half the network's activations
    assert peaks['resnet_block'] < 0.45 * peaks['[]']


def test_frozen_pooled_heads_hold_no_optimizer_state():
    data = batch(8)
    model = build(LOCAL_DENSE_CFG, cuts='resnet_stage',
                  local_head=dict(type='pool_linear', frozen=True))
    head = model.local_heads.block0.fc
    before = head.weight.clone()
    assert not any(p.requires_grad for p in model.local_heads.parameters())
    assert not any(n.startswith('local_heads.') for k in range(model.num_blocks)
                   for n in model.block_param_names(k))
    optim = build_optim_wrapper(model, dict(SGD, optimizer=dict(type='SGD', lr=0.1,
                                                                momentum=0.9)))
    logs = model.train_step(data, optim)
    assert torch.equal(head.weight, before) and head.weight.grad is None
    assert torch.isfinite(logs['block0.loss'])
    state = optim['block0'].optimizer.state
    assert state and all(p is not head.weight for p in state)


def test_presets_resnet50_and_vit():
    init_default_scope('mmpretrain')
    r50 = MODELS.build(dict(type='ImageClassifier', backbone=dict(type='ResNet', depth=50),
                            neck=dict(type='GlobalAveragePooling'),
                            head=dict(type='LinearClsHead', num_classes=10, in_channels=2048)))
    cuts = enn_mm.local.resolve_cuts(r50, 'resnet_block')
    assert cuts[0] == 'backbone.maxpool' and len(cuts) == 17 and cuts[-1] == 'backbone.layer4.2'
    assert enn_mm.local.resolve_cuts(r50, 'resnet_stage') == [
        'backbone.layer1', 'backbone.layer2', 'backbone.layer3']

    vit = dict(type='ImageClassifier',
               backbone=dict(type='VisionTransformer', img_size=32, patch_size=8,
                             arch=dict(embed_dims=32, num_layers=4, num_heads=2,
                                       feedforward_channels=64)),
               head=dict(type='VisionTransformerClsHead', num_classes=10, in_channels=32))
    model = MODELS.build(dict(type='ENNLocalClassifier', model=vit,
                              cuts=dict(preset='vit', every=2), input_shape=(3, 32, 32),
                              local_head=dict(type='pool_linear')))
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


TINY = dict(type='ImageClassifier',
            backbone=dict(type='ResNet_CIFAR', depth=18, in_channels=1, stem_channels=8,
                          base_channels=8, num_stages=2, strides=(1, 2), dilations=(1, 1),
                          out_indices=(1, )),
            neck=dict(type='GlobalAveragePooling'),
            head=dict(type='LinearClsHead', num_classes=10, in_channels=16))


def local(**kw):
    init_default_scope('mmpretrain')
    cfg = dict(type='ENNLocalClassifier', model=copy.deepcopy(TINY), input_shape=(1, 28, 28))
    cfg.update(kw)
    return MODELS.build(cfg)


@pytest.mark.parametrize('kw, error, match', [
    (dict(cuts=['backbone.layer1.2']), ValueError,
     r"cut point 'backbone.layer1.2' is not a module .*Did you mean"),
    (dict(cuts=['backbone.layer2.0', 'backbone.layer1.0']), ValueError,
     r'out of forward order.*in the order \[.backbone.layer1.0., .backbone.layer2.0.\]'),
    (dict(cuts=['backbone.bn1', 'backbone.relu']), ValueError,
     r"block 1 \(from 'backbone.bn1' to 'backbone.relu'\) has no trainable parameters"),
    (dict(cuts=['backbone.layer1', 'backbone.layer1']), ValueError, 'more than once'),
    (dict(cuts='resnet_block', input_shape=(1, 224, 224), max_head_params=10**6), ValueError,
     r'frozen_linear local head of block 0 .* over the budget max_head_params'),
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


def test_wrong_optimizer_setup_is_named():
    model = local(cuts='resnet_stage')
    with pytest.raises(TypeError, match='ENNLocalOptimWrapperConstructor'):
        model.train_step(batch(), OptimWrapper(torch.optim.SGD(model.parameters(), lr=0.1)))
    init_default_scope('mmpretrain')
    plain = MODELS.build(copy.deepcopy(TINY))
    with pytest.raises(TypeError, match='needs a model built by ENNLocalClassifier'):
        build_optim_wrapper(plain, SGD)


def test_retraction_keeps_every_block_orthonormal():
    init_default_scope('mmpretrain')
    cfg = tiny_cfg(LOCAL_CFG, '', '')
    cfg.model.model.enn = dict(ortho='retract', retract_interval=1)
    model = MODELS.build(cfg.model)
    assert model.enn_options.gamma == 0
    with torch.no_grad():
        for B in enn_mm.core.bases(model):
            B.mul_(1.1)
    optim = build_optim_wrapper(model, SGD)
    model.train_step(batch(), optim)  # each block's step retracts its own bases
    assert enn_mm.orthogonality_error(model) < 1e-5


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
        enn_mm.local.probe_partition(_SkipAcrossCut(tied), [cut], (4, ))
    # cut after the skip's source instead: a valid partition
    part = enn_mm.local.probe_partition(_SkipAcrossCut(), ['a'], (4, ))
    assert part.params == [['a.weight', 'a.bias'], ['b.weight', 'b.bias', 'c.weight', 'c.bias']]
