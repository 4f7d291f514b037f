"""enn_mm.engine.checkpoint: safe loading is narrow."""
import pickle

import pytest
import torch
from mmengine.runner import Runner

from helpers import ENN_CFG, tiny_enn_cfg


def test_safe_loading_is_narrow(fmnist_root, tmp_path):
    runner = Runner.from_cfg(tiny_enn_cfg(ENN_CFG, fmnist_root, tmp_path, epochs=1))
    runner.train()
    ckpt = str(tmp_path / 'epoch_1.pth')
    from mmengine.runner.checkpoint import _load_checkpoint
    loaded = _load_checkpoint(ckpt)  # mmengine's loader: HistoryBuffers, numpy
    assert type(loaded['message_hub']['log_scalars']['train/loss']).__name__ == 'HistoryBuffer'
    with pytest.raises(pickle.UnpicklingError):  # plain torch.load stays weights-only
        torch.load(ckpt)
