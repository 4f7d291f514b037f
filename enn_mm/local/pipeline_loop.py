"""``ENNPipelineTrainLoop``: the epoch loop of a pipelined ENN-ℓ run."""
import math
from typing import Dict, List

import torch.distributed as dist
from mmengine.dataset import DefaultSampler
from mmengine.hooks import CheckpointHook, EMAHook
from mmengine.logging import print_log
from mmengine.model import is_model_wrapper
from mmengine.runner import EpochBasedTrainLoop

from mmpretrain.registry import LOOPS
from .pipeline import ENNPipelineParallel

__all__ = ['ENNPipelineTrainLoop']


def _reshard(sampler: DefaultSampler, rank: int, world_size: int) -> None:
    # As DefaultSampler.__init__ computes it, for the data-parallel replicas
    # only: the later stages of a pipeline read no data.
    sampler.rank, sampler.world_size = rank, world_size
    n = len(sampler.dataset)
    if sampler.round_up:
        sampler.num_samples = math.ceil(n / world_size)
        sampler.total_size = sampler.num_samples * world_size
    else:
        sampler.num_samples = math.ceil((n - rank) / world_size)
        sampler.total_size = n


@LOOPS.register_module()
class ENNPipelineTrainLoop(EpochBasedTrainLoop):
    """Epoch-based training of a pipelined ENN-ℓ model.

    Stage 0 of each replica reads the data (replica ``d`` of ``D`` gets shard
    ``d``: the same data order as ``D``-process data parallelism); the other
    stages run as many iterations and receive their inputs from the stage
    before. Before validation and before each checkpoint the stages assemble
    the whole trained model on every rank
    (:meth:`ENNPipelineParallel.assemble`), and the epoch's mean loss and
    top-1 of every block and each stage's busy fraction are logged.

    Args:
        runner (Runner): The runner.
        dataloader (DataLoader | dict): The training dataloader.
        max_epochs (int): Total training epochs.
        by_epoch (bool): Accepted so that a base ``train_cfg`` carries over;
            must be True.
        **kwargs: Other arguments of ``EpochBasedTrainLoop``.
    """

    def __init__(self, runner, dataloader, max_epochs: int, by_epoch: bool = True,
                 **kwargs) -> None:
        if not by_epoch:
            raise ValueError('ENNPipelineTrainLoop is epoch-based; drop by_epoch=False.')
        super().__init__(runner, dataloader, max_epochs, **kwargs)
        model = runner.model
        wrapper_cfg = dict(runner.cfg.get('model_wrapper_cfg') or {})
        if not isinstance(model, ENNPipelineParallel) and not is_model_wrapper(model) \
                and wrapper_cfg.pop('type', None) == 'ENNPipelineParallel':
            # The Runner wraps a model only in a distributed launch; one process
            # is a one-stage pipeline (stages > 1 is refused, naming the launch).
            model = runner.model = ENNPipelineParallel(model, **wrapper_cfg)
        if not isinstance(model, ENNPipelineParallel):
            raise TypeError('ENNPipelineTrainLoop runs a pipelined ENN-ℓ model: set '
                            "model_wrapper_cfg=dict(type='ENNPipelineParallel', stages=K) "
                            'and launch stages × replicas processes '
                            f'(got {type(model).__name__}).')
        sampler = self.dataloader.sampler
        if not isinstance(sampler, DefaultSampler):
            raise TypeError('ENNPipelineTrainLoop needs sampler=dict(type=\'DefaultSampler\', '
                            f'...), got {type(sampler).__name__}.')
        _reshard(sampler, model.replica, model.replicas)
        for hook in runner.hooks:
            if isinstance(hook, EMAHook):
                # rank 0's copy of the later stages' blocks is only current
                # after each epoch's assembly, not at every iteration
                raise TypeError('EMAHook cannot follow a pipelined ENN-ℓ run: each rank '
                                'trains only its stage\'s blocks. Remove it from '
                                'custom_hooks, or train ENN-ℓ in one process.')
        self._max_iters = self._max_epochs * len(self.dataloader)
        self._epoch_logs: Dict[str, List[float]] = {}

    @property
    def pipeline(self) -> ENNPipelineParallel:
        return self.runner.model

    def run(self):
        # Every rank starts from rank 0's weights (init or resume).
        self.pipeline.broadcast_from(0)
        self.pipeline.plan(self.dataloader.batch_size)
        return super().run()

    def run_epoch(self) -> None:
        """One epoch: the stage's share of every iteration, then assembly."""
        self.runner.call_hook('before_train_epoch')
        self.runner.model.train()
        self._epoch_logs = {}
        busy0, wait0 = self.pipeline.stats['busy_s'], self.pipeline.stats['wait_s']
        if self.pipeline.stage == 0:
            for idx, data_batch in enumerate(self.dataloader):
                self.run_iter(idx, data_batch)
        else:
            for idx in range(len(self.dataloader)):
                self.run_iter(idx, None)
        self.pipeline.assemble(self.runner.optim_wrapper)
        busy = self.pipeline.stats['busy_s'] - busy0
        wait = self.pipeline.stats['wait_s'] - wait0
        self._log_epoch(busy / max(busy + wait, 1e-9))
        self.runner.call_hook('after_train_epoch')
        self._epoch += 1

    def run_iter(self, idx, data_batch) -> None:
        self.runner.call_hook('before_train_iter', batch_idx=idx, data_batch=data_batch)
        outputs = self.runner.model.train_step(data_batch,
                                               optim_wrapper=self.runner.optim_wrapper)
        for key, value in outputs.items():
            if key.startswith('block'):
                self._epoch_logs.setdefault(key, []).append(float(value))
        if self._checkpoint_due():
            self.pipeline.assemble(self.runner.optim_wrapper)
        self.runner.call_hook('after_train_iter', batch_idx=idx, data_batch=data_batch,
                              outputs=outputs)
        self._iter += 1

    def _checkpoint_due(self) -> bool:
        # Iteration-based checkpoints save in `after_train_iter`: assemble first.
        for hook in self.runner.hooks:
            if isinstance(hook, CheckpointHook) and not hook.by_epoch:
                step = self._iter + 1
                if hook.every_n_train_iters(self.runner, hook.interval, hook.save_begin) or \
                        (hook.save_last and step == self._max_iters):
                    return True
        return False

    def _log_epoch(self, busy: float) -> None:
        mine = {k: sum(v) / len(v) for k, v in self._epoch_logs.items()}
        gathered = [None] * dist.get_world_size() if dist.is_initialized() else [None]
        record = dict(stage=self.pipeline.stage, replica=self.pipeline.replica, logs=mine,
                      busy=busy)
        if dist.is_initialized():
            dist.all_gather_object(gathered, record)
        else:
            gathered = [record]
        logs, busy_by_stage = {}, {}
        for r in gathered:
            busy_by_stage.setdefault(r['stage'], []).append(r['busy'])
            if r['replica'] == 0:
                logs.update(r['logs'])
        scalars = {f'pipeline/{k}': v for k, v in sorted(logs.items())}
        for s, values in sorted(busy_by_stage.items()):
            scalars[f'pipeline/stage{s}_busy'] = sum(values) / len(values)
        self.runner.visualizer.add_scalars(scalars, step=self._epoch + 1)
        print_log(f'ENN-ℓ pipeline epoch {self._epoch + 1}: ' +
                  ', '.join(f'{k[9:]} {v:.4f}' for k, v in scalars.items()), logger='current')
