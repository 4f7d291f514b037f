"""enn_mm.models.loading: the model a tool builds outside the Runner is the
Runner's (data_preprocessor injected), loaded strictly, and a checkpoint of
another model is refused with a message that names the fix."""
import pytest
import torch
from mmengine.config import Config
from mmengine.registry import init_default_scope
from mmengine.runner import save_checkpoint
from mmpretrain.registry import MODELS

import enn_mm  # noqa: F401
from enn_mm.models import CheckpointMismatchError, build_model, init_model, load_model_checkpoint

from helpers import DEFAULT_CFG, DENSE_CFG, LOCAL_CFG, tiny_enn_cfg, tiny_local_cfg

init_default_scope('mmpretrain')


def tiny(path, tmp_path):
    maker = tiny_local_cfg if 'enn_local' in path else tiny_enn_cfg
    return maker(path, str(tmp_path), str(tmp_path))


def saved(cfg, path, seed=0, prefix=''):
    torch.manual_seed(seed)
    model = build_model(cfg)
    model.init_weights()
    state = {prefix + k: v for k, v in model.state_dict().items()}
    save_checkpoint(dict(state_dict=state, meta=dict(seed=seed)), str(path))
    return model.eval(), str(path)


def test_build_model_injects_the_configs_data_preprocessor(tmp_path):
    """As the Runner and mmpretrain.apis.get_model do; a model config that
    sets its own preprocessor keeps it."""
    for path in (DEFAULT_CFG, DENSE_CFG):
        cfg = tiny(path, tmp_path)
        model = build_model(cfg)
        assert model.data_preprocessor.std.flatten().tolist() == pytest.approx(
            cfg.data_preprocessor['std'])
        # what a bare MODELS.build gives: no normalization at all
        assert not MODELS.build(cfg.model).data_preprocessor._enable_normalize
    cfg = tiny(DENSE_CFG, tmp_path)
    cfg.model.data_preprocessor = dict(type='ClsDataPreprocessor', mean=[1.0], std=[2.0])
    assert build_model(cfg).data_preprocessor.std.flatten().tolist() == [2.0]


def test_a_dense_checkpoint_loads_into_the_enn_model(tmp_path):
    dense, ckpt = saved(tiny(DENSE_CFG, tmp_path), tmp_path / 'dense.pth', prefix='module.')
    enn, _ = init_model(tiny(DEFAULT_CFG, tmp_path), ckpt)
    x = torch.randn(4, 1, 28, 28)
    with torch.no_grad():
        want, got = dense(x, mode='tensor'), enn(x, mode='tensor')
    assert ((got - want).abs().max() / want.abs().max()).item() < 1e-5


def test_an_enn_checkpoint_into_a_dense_config_is_refused(tmp_path):
    _, ckpt = saved(tiny(DEFAULT_CFG, tmp_path), tmp_path / 'enn.pth')
    with pytest.raises(CheckpointMismatchError, match='is an ENN checkpoint.*export_dense.py'):
        init_model(tiny(DENSE_CFG, tmp_path), ckpt)


def test_an_enn_local_checkpoint_into_its_inner_config_is_refused(tmp_path):
    _, ckpt = saved(tiny(LOCAL_CFG, tmp_path), tmp_path / 'local.pth')
    with pytest.raises(CheckpointMismatchError, match='ENN-ℓ checkpoint.*export_local.py'):
        init_model(Config(dict(tiny(LOCAL_CFG, tmp_path), model=tiny(LOCAL_CFG, tmp_path)
                               .model.model)), ckpt)


def test_other_mismatches_name_the_first_offending_entry(tmp_path):
    cfg = tiny(DENSE_CFG, tmp_path)
    _, ckpt = saved(cfg, tmp_path / 'a.pth')
    wider = tiny(DENSE_CFG, tmp_path)
    wider.model.backbone.base_channels = 16
    with pytest.raises(CheckpointMismatchError, match=r'do not load \(size mismatch for backbone'):
        load_model_checkpoint(build_model(wider), ckpt)
    extra = build_model(cfg)
    extra.register_buffer('calibration', torch.zeros(1))
    with pytest.raises(CheckpointMismatchError, match='1 model weights are not in it '
                       r'\(first: calibration\)'):
        load_model_checkpoint(extra, ckpt)
    # and a matching checkpoint loads every weight
    model, loaded = saved(cfg, tmp_path / 'b.pth', seed=1)
    got = load_model_checkpoint(build_model(cfg), str(tmp_path / 'b.pth'))
    assert got['state_dict'].keys() == model.state_dict().keys()
