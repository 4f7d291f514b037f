"""enn_mm.engine.dist: ENN under DDP (two processes over gloo)."""
import os
import subprocess
import sys

import pytest
import torch
from mmengine.runner import Runner

import enn_mm

from helpers import ENN_CFG, REPO, free_port, tiny_enn_cfg


def gn_cfg(root, work_dir, batch_size, **enn):
    """The tiny ENN ResNet with GroupNorm: per-sample statistics, so a batch
    split over ranks computes what the whole batch computes."""
    cfg = tiny_enn_cfg(ENN_CFG, root, work_dir, **enn)
    cfg.model.model.backbone.norm_cfg = dict(type='GN', num_groups=4)
    cfg.train_dataloader.batch_size = batch_size
    # SGD: Adam's normalized steps would turn fp32 reduction-order noise on
    # near-zero gradients into lr-sized differences
    cfg.optim_wrapper.optimizer = dict(type='SGD', lr=0.05, momentum=0.9, weight_decay=1e-4)
    return cfg


@pytest.mark.parametrize('probes', [None, 2], ids=['exact', 'probes'])
def test_ddp_two_processes_equal_one_process(fmnist_root, tmp_path, probes):
    # retraction, penalty and a shared basis at once; with penalty_probes every
    # rank draws the probes one process draws (seeded by step and basis)
    enn = dict(ortho='retract', retract_interval=3, gamma=1e-3, penalty_probes=probes,
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
