"""enn_mm.models.dense_export: tools/export_dense.py and a vanilla MMPretrain
load of its output, the dense config, and the export of an EMA model."""
import copy
import pickle
import subprocess
import sys

import pytest
import torch
from mmengine.config import Config
from mmengine.registry import init_default_scope
from mmengine.runner import Runner, load_checkpoint
from mmpretrain.registry import MODELS

import enn_mm

from helpers import DEFAULT_CFG, DENSE_CFG, ENN_CFG, REPO, logits, tiny_enn_cfg


def _run(args, **kw):
    proc = subprocess.run([sys.executable, *args], cwd=REPO, capture_output=True, text=True,
                          timeout=600, **kw)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout + proc.stderr


VANILLA = '''
import sys, torch
from mmengine.config import Config
from mmengine.hooks import Hook
from mmengine.registry import init_default_scope
from mmpretrain.registry import MODELS
cfg = Config.fromfile(sys.argv[1])
init_default_scope('mmpretrain')
model = MODELS.build(cfg.model).eval()
ckpt = torch.load(sys.argv[2], map_location='cpu', weights_only=True)
model.load_state_dict(ckpt['state_dict'], strict=True)
with torch.no_grad():
    torch.save(model(torch.load(sys.argv[3]), mode='tensor'), sys.argv[4])
assert not any(m.startswith('enn_mm') for m in sys.modules), 'plugin was imported'
'''


def test_tools_test_export_and_vanilla_load(fmnist_root, tmp_path):
    cfg = tiny_enn_cfg(ENN_CFG, fmnist_root, tmp_path, epochs=1)
    runner = Runner.from_cfg(cfg)
    runner.train()
    cfg_path, ckpt = str(tmp_path / 'cfg.py'), str(tmp_path / 'epoch_1.pth')
    cfg.dump(cfg_path)

    out = _run(['tools/test.py', cfg_path, ckpt, '--out', str(tmp_path / 'preds.pkl'),
                '--cfg-options', 'log_level=INFO'])
    assert 'accuracy/top1' in out
    with open(tmp_path / 'preds.pkl', 'rb') as f:
        preds = pickle.load(f)
    assert len(preds) == 40

    out = _run(['tools/export_dense.py', cfg_path, ckpt, str(tmp_path / 'dense.pth'),
                '--cfg-options', 'log_level=INFO'])
    assert 'max relative output difference' in out
    x = torch.randn(3, 1, 28, 28)
    torch.save(x, tmp_path / 'x.pt')
    with open(tmp_path / 'vanilla.py', 'w') as f:
        f.write(VANILLA)
    _run([str(tmp_path / 'vanilla.py'), str(tmp_path / 'dense.py'), str(tmp_path / 'dense.pth'),
          str(tmp_path / 'x.pt'), str(tmp_path / 'y.pt')])
    init_default_scope('mmpretrain')
    model = MODELS.build(cfg.model)
    load_checkpoint(model, ckpt, strict=True)
    ref = logits(model, x)
    assert ((torch.load(tmp_path / 'y.pt') - ref).abs().max() / ref.abs().max()) <= 1e-5
    dense_cfg = Config.fromfile(str(tmp_path / 'dense.py'))
    assert 'custom_imports' not in dense_cfg
    assert not any(h['type'].startswith('ENN') for h in dense_cfg.custom_hooks)
    # the package function behind the tool: a failed output check is an error
    from enn_mm.models import ExportCheckError, export_checkpoint
    with pytest.raises(ExportCheckError, match='differs from the ENN model'):
        export_checkpoint(cfg, ckpt, str(tmp_path / 'strict.pth'), tolerance=-1.0)


def test_dense_config_is_the_baseline():
    """The dense config of the ENN demo config is the dense baseline's
    model and optimizer, without the plugin."""
    from enn_mm.models import dense_config
    dense = dense_config(Config.fromfile(DEFAULT_CFG))
    base = Config.fromfile(DENSE_CFG)
    assert dense.model == base.model and dense.optim_wrapper == base.optim_wrapper
    assert 'custom_imports' not in dense and dense.custom_hooks == []
    layers = Config(dict(model=dict(type='ENNModel', model=dict(
        type='ImageClassifier', backbone=dict(type='ResNet', depth=18,
                                              conv_cfg=dict(type='ENNConv2d'))))))
    assert dense_config(layers).model.backbone.conv_cfg == dict(type='Conv2d')


def test_ema_model_is_a_valid_enn_model_and_exports(fmnist_root, tmp_path):
    cfg = tiny_enn_cfg(ENN_CFG, fmnist_root, tmp_path, epochs=2)
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
    # the checkpoint's state_dict holds the EMA weights (swapped in by the hook
    # at save time): loaded into a model, it computes what the EMA model does
    model = copy.deepcopy(runner.model)
    assert not torch.allclose(logits(model, x), ref, atol=1e-6)  # live weights differ
    load_checkpoint(model, str(tmp_path / 'epoch_2.pth'), strict=True)
    assert torch.allclose(logits(model, x), ref, atol=1e-6)
