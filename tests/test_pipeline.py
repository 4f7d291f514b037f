"""Pipelined ENN-ℓ (ENNPipelineParallel + ENNPipelineTrainLoop) over gloo."""
import copy
import itertools
import os
import random
import subprocess
import sys
import time

import pytest
import torch
from mmengine.logging import MessageHub
from mmengine.registry import init_default_scope
from mmengine.runner import Runner
from torch import nn

from enn_mm.local import ENNPipelineParallel, plan_stages, probe_partition
from enn_mm.local.planning import (measure_block_times, penalty_period_mean, record_calls,
                                   refine_split)
from enn_mm.local.stage import check_segments
from enn_mm.local.step import LocalStep
from mmpretrain.registry import MODELS
from conftest import REPO
from test_lifecycle import free_port
from test_local import LOCAL_CFG, batch, build, tiny_cfg

PIPE_CFG = os.path.join(REPO, 'configs/enn_local/resnet18w16_fmnist_pipeline.py')


def pipe_cfg(root, work_dir, epochs, stages=2, **wrapper):
    """The shipped pipeline config, shrunk as test_local shrinks its base."""
    cfg = tiny_cfg(PIPE_CFG, root, work_dir, epochs=epochs)
    assert cfg.model_wrapper_cfg.type == 'ENNPipelineParallel'
    cfg.model_wrapper_cfg.update(stages=stages, **wrapper)
    cfg.train_cfg = dict(type='ENNPipelineTrainLoop', max_epochs=epochs, val_interval=epochs)
    cfg.log_level = 'INFO'  # the stage assignment and the epoch summaries
    return cfg


def launch(cfg, tmp_path, nproc, name, extra=(), wait=True, env=None):
    """Start ``nproc`` ranks of tools/train.py as torchrun would (env://);
    ``env`` overrides variables of every rank."""
    path = str(tmp_path / f'{name}.py')
    cfg.dump(path)
    port = str(free_port())
    procs, env_override = [], dict(env or {})
    for rank in range(nproc):
        env = dict(os.environ, OMP_NUM_THREADS='1', MASTER_ADDR='127.0.0.1', MASTER_PORT=port,
                   RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(nproc),
                   PYTHONPATH=os.pathsep.join([REPO, os.path.join(REPO, 'tests')]))
        env.update(env_override)
        procs.append(subprocess.Popen(
            [sys.executable, 'tools/train.py', path, *extra,
             *(['--launcher', 'pytorch'] if nproc > 1 else [])],
            cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    if not wait:
        return procs
    outs = [p.communicate(timeout=600)[0] for p in procs]
    for p, out in zip(procs, outs):
        assert p.returncode == 0, out[-4000:]
    return outs


def load(path):
    return torch.load(path, map_location='cpu', weights_only=False)


def assert_same_checkpoint(got, want, atol=0.0):
    """Same weights and the same optimizer state for every block."""
    assert got['state_dict'].keys() == want['state_dict'].keys()
    for k, v in want['state_dict'].items():
        assert torch.allclose(got['state_dict'][k], v, rtol=0, atol=atol), k
    assert got['optimizer'].keys() == want['optimizer'].keys()
    for key in want['optimizer']:
        w, g = want['optimizer'][key]['state'], got['optimizer'][key]['state']
        assert g.keys() == w.keys() and w, key
        for i in w:
            for name, v in w[i].items():
                if torch.is_tensor(v):
                    assert torch.allclose(g[i][name], v, rtol=0, atol=atol), (key, i, name)


# Heads of every kind and all three objectives; the reconstruction weight is
# 0 on blocks 2-3 and 1 on block 4, so the network input must travel past
# stages that do not read it themselves.
NEW_HEADS = dict(
    local_head=[dict(type='downstream', depth=2), dict(type='aux_net'), dict(type='conv_aux'),
                dict(type='downstream', depth=1), dict(type='aux_net')],
    local_objectives=[dict(type='classification', weight=dict(start=0.5, end=1.0)),
                      dict(type='reconstruction', weight=[1.0, 0.5, 0.0, 0.0, 1.0]),
                      dict(type='similarity', weight=0.5)])


@pytest.mark.parametrize('local', [{}, NEW_HEADS], ids=['frozen_heads', 'new_heads'])
def test_two_stages_equal_one_process_and_resume(fmnist_root, tmp_path, local):
    def pipe(work_dir, epochs):
        cfg = pipe_cfg(fmnist_root, work_dir, epochs)
        cfg.model.update(local)
        return cfg

    launch(tiny_cfg(LOCAL_CFG, fmnist_root, tmp_path / 'seq', epochs=2, **local), tmp_path, 1,
           'seq')
    seq = load(tmp_path / 'seq' / 'epoch_2.pth')
    if local:
        assert any(k.startswith('local_objectives.block4.1.decoder') for k in seq['state_dict'])

    outs = launch(pipe(tmp_path / 'pipe', 2), tmp_path, 2, 'pipe')
    log = outs[0]
    assert 'stage 0: blocks 0-' in log and 'stage 1: blocks' in log  # the assignment
    assert 'ENN-ℓ pipeline epoch 2: block0.loss' in log and 'stage1_busy' in log
    assert 'block5.loss' in log  # the last stage's blocks reach rank 0's log
    # Same arithmetic in the same order: the assembled checkpoint is bit for
    # bit the single-process one, optimizer states of every block included.
    assert_same_checkpoint(load(tmp_path / 'pipe' / 'epoch_2.pth'), seq)

    # Stop after one epoch, resume to two: still the same.
    launch(pipe(tmp_path / 'half', 1), tmp_path, 2, 'half1')
    launch(pipe(tmp_path / 'half', 2), tmp_path, 2, 'half2', ['--resume'])
    resumed = load(tmp_path / 'half' / 'epoch_2.pth')
    assert resumed['meta']['iter'] == seq['meta']['iter'] == 8
    assert_same_checkpoint(resumed, seq)


def test_two_stages_times_two_replicas_equal_one_process(fmnist_root, tmp_path):
    def cfg(work_dir, batch, pipeline):
        c = pipe_cfg(fmnist_root, work_dir, 2) if pipeline else \
            tiny_cfg(LOCAL_CFG, fmnist_root, work_dir, epochs=2)
        # GroupNorm and SGD: a batch split over replicas computes what the
        # whole batch computes (up to the order of the sums)
        c.model.model.model.backbone.norm_cfg = dict(type='GN', num_groups=4)
        c.optim_wrapper.optimizer = dict(type='SGD', lr=0.05, momentum=0.9, weight_decay=0.0)
        c.train_dataloader.batch_size = batch
        return c

    launch(cfg(tmp_path / 'seq', 16, False), tmp_path, 1, 'seq')
    outs = launch(cfg(tmp_path / 'pipe', 8, True), tmp_path, 4, 'pipe')  # 2 stages x 2 x 8
    assert '2 stages × 2 replicas' in outs[0]
    assert_same_checkpoint(load(tmp_path / 'pipe' / 'epoch_2.pth'),
                           load(tmp_path / 'seq' / 'epoch_2.pth'), atol=1e-5)


@pytest.mark.parametrize('kind', ['crash', 'hang'])
def test_a_dead_or_silent_stage_stops_the_others(fmnist_root, tmp_path, kind):
    cfg = pipe_cfg(fmnist_root, tmp_path / kind, 2, timeout=5)
    cfg.env_cfg = dict(dist_cfg=dict(backend='gloo', timeout=20))
    cfg.custom_imports.imports = [*cfg.custom_imports.imports, 'pipeline_faults']
    cfg.custom_hooks = [dict(type='ENNTestFaultHook', rank=1, at_iter=2, kind=kind)]
    procs = launch(cfg, tmp_path, 2, kind, wait=False)
    try:
        start = time.time()
        out = procs[0].communicate(timeout=120)[0]
        assert procs[0].returncode != 0
        assert time.time() - start < 90
        assert 'ENN-ℓ pipeline stage 0 (rank 0) could not send to stage 1 (rank 1)' in out, \
            out[-3000:]
        assert ('Timed out' in out) if kind == 'hang' else ('Stage 1 stopped' in out)
    finally:
        for p in procs:
            p.kill()
            p.wait()


def test_bad_layouts_are_refused():
    model = build(LOCAL_CFG)  # 6 blocks
    with pytest.raises(ValueError, match='only 6 blocks'):
        ENNPipelineParallel(model, stages=7)
    with pytest.raises(ValueError, match='world size 1 is not a multiple of stages=2'):
        ENNPipelineParallel(model, stages=2)
    with pytest.raises(TypeError, match='ENNLocalClassifier'):
        ENNPipelineParallel(nn.Linear(2, 2), stages=1)
    wrapper = ENNPipelineParallel(model, stages=1, assignment=[[0, 1, 2], [3, 4, 5]])
    with pytest.raises(ValueError, match='in 1 non-empty stages'):
        wrapper.plan(8)
    assert ENNPipelineParallel(model, stages=1).plan(8) == [list(range(6))]


def test_loop_without_the_wrapper_or_with_ema_is_refused(fmnist_root, tmp_path):
    cfg = pipe_cfg(fmnist_root, tmp_path, 1)
    cfg.model_wrapper_cfg = None
    with pytest.raises(TypeError, match="model_wrapper_cfg=dict\\(type='ENNPipelineParallel'"):
        Runner.from_cfg(cfg).train()
    cfg = pipe_cfg(fmnist_root, tmp_path, 1)  # 2 stages, launched as one process
    with pytest.raises(ValueError, match='world size 1 is not a multiple of stages=2: launch'):
        Runner.from_cfg(cfg).train()
    cfg = pipe_cfg(fmnist_root, tmp_path, 1, stages=1)
    cfg.custom_hooks = [dict(type='EMAHook')]
    with pytest.raises(TypeError, match='EMAHook cannot follow a pipelined'):
        Runner.from_cfg(cfg).train()


def test_one_process_runs_as_one_stage(fmnist_root, tmp_path):
    runner = Runner.from_cfg(pipe_cfg(fmnist_root, tmp_path, 1, stages=1))
    runner.train()
    assert isinstance(runner.model, ENNPipelineParallel) and runner.model.blocks == [
        list(range(6))]
    assert runner.iter == 4


def test_plan_stages_minimizes_the_slowest_stage():
    rng = random.Random(0)
    for _ in range(50):
        costs = [rng.randint(1, 20) for _ in range(rng.randint(1, 8))]
        for k in range(1, len(costs) + 1):
            got = plan_stages(costs, k)
            assert [b for g in got for b in g] == list(range(len(costs)))
            assert all(got) and len(got) == k
            best = min(  # brute force over every placement of the k - 1 boundaries
                max(sum(costs[a:b]) for a, b in zip((0, *cut), (*cut, len(costs))))
                for cut in itertools.combinations(range(1, len(costs)), k - 1))
            assert max(sum(costs[b] for b in g) for g in got) == best
    with pytest.raises(ValueError, match='cannot split 3 blocks into 4'):
        plan_stages([1, 2, 3], 4)


def test_refine_split_moves_blocks_by_measured_stage_times():
    # Blocks run 1.5x slower in the second stage than alone (as layers with
    # large weights do beside another busy stage): the split planned from
    # the blocks alone leaves stage 1 slowest, and trying it fixes that.
    base = [3, 5, 4, 4, 5, 2, 3, 2, 6, 3, 3, 3]

    def true_times(blocks):
        return [sum(base[b] for b in g) * (1 + 0.5 * s) for s, g in enumerate(blocks)]

    agreed = []
    blocks, tried = refine_split(base, 2, true_times, rounds=4,
                                 agree=lambda b: agreed.append(b) or b)
    first = plan_stages(base, 2)
    assert tried[0][0] == first and 2 <= len(tried) <= 4
    assert all(b in agreed for b, _ in tried)
    assert tried[0][1] == true_times(first) and max(true_times(first)) == 33.0
    assert max(true_times(blocks)) == min(max(t) for _, t in tried) < 33.0
    # the best contiguous split under these times, by brute force
    best = min(max(true_times([list(range(c)), list(range(c, len(base)))]))
               for c in range(1, len(base)))
    assert max(true_times(blocks)) == best

    # Times that match the costs: the plan repeats, one trial, kept.
    blocks, tried = refine_split(base, 3, lambda b: [sum(base[i] for i in g) for g in b],
                                 rounds=3)
    assert len(tried) == 1 and blocks == plan_stages(base, 3)


def test_penalty_period_mean_weighs_the_penalty_step_once():
    # period 3: one step at (10, 4), two at (1, 1) -> (4, 2)
    assert penalty_period_mean(lambda i: [10.0, 4.0] if i == 0 else [1.0, 1.0], 3) == [4.0, 2.0]
    calls = []
    assert penalty_period_mean(lambda i: calls.append(i) or [5.0], 1) == [5.0] and calls == [0]


def test_block_timing_averages_a_periodic_penalty(monkeypatch):
    """With the penalty every n-th step, blocks are timed with and without it
    (their cost is the mean over n steps); the Runner's counter is restored."""
    init_default_scope('mmpretrain')
    cfg = tiny_cfg(LOCAL_CFG, '', '')
    cfg.model.model.enn.update(gamma=1e-3, penalty_interval=4)
    model = MODELS.build(cfg.model)
    gammas, init = [], LocalStep.__init__

    def spy(self, *args, **kwargs):
        init(self, *args, **kwargs)
        gammas.append(self.gamma)

    monkeypatch.setattr(LocalStep, '__init__', spy)
    hub = MessageHub.get_current_instance()
    hub.update_info('iter', 7)
    times = measure_block_times(model, 4, steps=2)
    # warm-up and two timed steps with the penalty (weighted n·γ), two without
    assert gammas == [pytest.approx(4e-3)] * 3 + [0.0] * 2
    assert hub.get_info('iter') == 7
    assert len(times) == model.num_blocks and all(t > 0 for t in times)


class Toy(nn.Module):
    def __init__(self, skip):
        super().__init__()
        self.a, self.b, self.skip = nn.Conv2d(1, 4, 3, padding=1), nn.Conv2d(4, 4, 3), skip

    def forward(self, x, mode='tensor'):
        y = self.b(torch.relu(self.a(x)))
        # a parameter-free skip from the input past the cut: no gradient
        # crosses it, but a later stage alone never sees x
        return y + x.mean() if self.skip else y


def test_a_stage_that_cannot_run_alone_is_refused():
    for skip in (False, True):
        toy = Toy(skip)
        partition = probe_partition(toy, ['a'], (1, 8, 8))
        record = record_calls(toy, partition, (1, 8, 8))
        assert record.block_macs == [8 * 8 * 4 * 9, 6 * 6 * 4 * 4 * 9]
        if skip:
            with pytest.raises(ValueError, match="output of cut point 'a'"):
                check_segments(toy, partition, record, [[0], [1]])
        else:
            check_segments(toy, partition, record, [[0], [1]])


@pytest.mark.parametrize('world,stages,round_up', [(4, 2, True), (6, 3, False), (2, 2, True)])
def test_pipeline_sampler_shards_over_replicas_as_data_parallel_does(monkeypatch, world,
                                                                    stages, round_up):
    """Rank r of a pipeline reads what rank r // stages of a data-parallel
    run of world // stages processes reads: DefaultSampler is the reference."""
    import mmengine.dataset.sampler as default_module
    import enn_mm.local.pipeline_sampler as pipe_module
    from mmengine.dataset import DefaultSampler
    from enn_mm.local import ENNPipelineSampler
    dataset = list(range(23))
    for rank in range(world):
        monkeypatch.setattr(pipe_module, 'get_dist_info', lambda: (rank, world))
        got = ENNPipelineSampler(dataset, stages=stages, seed=3, round_up=round_up)
        monkeypatch.setattr(default_module, 'get_dist_info',
                            lambda: (rank // stages, world // stages))
        want = DefaultSampler(dataset, seed=3, round_up=round_up)
        assert list(got) == list(want) and len(got) == len(want)
    monkeypatch.setattr(pipe_module, 'get_dist_info', lambda: (0, 3))
    with pytest.raises(ValueError, match='dividing the world size 3'):
        ENNPipelineSampler(dataset, stages=2)


def test_the_wrapper_plans_itself_and_steps_as_one_process():
    """Without ENNPipelineHook the first train_step plans; a one-stage
    pipeline's step equals the model's own train_step bit for bit."""
    from mmengine.optim import build_optim_wrapper
    model = build(LOCAL_CFG)
    twin = copy.deepcopy(model)
    data = batch(8)
    optim = dict(constructor='ENNLocalOptimWrapperConstructor',
                 optimizer=dict(type='SGD', lr=0.1, momentum=0.9, weight_decay=0.0))
    pipe = ENNPipelineParallel(model, stages=1, balance='estimate')
    assert pipe.blocks is None
    got = pipe.train_step(copy.deepcopy(data), build_optim_wrapper(model, optim))
    want = twin.train_step(copy.deepcopy(data), build_optim_wrapper(twin, optim))
    assert pipe.blocks == [list(range(model.num_blocks))]
    assert got.keys() == want.keys()
    for (name, p), q in zip(model.named_parameters(), twin.parameters()):
        assert torch.equal(p, q), name


def test_loop_registers_the_pipeline_hook_once(fmnist_root, tmp_path):
    from enn_mm.local import ENNPipelineHook, ENNPipelineSampler
    cfg = pipe_cfg(fmnist_root, tmp_path, 1, stages=1)
    cfg.custom_hooks = [dict(type='ENNPipelineHook')]
    runner = Runner.from_cfg(cfg)
    runner.train()
    assert sum(isinstance(h, ENNPipelineHook) for h in runner.hooks) == 1
    assert isinstance(runner.train_dataloader.sampler, ENNPipelineSampler)
    log = open(runner.logger.log_file).read()  # the hook's epoch summary
    assert 'ENN-ℓ pipeline epoch 1: block0.loss' in log and 'stage0_busy' in log
