"""tools/benchmarks/bp_pipeline.py: end-to-end BP pipelined over 2 gloo
processes with torch.distributed.pipelining trains what one process trains
with the same micro-batches accumulated."""
import os
import subprocess
import sys

import pytest
import torch
from mmengine.optim import build_optim_wrapper
from mmengine.registry import init_default_scope
from mmpretrain.registry import MODELS

from helpers import REPO, free_port

ENN_L = os.path.join(REPO, 'configs/enn_local/resnet18w16_fmnist.py')


def recipe_file(tmp_path):
    """The demo ENN-ℓ config with retraction after every step and SGD
    (Adam's normalized steps would turn fp32 reduction-order noise on
    near-zero gradients into lr-sized differences)."""
    path = tmp_path / 'recipe.py'
    path.write_text(
        f'_base_ = [{ENN_L!r}]\n'
        "model = dict(model=dict(enn=dict(_delete_=True, ortho='retract', retract_interval=1)))\n"
        "optim_wrapper = dict(optimizer=dict(_delete_=True, type='SGD', lr=0.05, momentum=0.9,"
        ' weight_decay=1e-4), paramwise_cfg=dict(_delete_=True))\n')
    return str(path)


def test_pipelined_bp_equals_one_process_with_accumulation(tmp_path):
    import bp_pipeline

    from _common import recipe
    config = recipe_file(tmp_path)
    env = dict(os.environ, OMP_NUM_THREADS='1',
               PYTHONPATH=os.pathsep.join([REPO, os.path.join(REPO, 'tools', 'benchmarks')]))
    proc = subprocess.run(
        [sys.executable, '-m', 'torch.distributed.run', '--nproc_per_node=2',
         f'--master_port={free_port()}', 'tools/benchmarks/bp_pipeline.py', config,
         '--cuts', 'backbone.layer2', '--microbatches', '4', '--batch', '16', '--steps', '2',
         '--save', str(tmp_path / 'out')],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]

    # one process: every micro-batch's loss / 4 backpropagated, then one step
    init_default_scope('mmpretrain')
    r = recipe(config)
    torch.manual_seed(0)
    model = MODELS.build(r['bp'])
    start = {k: v.clone() for k, v in model.state_dict().items()}
    optim = build_optim_wrapper(model, r['bp_optim'])
    model.train()
    for step in range(2):
        data = model.data_preprocessor(bp_pipeline.random_batch(r['input_shape'], 16, 10, step),
                                       True)
        target = torch.cat([s.gt_label for s in data['data_samples']])
        for x, y in zip(data['inputs'].chunk(4), target.chunk(4)):
            (model.head.loss_module(model(x, mode='tensor'), y) / 4).backward()
        optim.step()
        optim.zero_grad()
    got = {**torch.load(tmp_path / 'out' / 'stage0.pth'),
           **torch.load(tmp_path / 'out' / 'stage1.pth')}
    want = model.state_dict()
    assert got.keys() == want.keys()
    assert any(k.startswith('backbone.layer3') for k in torch.load(tmp_path / 'out' / 'stage1.pth'))
    for k in want:  # fp32 sums in the same order up to the stage boundary
        assert torch.allclose(got[k].float(), want[k].float(), rtol=1e-4, atol=1e-6), k
    assert any(not torch.equal(want[k], start[k]) for k in want)


def test_bad_pipelined_bp_input_is_refused(tmp_path):
    import bp_pipeline

    from _common import recipe
    init_default_scope('mmpretrain')
    r = recipe(recipe_file(tmp_path))
    model = MODELS.build(r['bp'])
    with pytest.raises(ValueError, match="cut 'backbone.layer9' is not a unit"):
        bp_pipeline.split_units(model, ['backbone.layer9'])
    stages = bp_pipeline.split_units(model, ['backbone.layer1'])
    x = torch.randn(2, 1, 28, 28)
    with torch.no_grad():
        model.eval()
        assert torch.allclose(stages[1](stages[0](x)), model(x, mode='tensor'))
    penalty = recipe(ENN_L)  # the demo ENN-ℓ recipe keeps the paper's penalty
    with pytest.raises(ValueError, match="adds no orthonormality penalty.*ortho='retract'"):
        bp_pipeline.PipelinedBP(MODELS.build(penalty['bp']), ['backbone.layer1'],
                                penalty['bp_optim'], 4, 0, 2, torch.device('cpu'))
    batch = bp_pipeline.random_batch((1, 28, 28), 10, 10, 0)
    pipe = object.__new__(bp_pipeline.PipelinedBP)
    pipe.n = 4
    with pytest.raises(ValueError, match='4 micro-batches do not divide the batch of 10'):
        bp_pipeline.PipelinedBP.train_step(pipe, batch)
