"""ENN under the training features users already rely on: DDP, EMA, and
the ENN-ℓ checkpoint export (``tools/export_local.py``)."""
import copy
import os
import os.path as osp
import socket
import subprocess
import sys

import pytest
import torch
from mmengine.config import Config
from mmengine.registry import init_default_scope
from mmengine.runner import Runner, load_checkpoint

import enn_mm
import enn_mm.local.export
from conftest import REPO
from enn_mm.local.plain import plain_checkpoint
from enn_mm.models import ExportCheckError
from enn_mm.models.dense_export import export_cli
from mmpretrain.registry import MODELS
from test_mmpretrain import ENN_CFG, logits, tiny_cfg


def gn_cfg(root, work_dir, batch_size, **enn):
    """The tiny ENN ResNet with GroupNorm: per-sample statistics, so a batch
    split over ranks computes what the whole batch computes."""
    cfg = tiny_cfg(ENN_CFG, root, work_dir, **enn)
    cfg.model.model.backbone.norm_cfg = dict(type='GN', num_groups=4)
    cfg.train_dataloader.batch_size = batch_size
    # SGD: Adam's normalized steps would turn fp32 reduction-order noise on
    # near-zero gradients into lr-sized differences
    cfg.optim_wrapper.optimizer = dict(type='SGD', lr=0.05, momentum=0.9, weight_decay=1e-4)
    return cfg


def free_port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def test_ddp_two_processes_equal_one_process(fmnist_root, tmp_path):
    # retraction, penalty and a shared basis at once
    enn = dict(ortho='retract', retract_interval=3, gamma=1e-3,
               share=[dict(name='stage1', include=['backbone.layer1.*.conv2'], share='P')])
    single = Runner.from_cfg(gn_cfg(fmnist_root, tmp_path / 'single', 16, **enn))
    single.train()
    P = [m.parametrizations.weight.original2 for m in
         (single.model.backbone.layer1[0].conv2, single.model.backbone.layer1[1].conv2)]
    assert P[0] is P[1]

    cfg = gn_cfg(fmnist_root, tmp_path / 'ddp', 8, **enn)  # 2 x 8 = the same 16
    cfg_path = str(tmp_path / 'ddp.py')
    cfg.dump(cfg_path)
    env = dict(os.environ, OMP_NUM_THREADS='1', PYTHONPATH=REPO)
    proc = subprocess.run(
        [sys.executable, '-m', 'torch.distributed.run', '--nproc_per_node=2',
         f'--master_port={free_port()}', 'tools/train.py', cfg_path, '--launcher', 'pytorch'],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]

    ddp = torch.load(tmp_path / 'ddp' / 'epoch_2.pth', map_location='cpu',
                     weights_only=False)['state_dict']
    ref = single.model.state_dict()
    assert ddp.keys() == ref.keys()
    assert any('parametrizations.weight.original0' in k for k in ref)
    for k in ref:  # fp32: the all-reduce sums in another order than one batch
        assert torch.allclose(ddp[k], ref[k], rtol=1e-4, atol=1e-6), k
    assert enn_mm.orthogonality_error(single.model) > 0  # steps 7, 8 after the last retraction


def test_ema_model_is_a_valid_enn_model_and_exports(fmnist_root, tmp_path):
    cfg = tiny_cfg(ENN_CFG, fmnist_root, tmp_path, epochs=2)
    cfg.custom_hooks = [dict(type='EMAHook', momentum=0.1, priority='ABOVE_NORMAL')]
    runner = Runner.from_cfg(cfg)
    runner.train()
    ema_hook = [h for h in runner.hooks if type(h).__name__ == 'EMAHook'][0]
    ema = ema_hook.ema_model.module
    n = sum(1 for _ in enn_mm.enn_modules(ema))
    assert n == sum(1 for _ in enn_mm.enn_modules(runner.model)) == 11
    # the averaged factors differ from the live ones, and the EMA weights are
    # what the checkpoint stores under ema_state_dict
    live = dict(runner.model.named_parameters())
    assert any(not torch.equal(p, live[k]) for k, p in ema.named_parameters())
    x = torch.randn(2, 1, 28, 28)
    ref = logits(ema, x)
    dense = enn_mm.export_dense(copy.deepcopy(ema))
    assert torch.allclose(logits(dense, x), ref, atol=1e-6)
    ckpt = torch.load(tmp_path / 'epoch_2.pth', map_location='cpu', weights_only=False)
    assert any('parametrizations.weight.original1' in k for k in ckpt['ema_state_dict'])
    # loading the checkpoint (EMA swapped in by the hook at save time) works
    model = copy.deepcopy(runner.model)
    load_checkpoint(model, str(tmp_path / 'epoch_2.pth'), strict=True)
    assert torch.isfinite(logits(model, x)).all()


LOCAL_CFG = osp.join(REPO, 'configs/enn_local/resnet18w16_fmnist.py')
LOCAL_KEYS = ('local_heads.', 'local_loss.', 'local_objectives.')


def local_checkpoint(tmp_path):
    """The ENN-ℓ config (inner ENN ResNet shrunk to width 8, two stages) and
    a checkpoint of it with random BN statistics: (config path, checkpoint)."""
    cfg = Config.fromfile(LOCAL_CFG)
    inner = cfg.model.model.model  # ENNLocalClassifier > ENNModel > ImageClassifier
    inner.backbone.update(stem_channels=8, base_channels=8, num_stages=2, strides=(1, 2),
                          dilations=(1, 1), out_indices=(1, ))
    inner.head.in_channels = 16
    cfg_path, ckpt = str(tmp_path / 'local.py'), str(tmp_path / 'local.pth')
    cfg.dump(cfg_path)
    init_default_scope('mmpretrain')
    torch.manual_seed(0)
    model = MODELS.build(cfg.model)
    model.init_weights()
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.1, 0.1)
    torch.save(dict(state_dict=model.state_dict(),
                    meta=dict(dataset_meta=dict(classes=[str(i) for i in range(10)]))), ckpt)
    return cfg_path, ckpt


def test_plain_checkpoint_computes_what_the_local_model_computes(tmp_path, monkeypatch):
    cfg_path, ckpt = local_checkpoint(tmp_path)
    out = str(tmp_path / 'plain.pth')
    result = plain_checkpoint(cfg_path, ckpt, out)
    source = torch.load(ckpt, map_location='cpu', weights_only=True)['state_dict']
    n_local = sum(k.startswith(LOCAL_KEYS) for k in source)
    assert n_local > 0
    assert result == dict(checkpoint=out, config=str(tmp_path / 'plain.py'), dropped=n_local)

    # reference: the ENN-ℓ model itself, built and loaded here; the plain
    # model only from the written files, loaded safely
    init_default_scope('mmpretrain')
    enn_local = MODELS.build(Config.fromfile(cfg_path).model).eval()
    load_checkpoint(enn_local, ckpt, map_location='cpu', strict=True)
    exported = Config.fromfile(result['config'])
    assert exported.model.type == 'ENNModel' and exported.load_from is None
    assert exported.optim_wrapper.constructor == 'ENNOptimWrapperConstructor'
    saved = torch.load(out, map_location='cpu', weights_only=True)
    assert not any(k.startswith(LOCAL_KEYS) for k in saved['state_dict'])
    assert len(saved['state_dict']) == len(source) - n_local
    assert saved['meta']['dataset_meta']['classes'][3] == '3'
    assert saved['meta']['enn_local']['source'] == osp.abspath(ckpt)
    plain = MODELS.build(exported.model).eval()
    plain.load_state_dict(saved['state_dict'], strict=True)
    assert not any('local' in n for n, _ in plain.named_modules())
    x = torch.randn(5, 1, 28, 28, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        assert torch.equal(plain(x, mode='tensor'), enn_local(x, mode='tensor'))

    # a plain model that computes something else fails the check
    from enn_mm.local import plain as plain_module
    strip = plain_module.strip_local_heads

    def tampered(state_dict):
        state = strip(state_dict)
        key = next(k for k in state if k.endswith('head.fc.bias'))
        state[key] = state[key] + 1e-3
        return state

    monkeypatch.setattr(plain_module, 'strip_local_heads', tampered)
    with pytest.raises(ExportCheckError, match='differs from the ENN-ℓ model'):
        plain_checkpoint(cfg_path, ckpt, str(tmp_path / 'tampered.pth'))
    monkeypatch.undo()
    # a config without ENN-ℓ has no heads to drop: an error, on the CLI too
    with pytest.raises(ValueError, match='not an ENNLocalClassifier'):
        plain_checkpoint(cfg_path, ckpt, str(tmp_path / 'x.pth'),
                         cfg_options={'model': dict(_delete_=True, type='ImageClassifier')})
    with pytest.raises(SystemExit, match='not an ENNLocalClassifier'):
        export_cli(plain_checkpoint, 'export', [ENN_CFG, ckpt, str(tmp_path / 'x.pth')])


def test_export_local_tool_and_deprecated_module(tmp_path, monkeypatch):
    cfg_path, ckpt = local_checkpoint(tmp_path)
    proc = subprocess.run(
        [sys.executable, 'tools/export_local.py', cfg_path, ckpt, str(tmp_path / 'tool.pth'),
         '--cfg-options', 'log_level=INFO'],
        cwd=REPO, capture_output=True, text=True, timeout=600,
        env=dict(os.environ, OMP_NUM_THREADS='1'))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert 'local-head entries dropped' in proc.stdout + proc.stderr
    # python -m enn_mm.local.export: the same files, with a deprecation warning
    monkeypatch.setattr(sys, 'argv', ['export', cfg_path, ckpt, str(tmp_path / 'old.pth')])
    with pytest.warns(DeprecationWarning, match='tools/export_local.py'):
        enn_mm.local.export.main()
    tool, old = (torch.load(tmp_path / f'{n}.pth', map_location='cpu', weights_only=True)
                 for n in ('tool', 'old'))
    assert tool['state_dict'].keys() == old['state_dict'].keys()
    assert all(torch.equal(v, old['state_dict'][k]) for k, v in tool['state_dict'].items())
    assert Config.fromfile(str(tmp_path / 'tool.py')).model == \
        Config.fromfile(str(tmp_path / 'old.py')).model
