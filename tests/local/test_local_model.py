"""enn_mm.local.local_model (ENNLocalClassifier): each block gets only its
local gradient, one block is end-to-end training, training lowers every
local loss, resume, activations, frozen heads, a wrong optimizer setup,
retraction per block."""
import copy

import pytest
import torch
import torch.nn.functional as F
from mmengine.optim import OptimWrapper, build_optim_wrapper
from mmengine.registry import init_default_scope
from mmengine.runner import Runner
from mmpretrain.registry import MODELS

import enn_mm
from enn_mm.local import SavedTensorMeter

from helpers import (
    ENN_CFG,
    LOCAL_CFG,
    LOCAL_DENSE_CFG,
    SGD,
    TINY,
    batch,
    build,
    full_and_resumed,
    local,
    one_thread,  # noqa: F401  (an autouse fixture)
    tiny_local_cfg,
)


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
    (dict(), dict(gamma=1e-3, penalty_probes=2)),  # the same probes, step by step
])
def test_one_block_is_end_to_end_training(fmnist_root, tmp_path, wrapper, enn):
    runs = []
    for path, options in ((ENN_CFG, {}), (LOCAL_CFG, dict(cuts=[]))):
        cfg = tiny_local_cfg(path, fmnist_root, tmp_path / str(len(runs)), epochs=2, **options)
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
    cfg = tiny_local_cfg(LOCAL_CFG, fmnist_root, tmp_path, epochs=5)
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
    extra = dict(local_head=dict(type='ENNConvAuxLocalHead', channels=8))  # trained heads too
    full, resumed = full_and_resumed(
        lambda work_dir, epochs: tiny_local_cfg(LOCAL_CFG, fmnist_root, work_dir, epochs=epochs,
                                                **extra), tmp_path)
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


def test_local_learning_keeps_one_block_of_activations():
    data = batch(16)
    peaks = {}
    for cuts in ([], 'resnet_block'):
        model = build(LOCAL_DENSE_CFG, cuts=cuts, local_head=dict(type='ENNPoolLinearLocalHead'))
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
                  local_head=dict(type='ENNPoolLinearLocalHead', frozen=True))
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
    cfg = tiny_local_cfg(LOCAL_CFG, '', '')
    cfg.model.model.enn = dict(ortho='retract', retract_interval=1)
    model = MODELS.build(cfg.model)
    assert model.enn_options.gamma == 0
    with torch.no_grad():
        for B in enn_mm.core.bases(model):
            B.mul_(1.1)
    optim = build_optim_wrapper(model, SGD)
    model.train_step(batch(), optim)  # each block's step retracts its own bases
    assert enn_mm.orthogonality_error(model) < 1e-5
