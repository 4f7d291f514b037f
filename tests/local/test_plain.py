"""enn_mm.local.plain: tools/test.py and the export ignore the local heads;
plain_checkpoint (tools/export_local.py) computes what the ENN-ℓ model
computes; tools/export_local.py."""
import os
import os.path as osp
import pickle
import subprocess
import sys

import pytest
import torch
from mmengine.config import Config
from mmengine.registry import init_default_scope
from mmengine.runner import Runner, load_checkpoint
from mmpretrain.registry import MODELS

from enn_mm.local import plain_config, strip_local_heads
from enn_mm.local.plain import plain_checkpoint
from enn_mm.models import ExportCheckError
from enn_mm.models.dense_export import export_cli

from helpers import (
    ENN_CFG,
    LOCAL_CFG,
    REPO,
    one_thread,  # noqa: F401  (an autouse fixture)
    tiny_local_cfg,
)


def _run(args):
    proc = subprocess.run([sys.executable, *args], cwd=REPO, capture_output=True, text=True,
                          timeout=600, env=dict(os.environ, OMP_NUM_THREADS='1'))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout + proc.stderr


def test_tools_test_and_export_ignore_the_heads(fmnist_root, tmp_path, monkeypatch):
    cfg = tiny_local_cfg(LOCAL_CFG, fmnist_root, tmp_path, epochs=1)
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

    export_cli(plain_checkpoint, 'export',
               [cfg_path, str(tmp_path / 'epoch_1.pth'), str(tmp_path / 'plain.pth')])
    state = torch.load(tmp_path / 'plain.pth', map_location='cpu', weights_only=True)['state_dict']
    assert not any(k.startswith('local_heads.') for k in state)
    exported = Config.fromfile(str(tmp_path / 'plain.py'))
    assert exported.model.type == 'ENNModel'
    assert exported.optim_wrapper.constructor == 'ENNOptimWrapperConstructor'
    MODELS.build(exported.model).load_state_dict(state, strict=True)


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


def test_export_local_tool(tmp_path):
    """tools/export_local.py writes what plain_checkpoint writes."""
    cfg_path, ckpt = local_checkpoint(tmp_path)
    proc = subprocess.run(
        [sys.executable, 'tools/export_local.py', cfg_path, ckpt, str(tmp_path / 'tool.pth'),
         '--cfg-options', 'log_level=INFO'],
        cwd=REPO, capture_output=True, text=True, timeout=600,
        env=dict(os.environ, OMP_NUM_THREADS='1'))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert 'local-head entries dropped' in proc.stdout + proc.stderr
    plain_checkpoint(cfg_path, ckpt, str(tmp_path / 'api.pth'))
    tool, api = (torch.load(tmp_path / f'{n}.pth', map_location='cpu', weights_only=True)
                 for n in ('tool', 'api'))
    assert tool['state_dict'].keys() == api['state_dict'].keys()
    assert all(torch.equal(v, api['state_dict'][k]) for k, v in tool['state_dict'].items())
    assert Config.fromfile(str(tmp_path / 'tool.py')).model == \
        Config.fromfile(str(tmp_path / 'api.py')).model
