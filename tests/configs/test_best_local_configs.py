"""configs/enn_local/*_best_*.py: the baseline plus the ENN-ℓ lines only."""
import pytest

from enn_mm.local import ENNDownstreamLocalHead

from helpers import build


@pytest.mark.parametrize('split', ['stage', 'block'])
@pytest.mark.parametrize('dataset', ['fmnist', 'mnist'])
def test_best_configs_differ_from_the_baseline_only_in_enn_local_lines(split, dataset):
    import os.path as osp

    from mmengine.config import Config

    from helpers import REPO
    best = Config.fromfile(
        osp.join(REPO, f'configs/enn_local/resnet18w16_{dataset}_best_{split}.py'))
    base = Config.fromfile(osp.join(REPO, f'configs/baseline/resnet18w16_{dataset}.py'))
    for key in ('train_dataloader', 'val_dataloader', 'test_dataloader', 'param_scheduler',
                'train_cfg', 'data_preprocessor', 'randomness'):
        assert best[key] == base[key], key
    assert best.optim_wrapper.optimizer == base.optim_wrapper.optimizer
    assert best.model.model.model == base.model  # the same network, converted to ENN
    assert best.model.local_head == dict(type='ENNDownstreamLocalHead', depth=2)
    assert best.model.cuts == f'resnet_{split}'
    model = build(osp.join(REPO, f'configs/enn_local/resnet18w16_{dataset}_best_{split}.py'))
    assert all(isinstance(model.local_heads[f'block{k}'], ENNDownstreamLocalHead)
               for k in range(model.num_blocks - 1))


@pytest.mark.parametrize('dataset', ['fmnist', 'mnist'])
def test_fast_configs_are_the_best_bp_recipe_cut_in_two(dataset):
    """configs/enn_local/*_fast.py: the end-to-end ENN recipe (retraction
    every 10th step) with the ENN-ℓ lines only: two blocks, AugLocal heads."""
    import os.path as osp

    from mmengine.config import Config

    from helpers import REPO
    path = osp.join(REPO, f'configs/enn_local/resnet18w16_{dataset}_fast.py')
    fast = Config.fromfile(path)
    bp = Config.fromfile(osp.join(REPO, f'configs/enn/resnet18w16_{dataset}.py'))
    for key in ('train_dataloader', 'val_dataloader', 'test_dataloader', 'param_scheduler',
                'train_cfg', 'data_preprocessor', 'randomness', 'custom_hooks'):
        assert fast[key] == bp[key], key
    assert fast.optim_wrapper.optimizer == bp.optim_wrapper.optimizer
    assert fast.model.model == bp.model  # the same ENN network, the same ortho mode
    assert bp.model.enn == dict(ortho='retract', retract_interval=10)
    assert fast.model.cuts == ['backbone.layer1.0']
    from mmengine.registry import init_default_scope
    from mmpretrain.registry import MODELS
    init_default_scope('mmpretrain')
    model = MODELS.build(fast.model)  # full size: the head copies the third stage
    assert model.num_blocks == 2
    head = model.local_heads.block0
    assert isinstance(head, ENNDownstreamLocalHead)
    assert head.copied == ['backbone.layer2.0', 'backbone.layer3.0']
