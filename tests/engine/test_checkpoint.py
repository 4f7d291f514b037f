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


class _Payload:
    """A pickle that runs code when loaded (what safe loading must refuse)."""

    def __reduce__(self):
        import os
        return (os.system, ('echo pwned > /dev/null',))


class _Getattr:
    """A pickle that reaches an attribute of an allowed type through
    getattr, other than the statistics methods mmengine pickles."""

    def __reduce__(self):
        from mmengine.logging.history_buffer import HistoryBuffer
        return (getattr, (HistoryBuffer, '__init__'))


@pytest.mark.parametrize('payload', [_Payload(), _Getattr()], ids=['reduce', 'getattr'])
def test_crafted_checkpoints_are_refused(tmp_path, payload):
    """mmengine's loader under enn_mm's rule refuses what is not a tensor,
    a builtin or one of the few mmengine/numpy types its checkpoints hold,
    with an error that names the way out; the payload never runs."""
    from mmengine.runner.checkpoint import _load_checkpoint

    import enn_mm  # noqa: F401  (the safe loaders)
    path = str(tmp_path / 'crafted.pth')
    torch.save({'state_dict': {}, 'meta': {'x': payload}}, path)
    with pytest.raises(RuntimeError, match=r'(?s)safe loading.*add_safe_globals'):
        _load_checkpoint(path, map_location='cpu')
