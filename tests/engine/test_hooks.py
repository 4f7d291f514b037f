"""enn_mm.engine.hooks: ENNDiagnosticsHook logs, plots and stops on NaN."""
import os.path as osp

import pytest
import torch
from mmengine.hooks import Hook
from mmengine.runner import Runner

import enn_mm

from helpers import ENN_CFG, tiny_enn_cfg


def test_diagnostics_hook_logs_plots_and_stops_on_nan(fmnist_root, tmp_path):
    cfg = tiny_enn_cfg(ENN_CFG, fmnist_root, tmp_path / 'ok', epochs=2)
    cfg.custom_hooks = [dict(type='ENNDiagnosticsHook', interval=2)]
    runner = Runner.from_cfg(cfg)
    runner.train()
    hook = [h for h in runner.hooks if type(h).__name__ == 'ENNDiagnosticsHook'][0]
    assert [r['iter'] for r in hook.history] == [0, 2, 4, 6, 8]
    assert hook.history[0]['ortho_err_max'] < 1e-5  # SVD init: orthonormal
    assert hook.history[-1]['ortho_err_max'] == pytest.approx(
        enn_mm.orthogonality_error(runner.model), rel=1e-6)
    for png in ('orthogonality.png', 'spectra.png'):
        assert osp.getsize(tmp_path / 'ok' / 'enn_diagnostics' / png) > 1000

    class PoisonHook(Hook):  # a NaN appears in one layer's λ at iteration 3
        def before_train_iter(self, runner, batch_idx, data_batch=None):
            if runner.iter == 2:
                with torch.no_grad():
                    conv = runner.model.backbone.layer1[1].conv2
                    conv.parametrizations.weight.original1[0, 0] = float('nan')

    cfg = tiny_enn_cfg(ENN_CFG, fmnist_root, tmp_path / 'nan', epochs=2)
    cfg.custom_hooks = [dict(type='ENNDiagnosticsHook', interval=100)]
    runner = Runner.from_cfg(cfg)
    runner.register_hook(PoisonHook())
    with pytest.raises(RuntimeError, match=r'iteration 3.*backbone\.layer1\.1\.conv2'):
        runner.train()
