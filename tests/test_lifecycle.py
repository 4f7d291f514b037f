"""ENN under the training features users already rely on: DDP, EMA."""
import copy
import os
import os.path as osp
import socket
import subprocess
import sys

import torch
from mmengine.runner import Runner, load_checkpoint

import enn_mm
from conftest import REPO
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
