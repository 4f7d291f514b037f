"""Pipelined ENN-ℓ (enn_mm.local.pipeline, pipeline_loop, pipeline_hook,
pipeline_sampler) over gloo: equal to one process, layouts, faults."""
import copy
import time

import pytest
import torch
from mmengine.runner import Runner
from torch import nn

from enn_mm.local import ENNPipelineParallel

from helpers import (
    LOCAL_CFG,
    assert_same_checkpoint,
    batch,
    build,
    launch,
    load,
    pipe_cfg,
    tiny_local_cfg,
)

# Heads of every kind and all three objectives; the reconstruction weight is
# 0 on blocks 2-3 and 1 on block 4, so the network input must travel past
# stages that do not read it themselves.
NEW_HEADS = dict(
    local_head=[dict(type='ENNDownstreamLocalHead', depth=2), dict(type='ENNAuxNetLocalHead'),
                dict(type='ENNConvAuxLocalHead'), dict(type='ENNDownstreamLocalHead', depth=1),
                dict(type='ENNAuxNetLocalHead')],
    local_objectives=[dict(type='ENNClassificationObjective', weight=dict(start=0.5, end=1.0)),
                      dict(type='ENNReconstructionObjective', weight=[1.0, 0.5, 0.0, 0.0, 1.0]),
                      dict(type='ENNSimilarityObjective', weight=0.5)])


@pytest.mark.parametrize('local', [{}, NEW_HEADS], ids=['frozen_heads', 'new_heads'])
def test_two_stages_equal_one_process_and_resume(fmnist_root, tmp_path, local):
    def pipe(work_dir, epochs):
        cfg = pipe_cfg(fmnist_root, work_dir, epochs)
        cfg.model.update(local)
        return cfg

    launch(tiny_local_cfg(LOCAL_CFG, fmnist_root, tmp_path / 'seq', epochs=2, **local), tmp_path, 1,
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

    # Resume the run from its epoch-1 checkpoint (``--resume PATH``, as a
    # user restarts a stopped run) into a new work dir: still the same.
    log = launch(pipe(tmp_path / 'resumed', 2), tmp_path, 2, 'resumed',
                 ['--resume', str(tmp_path / 'pipe' / 'epoch_1.pth')])[0]
    assert 'resumed epoch: 1, iter: 4' in log and 'ENN-ℓ pipeline epoch 1:' not in log
    resumed = load(tmp_path / 'resumed' / 'epoch_2.pth')
    assert resumed['meta']['iter'] == seq['meta']['iter'] == 8
    assert_same_checkpoint(resumed, seq)


def test_fast_recipe_pipelined_equals_one_process_and_resumes(fmnist_root, tmp_path):
    """configs/enn_local/resnet18w16_fmnist_fast.py (two blocks, AugLocal
    copies, retraction every 10th step) on 2 stages: bit for bit the
    single-process run, and so after a resume from iteration 4 (each
    block's retraction count restored, so both retract at iteration 10)."""
    import os.path as osp

    from mmengine.config import Config

    from helpers import PIPE_CFG, REPO
    fast = osp.join(REPO, 'configs/enn_local/resnet18w16_fmnist_fast.py')
    shipped = Config.fromfile(PIPE_CFG)

    def pipe(work_dir):
        cfg = tiny_local_cfg(fast, fmnist_root, work_dir, epochs=3)
        cfg.model_wrapper_cfg = dict(shipped.model_wrapper_cfg, stages=2)
        cfg.train_cfg = dict(shipped.train_cfg, max_epochs=3, val_interval=3)
        cfg.env_cfg = shipped.env_cfg
        cfg.log_level = 'INFO'
        return cfg

    seq_cfg = tiny_local_cfg(fast, fmnist_root, tmp_path / 'seq', epochs=3)
    assert seq_cfg.model.model.enn == dict(ortho='retract', retract_interval=10)
    launch(seq_cfg, tmp_path, 1, 'seq')
    seq = load(tmp_path / 'seq' / 'epoch_3.pth')
    assert seq['meta']['iter'] == 12  # 4 iterations an epoch: one retraction, at 10
    log = launch(pipe(tmp_path / 'pipe'), tmp_path, 2, 'pipe')[0]
    assert 'stage 0: blocks 0-0' in log and 'stage 1: blocks 1-1' in log
    assert_same_checkpoint(load(tmp_path / 'pipe' / 'epoch_3.pth'), seq)
    log = launch(pipe(tmp_path / 'resumed'), tmp_path, 2, 'resumed',
                 ['--resume', str(tmp_path / 'pipe' / 'epoch_1.pth')])[0]
    assert 'resumed epoch: 1, iter: 4' in log
    assert_same_checkpoint(load(tmp_path / 'resumed' / 'epoch_3.pth'), seq)


def test_two_stages_times_two_replicas_equal_one_process(fmnist_root, tmp_path):
    def cfg(work_dir, batch, pipeline):
        c = pipe_cfg(fmnist_root, work_dir, 2) if pipeline else \
            tiny_local_cfg(LOCAL_CFG, fmnist_root, work_dir, epochs=2)
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


@pytest.mark.parametrize('world,stages,round_up', [(4, 2, True), (6, 3, False), (2, 2, True)])
def test_pipeline_sampler_shards_over_replicas_as_data_parallel_does(monkeypatch, world,
                                                                    stages, round_up):
    """Rank r of a pipeline reads what rank r // stages of a data-parallel
    run of world // stages processes reads: DefaultSampler is the reference."""
    import mmengine.dataset.sampler as default_module
    from mmengine.dataset import DefaultSampler

    import enn_mm.local.pipeline_sampler as pipe_module
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


MOMENTUM = dict(local_head=[dict(type='ENNMomentumLocalHead', momentum=0.5)] * 4
                + [dict(type='ENNPoolLinearLocalHead')])


@pytest.mark.parametrize('local', [{}, MOMENTUM], ids=['frozen_heads', 'momentum_heads'])
def test_the_wrapper_plans_itself_and_steps_as_one_process(local):
    """Without ENNPipelineHook the first train_step plans; a one-stage
    pipeline's step equals the model's own train_step bit for bit (momentum
    heads included: the stage moves them as the model does)."""
    from mmengine.optim import build_optim_wrapper
    model = build(LOCAL_CFG, **local)
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
    for (name, b), c in zip(model.named_buffers(), twin.buffers()):
        assert torch.equal(b, c), name


def test_momentum_heads_stay_with_the_blocks_they_follow():
    """A momentum head reads the next block's weights in place: a split that
    puts them on different stages is refused, naming both and the fix."""
    from enn_mm.local.stage import check_followed
    model = build(LOCAL_CFG, cuts='resnet_block', **MOMENTUM)  # head k follows block k + 1
    check_followed(model, [list(range(6))])
    check_followed(model, [[0, 1, 2, 3, 4], [5]])  # block 4's pooled head follows nothing
    with pytest.raises(ValueError, match=r'block 2 .*\(stage 0\) follows the weights of block 3, '
                                         r'which stage 1 trains.*assignment.*another local head'):
        check_followed(model, [[0, 1, 2], [3, 4, 5]])


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
