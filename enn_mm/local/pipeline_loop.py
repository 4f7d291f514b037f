"""``ENNPipelineTrainLoop``: the epoch loop of a pipelined ENN-ℓ run."""
import copy

from mmengine.dataset import DefaultSampler
from mmengine.model import is_model_wrapper
from mmengine.runner import EpochBasedTrainLoop
from mmpretrain.registry import LOOPS

from .pipeline import ENNPipelineParallel
from .pipeline_hook import ENNPipelineHook

__all__ = ['ENNPipelineTrainLoop']


def _pipeline_dataloader(dataloader, stages: int):
    # A DefaultSampler shards over ranks; the later stages of a pipeline read
    # no data, so the replicas take its place (ENNPipelineSampler).
    if not isinstance(dataloader, dict):
        return dataloader  # already built: its sampler is checked below
    dataloader = copy.deepcopy(dataloader)
    sampler = dict(dataloader.get('sampler') or {})
    if sampler.get('type') in ('DefaultSampler', 'mmengine.DefaultSampler'):
        sampler['type'] = 'ENNPipelineSampler'
    if sampler.get('type') == 'ENNPipelineSampler':
        sampler['stages'] = stages
        dataloader['sampler'] = sampler
    return dataloader


class LaterStageBatches:
    """What a later pipeline stage iterates: as many steps as stage 0 reads,
    with no data (its inputs come from the stage before); everything else
    (sampler, batch size, dataset: what hooks read) is the real loader's.

    Args:
        loader (DataLoader): The training dataloader.
    """

    def __init__(self, loader):
        self.loader = loader

    def __iter__(self):
        return iter([None] * len(self.loader))

    def __len__(self) -> int:
        return len(self.loader)

    def __getattr__(self, name):
        if name == 'loader':  # (not yet set: copying, unpickling)
            raise AttributeError(name)
        return getattr(self.loader, name)


@LOOPS.register_module()
class ENNPipelineTrainLoop(EpochBasedTrainLoop):
    """Epoch-based training of a pipelined ENN-ℓ model.

    Stage 0 of each replica reads the data (through ``ENNPipelineSampler``,
    which replaces a ``DefaultSampler``); the other stages run as many
    iterations and receive their inputs from the stage before.
    ``ENNPipelineHook`` (registered here unless the config has it) starts the
    pipeline, assembles the whole model for validation and checkpoints and
    logs every block. In one process, the model is wrapped here as a
    one-stage pipeline (the Runner wraps models only in distributed runs).

    Args:
        runner (Runner): The runner.
        dataloader (DataLoader | dict): The training dataloader.
        max_epochs (int): Total training epochs.
        **kwargs: Other arguments of ``EpochBasedTrainLoop``.

    Raises:
        TypeError: The model is not (and ``model_wrapper_cfg`` does not make
            it) an ``ENNPipelineParallel``, or the built dataloader's sampler
            does not shard over the pipeline replicas.
    """

    def __init__(self, runner, dataloader, max_epochs: int, **kwargs) -> None:
        model = runner.model
        wrapper_cfg = dict(runner.cfg.get('model_wrapper_cfg') or {})
        if not isinstance(model, ENNPipelineParallel) and not is_model_wrapper(model) \
                and wrapper_cfg.pop('type', None) == 'ENNPipelineParallel':
            # One process is a one-stage pipeline (stages > 1 is refused,
            # naming the launch).
            model = runner.model = ENNPipelineParallel(model, **wrapper_cfg)
        if not isinstance(model, ENNPipelineParallel):
            raise TypeError('ENNPipelineTrainLoop runs a pipelined ENN-ℓ model: set '
                            "model_wrapper_cfg=dict(type='ENNPipelineParallel', stages=K) "
                            'and launch stages × replicas processes '
                            f'(got {type(model).__name__}).')
        super().__init__(runner, _pipeline_dataloader(dataloader, model.num_stages),
                         max_epochs, **kwargs)
        sampler = self.dataloader.sampler
        if not isinstance(sampler, DefaultSampler) or (sampler.world_size, sampler.rank) != \
                (model.replicas, model.replica):
            raise TypeError('ENNPipelineTrainLoop shards the data over pipeline replicas: use '
                            "sampler=dict(type='DefaultSampler', ...) or "
                            f"'ENNPipelineSampler', got {type(sampler).__name__}.")
        if not any(isinstance(h, ENNPipelineHook) for h in runner.hooks):
            runner.register_hook(ENNPipelineHook())
        if model.stage > 0:  # mmengine's epoch loop then runs unchanged
            self.dataloader = LaterStageBatches(self.dataloader)

    @property
    def pipeline(self) -> ENNPipelineParallel:
        return self.runner.model
