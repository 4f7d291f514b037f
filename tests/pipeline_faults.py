"""Fault injection for tests/local/test_pipeline.py: one rank crashes or hangs."""
import os
import time

from mmengine.hooks import Hook
from mmpretrain.registry import HOOKS


@HOOKS.register_module()
class ENNTestFaultHook(Hook):
    """Before iteration ``at_iter``, rank ``rank`` exits (``'crash'``) or
    stops responding (``'hang'``)."""

    def __init__(self, rank: int, at_iter: int, kind: str):
        self.rank, self.at_iter, self.kind = rank, at_iter, kind

    def before_train_iter(self, runner, batch_idx, data_batch=None):
        if runner.rank == self.rank and runner.iter == self.at_iter:
            if self.kind == 'crash':
                os._exit(3)
            time.sleep(600)
