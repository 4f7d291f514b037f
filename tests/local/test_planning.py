"""enn_mm.local.planning: stage plans against brute force, split refinement
by measured times, the penalty period mean, block timing, head costs."""
import itertools
import random

import pytest
from mmengine.logging import MessageHub
from mmengine.registry import init_default_scope
from mmpretrain.registry import MODELS

from enn_mm.local.planning import (
    measure_block_times,
    penalty_period_mean,
    plan_stages,
    refine_split,
)
from enn_mm.local.step import LocalStep

from helpers import LOCAL_CFG, local, tiny_local_cfg


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
    cfg = tiny_local_cfg(LOCAL_CFG, '', '')
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


def test_stage_planning_counts_heads_and_decoders():
    from enn_mm.local.planning import local_head_costs
    model = local(cuts='resnet_block', local_head=dict(type='ENNPoolLinearLocalHead'))
    # a pooled FC: C·classes multiply-adds a sample, forward + backward = 3x
    channels = [s[0] for s in model.local_partition.shapes]
    assert local_head_costs(model, 32) == [3.0 * 32 * c * 10 for c in channels] + [0.0]
    recon = local(cuts='resnet_block', local_head=dict(type='ENNPoolLinearLocalHead'),
                  local_objectives=[dict(type='ENNClassificationObjective'),
                                    dict(type='ENNReconstructionObjective',
                                         weight=[1, 0, 0, 0, 0])])
    costs = local_head_costs(recon, 32)
    # block 0's decoder: conv3x3 8->12 and 12->1 at 28x28 on top of the FC
    decoder = 28 * 28 * 9 * (8 * 12 + 12 * 1)
    assert costs[0] == 3.0 * 32 * (8 * 10 + decoder)
    assert costs[1:] == local_head_costs(model, 32)[1:]
