"""enn_mm.models.enn_model (ENNModel) through mmengine's Runner: training,
the default retraction, resume, the SVD of the dense init, dense checkpoints,
ENN layers from conv_cfg, config errors, the weighted penalty and its
interval, the packaged config, and the model types as classes (pickling)."""
import copy
import io
import os.path as osp

import pytest
import torch
from mmengine.config import Config
from mmengine.hooks import Hook
from mmengine.registry import init_default_scope
from mmengine.runner import Runner
from mmpretrain.registry import MODELS
from mmpretrain.structures import DataSample

import enn_mm

from helpers import DEFAULT_CFG, DENSE_CFG, ENN_CFG, REPO, full_and_resumed, logits, tiny_enn_cfg


def params(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def test_training_lowers_loss_and_logs_loss_ortho(fmnist_root, tmp_path):
    cfg = tiny_enn_cfg(ENN_CFG, fmnist_root, tmp_path, epochs=5)
    runner = Runner.from_cfg(cfg)
    runner.train()
    hub = runner.message_hub
    loss = hub.get_scalar('train/loss').data[0]
    ortho = hub.get_scalar('train/loss_ortho').data[0]
    assert len(loss) == 20 and len(ortho) == 20
    assert loss[-4:].mean() < 0.9 * loss[:4].mean()
    assert (ortho >= 0).all() and ortho[-1] > 0
    assert type(runner.model).__name__ == 'ENNImageClassifier'
    # the optimizer holds every parameter of the model, factors included,
    # also after init_weights re-factored the Kaiming-initialized weights
    opt_params = {id(p) for g in runner.optim_wrapper.param_groups for p in g['params']}
    assert {id(p) for p in runner.model.parameters()} <= opt_params
    # weight decay is off for Q and P, on for λ (ENNOptimWrapperConstructor)
    decay = {}
    names = {id(p): n for n, p in runner.model.named_parameters()}
    for g in runner.optim_wrapper.param_groups:
        for p in g['params']:
            decay[names.get(id(p))] = g['weight_decay']
    assert decay['backbone.conv1.parametrizations.weight.original0'] == 0
    assert decay['backbone.conv1.parametrizations.weight.original2'] == 0
    assert decay['backbone.conv1.parametrizations.weight.original1'] == pytest.approx(0.05)


def test_default_config_retracts_every_10th_step(fmnist_root, tmp_path):
    """The demo config is ENN on the defaults: QR retraction after every 10th
    optimizer step, no penalty in the loss."""
    assert Config.fromfile(DEFAULT_CFG).model.enn == dict(ortho='retract', retract_interval=10)
    options = enn_mm.ENNOptions()
    assert (options.ortho, options.retract_interval, options.gamma) == ('retract', 10, 0.0)
    errors = []
    cfg = tiny_enn_cfg(DEFAULT_CFG, fmnist_root, tmp_path, epochs=3)  # 12 steps
    cfg.custom_hooks = []
    runner = Runner.from_cfg(cfg)

    class Record(Hook):  # after each step, its retraction (an optimizer post-step hook) done
        def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None):
            errors.append(enn_mm.orthogonality_error(runner.model))
    runner.register_hook(Record())
    runner.train()
    assert 'train/loss_ortho' not in runner.message_hub.log_scalars
    assert len(errors) == 12
    assert errors[9] < 1e-5  # step 10: just retracted
    assert min(errors[:9]) > 10 * errors[9]  # drifting before it (lr 3e-2 here)
    assert errors[10] > errors[9]


@pytest.mark.parametrize('enn', [dict(ortho='penalty'), dict(ortho='retract', retract_interval=3)])
def test_resume_continues_exactly(fmnist_root, tmp_path, enn):
    # 3 epochs of 4 iterations, interrupted after the first epoch
    full, resumed = full_and_resumed(
        lambda work_dir, epochs: tiny_enn_cfg(ENN_CFG, fmnist_root, work_dir, epochs=epochs, **enn),
        tmp_path)
    assert resumed.iter == full.iter == 12
    a, b = params(full.model), params(resumed.model)
    assert a.keys() == b.keys()
    for k in a:
        assert torch.allclose(a[k], b[k], rtol=0, atol=1e-6), k
    # retraction on steps 3, 6, 9, 12 only if the step counter was resumed
    # too (counting afresh after step 4 would retract on 7 and 10)
    if enn['ortho'] == 'retract':
        assert enn_mm.orthogonality_error(resumed.model) < 1e-4


def test_enn_starts_as_the_svd_of_the_dense_init(fmnist_root, tmp_path):
    init_default_scope('mmpretrain')
    cfgs = [tiny_enn_cfg(p, fmnist_root, tmp_path) for p in (DENSE_CFG, ENN_CFG)]
    models = []
    for cfg in cfgs:
        torch.manual_seed(0)
        m = MODELS.build(copy.deepcopy(cfg.model))
        m.init_weights()
        models.append(m)
    x = torch.randn(2, 1, 28, 28)
    dense, enn = (logits(m, x) for m in models)
    assert ((enn - dense).abs().max() / dense.abs().max()) <= 1e-5
    assert sum(1 for _ in enn_mm.enn_modules(models[1])) == 11


def _dense_checkpoint(cfg, path):
    init_default_scope('mmpretrain')
    torch.manual_seed(1)
    dense = MODELS.build(copy.deepcopy(cfg.model))
    dense.init_weights()
    with torch.no_grad():  # non-trivial BN statistics too
        for m in dense.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.1, 0.1)
    torch.save({'state_dict': dense.state_dict(), 'meta': {}}, path)
    return dense


def test_dense_checkpoint_loads_through_load_from_and_init_cfg(fmnist_root, tmp_path):
    dense_cfg = tiny_enn_cfg(DENSE_CFG, fmnist_root, tmp_path)
    ckpt = str(tmp_path / 'dense.pth')
    dense = _dense_checkpoint(dense_cfg, ckpt)
    x = torch.randn(2, 1, 28, 28)
    ref = logits(dense, x)

    cfg = tiny_enn_cfg(ENN_CFG, fmnist_root, tmp_path / 'a')
    cfg.load_from = ckpt
    runner = Runner.from_cfg(cfg)
    runner.load_or_resume()
    out = logits(runner.model, x)
    assert ((out - ref).abs().max() / ref.abs().max()) <= 1e-5

    cfg = tiny_enn_cfg(ENN_CFG, fmnist_root, tmp_path / 'b')
    cfg.model.model.init_cfg = dict(type='Pretrained', checkpoint=ckpt)
    init_default_scope('mmpretrain')
    model = MODELS.build(cfg.model)
    model.init_weights()
    assert sum(1 for _ in enn_mm.enn_modules(model)) == 11
    out = logits(model, x)
    assert ((out - ref).abs().max() / ref.abs().max()) <= 1e-5


def test_conv_cfg_builds_enn_layers():
    init_default_scope('mmpretrain')
    backbone = MODELS.build(dict(type='ResNet_CIFAR', depth=18, base_channels=8, stem_channels=8,
                                 conv_cfg=dict(type='ENNConv2d')))
    convs = [m for m in backbone.modules() if isinstance(m, torch.nn.Conv2d)]
    assert convs and all(enn_mm.core.is_enn(m) for m in convs)
    assert backbone(torch.randn(1, 3, 32, 32))[-1].shape == (1, 64, 4, 4)


def test_bad_enn_config_is_named():
    init_default_scope('mmpretrain')
    inner = dict(type='ImageClassifier', backbone=dict(type='LeNet5', num_classes=10))
    with pytest.raises(KeyError, match="unknown ENN option 'gama'"):
        MODELS.build(dict(type='ENNModel', model=inner, enn=dict(gama=1e-5)))
    with pytest.raises(ValueError, match="exclude pattern 'head.fc' matches no"):
        MODELS.build(dict(type='ENNModel', model=inner, enn=dict(exclude=['head.fc'])))


def test_loss_includes_weighted_penalty():
    init_default_scope('mmpretrain')
    inner = dict(type='ImageClassifier', backbone=dict(type='LeNet5', num_classes=10),
                 head=dict(type='ClsHead'))
    model = MODELS.build(dict(type='ENNModel', model=inner, enn=dict(gamma=0.5)))
    with torch.no_grad():
        for B in enn_mm.core.bases(model):
            B.mul_(1.2)
    samples = [DataSample().set_gt_label(1), DataSample().set_gt_label(2)]
    # training with retraction without the ENN optimizer wrapper: refused
    with pytest.raises(RuntimeError, match='ENNOptimWrapperConstructor'):
        model.loss(torch.randn(2, 1, 32, 32), samples)
    model.enn_step = 0  # the step a training loop passes in (ENNOptimWrapper does)
    losses = model.loss(torch.randn(2, 1, 32, 32), samples)
    assert losses['loss_ortho'].item() == pytest.approx(
        0.5 * enn_mm.orthogonality_penalty(model).item(), rel=1e-6)
    assert losses['loss_ortho'].item() > 0


def test_penalty_interval_applies_every_nth_step_scaled(fmnist_root, tmp_path):
    cfg = tiny_enn_cfg(ENN_CFG, fmnist_root, tmp_path, epochs=1, penalty_interval=2, gamma=1e-3)
    runner = Runner.from_cfg(cfg)
    runner.train()
    ortho = runner.message_hub.get_scalar('train/loss_ortho').data[0]
    assert len(ortho) == 4
    assert ortho[1] == 0 and ortho[3] == 0 and ortho[0] > 0 and ortho[2] > 0


def test_packaged_config_with_the_readme_lines_builds():
    cfg = Config.fromfile(osp.join(REPO, 'configs/enn/resnet18_8xb32_in1k.py'))
    assert cfg.model.model.backbone.type == 'ResNet' and cfg.model.model.backbone.depth == 18
    init_default_scope('mmpretrain')
    model = MODELS.build(cfg.model)
    assert type(model).__name__ == 'ENNImageClassifier'
    assert sum(1 for _ in enn_mm.enn_modules(model)) == 21  # 20 convs + fc


def test_model_types_are_classes_that_extend_the_built_model_and_pickle():
    """ENNModel and ENNLocalClassifier are registered classes named as in
    configs; building one gives the built model, an instance of both, one
    derived class per pair, stripped again by vanilla_class; the objects
    deep-copy and pickle (the derived class by its parts), and torch.save of
    a parametrized ENN model points to state_dict() (torch's own rule)."""
    import pickle

    from mmpretrain.models import ImageClassifier

    from enn_mm.local import ENNLocalClassifier
    from enn_mm.models import ENNModel, vanilla_class
    init_default_scope('mmpretrain')
    for name, cls in (('ENNModel', ENNModel), ('ENNLocalClassifier', ENNLocalClassifier)):
        assert MODELS.get(name) is cls and cls.__name__ == name
    cfg = tiny_enn_cfg(ENN_CFG, '', '')
    a, b = MODELS.build(copy.deepcopy(cfg.model)), MODELS.build(copy.deepcopy(cfg.model))
    assert type(a) is type(b) and type(a).__name__ == 'ENNImageClassifier'
    assert isinstance(a, ENNModel) and isinstance(a, ImageClassifier)
    assert vanilla_class(a) is ImageClassifier
    local_cfg = dict(type='ENNLocalClassifier', model=cfg.model.to_dict(), cuts='resnet_stage',
                     input_shape=(1, 28, 28))
    c = MODELS.build(copy.deepcopy(local_cfg))
    assert type(c) is type(MODELS.build(copy.deepcopy(local_cfg)))
    assert type(c).__name__ == 'LocalENNImageClassifier'
    assert isinstance(c, ENNLocalClassifier) and isinstance(c, ENNModel)
    assert vanilla_class(c) is ImageClassifier
    # a copy computes the same; pickling reaches the parametrized layers,
    # where torch names the supported way
    x = torch.randn(2, 1, 28, 28)
    for model in (a, c):
        twin = copy.deepcopy(model).eval()
        assert type(twin) is type(model)
        with torch.no_grad():
            torch.testing.assert_close(twin(x, mode='tensor'), model.eval()(x, mode='tensor'))
        with pytest.raises(RuntimeError, match='state_dict'):
            torch.save(model, io.BytesIO())
    # without parametrizations (ENN-ℓ of the dense network) the whole object pickles
    dense = tiny_enn_cfg(DENSE_CFG, '', '')
    d = MODELS.build(dict(local_cfg, model=dense.model.to_dict()))
    e = pickle.loads(pickle.dumps(d)).eval()
    assert type(e) is type(d) and isinstance(e, ENNLocalClassifier)
    with torch.no_grad():
        torch.testing.assert_close(e(x, mode='tensor'), d.eval()(x, mode='tensor'))
