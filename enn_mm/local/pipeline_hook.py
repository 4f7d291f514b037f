"""``ENNPipelineHook``: what a pipelined ENN-ℓ run needs around training."""
from typing import Dict, List

import torch.distributed as dist
from mmengine.hooks import CheckpointHook, EMAHook, Hook
from mmengine.logging import print_log
from mmpretrain.registry import HOOKS

__all__ = ['ENNPipelineHook']


@HOOKS.register_module()
class ENNPipelineHook(Hook):
    """Start, assemble and log an ``ENNPipelineParallel`` model.

    - before training: every rank takes rank 0's weights (init or resume)
      and the stages are planned at the training batch size;
    - after each epoch, and before every iteration-based checkpoint, every
      rank gets the whole trained model
      (:meth:`ENNPipelineParallel.assemble`), so validation and checkpoints
      see it;
    - the epoch's mean loss and top-1 of every block and each stage's busy
      fraction are logged (``pipeline/...`` scalars).

    ``ENNPipelineTrainLoop`` registers it unless the config lists it. Its
    priority, ``'ABOVE_NORMAL'``, runs it before ``CheckpointHook`` and the
    logger. EMA is refused: between assemblies a rank holds only its stage's
    blocks.
    """
    priority = 'ABOVE_NORMAL'

    def __init__(self) -> None:
        self._logs: Dict[str, List[float]] = {}
        self._busy0 = self._wait0 = 0.0

    def before_train(self, runner) -> None:
        """Refuse EMA, then start the pipeline (:meth:`ENNPipelineParallel.start`)
        at the training dataloader's batch size.

        Args:
            runner (Runner): The runner; its model is an
                ``ENNPipelineParallel``.

        Raises:
            TypeError: The runner has an ``EMAHook``.
        """
        for hook in runner.hooks:
            if isinstance(hook, EMAHook):
                # rank 0's copy of the later stages' blocks is only current
                # after each epoch's assembly, not at every iteration
                raise TypeError('EMAHook cannot follow a pipelined ENN-ℓ run: each rank '
                                'trains only its stage\'s blocks. Remove it from '
                                'custom_hooks, or train ENN-ℓ in one process.')
        runner.model.start(runner.train_dataloader.batch_size)

    def before_train_epoch(self, runner) -> None:
        """Clear the epoch's logs and note the pipeline's busy and wait time
        so far.

        Args:
            runner (Runner): The runner.
        """
        stats = runner.model.stats
        self._logs, self._busy0, self._wait0 = {}, stats['busy_s'], stats['wait_s']

    def after_train_iter(self, runner, batch_idx: int, data_batch=None, outputs=None) -> None:
        """Keep this iteration's ``block*`` logs and, if an iteration-based
        ``CheckpointHook`` saves after it, assemble the model first.

        Args:
            runner (Runner): The runner.
            batch_idx (int): Index of the batch in the epoch (unused).
            data_batch (dict, optional): The batch (unused).
            outputs (dict, optional): The ``train_step`` log variables.
        """
        for key, value in (outputs or {}).items():
            if key.startswith('block'):
                self._logs.setdefault(key, []).append(float(value))
        if self._checkpoint_due(runner):
            runner.model.assemble(runner.optim_wrapper)

    def after_train_epoch(self, runner) -> None:
        """Assemble the whole model (with the optimizer states) on every rank
        and log the epoch's ``pipeline/...`` scalars.

        Collective: every rank calls it.

        Args:
            runner (Runner): The runner.
        """
        pipeline = runner.model
        pipeline.assemble(runner.optim_wrapper)
        busy = pipeline.stats['busy_s'] - self._busy0
        wait = pipeline.stats['wait_s'] - self._wait0
        self._log_epoch(runner, busy / max(busy + wait, 1e-9))

    @staticmethod
    def _checkpoint_due(runner) -> bool:
        # Iteration-based checkpoints save in their own `after_train_iter`,
        # after this hook's: assemble first.
        for hook in runner.hooks:
            if isinstance(hook, CheckpointHook) and not hook.by_epoch:
                step = runner.iter + 1
                if hook.every_n_train_iters(runner, hook.interval, hook.save_begin) or \
                        (hook.save_last and step == runner.max_iters):
                    return True
        return False

    def _log_epoch(self, runner, busy: float) -> None:
        pipeline = runner.model
        mine = {k: sum(v) / len(v) for k, v in self._logs.items()}
        record = dict(stage=pipeline.stage, replica=pipeline.replica, logs=mine, busy=busy)
        gathered = [record]
        if dist.is_available() and dist.is_initialized():
            gathered = [None] * dist.get_world_size()
            dist.all_gather_object(gathered, record)
        logs, busy_by_stage = {}, {}
        for r in gathered:
            busy_by_stage.setdefault(r['stage'], []).append(r['busy'])
            if r['replica'] == 0:
                logs.update(r['logs'])
        scalars = {f'pipeline/{k}': v for k, v in sorted(logs.items())}
        for s, values in sorted(busy_by_stage.items()):
            scalars[f'pipeline/stage{s}_busy'] = sum(values) / len(values)
        epoch = runner.epoch + 1
        runner.visualizer.add_scalars(scalars, step=epoch)
        print_log(f'ENN-ℓ pipeline epoch {epoch}: ' +
                  ', '.join(f'{k[9:]} {v:.4f}' for k, v in scalars.items()), logger='current')
