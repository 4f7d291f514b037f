"""``ENNPipelineSampler``: shard the data over pipeline replicas, not ranks."""
import math
from typing import Optional

from mmengine.dataset import DefaultSampler
from mmengine.dist import get_dist_info
from mmpretrain.registry import DATA_SAMPLERS

__all__ = ['ENNPipelineSampler']


@DATA_SAMPLERS.register_module()
class ENNPipelineSampler(DefaultSampler):
    """``DefaultSampler`` for a pipelined ENN-ℓ run.

    Only stage 0 of each replica reads data; replica ``d`` of ``D`` gets shard
    ``d``, the same data order as ``D``-process data parallelism (and, with
    one replica, as one process). ``ENNPipelineTrainLoop`` puts it in place
    of a ``DefaultSampler`` (keeping its arguments), so configs need not name
    it.

    Args:
        dataset (Dataset): The dataset.
        stages (int): Pipeline stages; the world size must be a multiple.
        shuffle (bool): As for ``DefaultSampler``. Defaults to True.
        seed (int, optional): As for ``DefaultSampler``.
        round_up (bool): As for ``DefaultSampler``. Defaults to True.

    Raises:
        ValueError: ``stages`` is not a positive integer dividing the world
            size.
    """

    def __init__(self, dataset, stages: int = 1, shuffle: bool = True,
                 seed: Optional[int] = None, round_up: bool = True) -> None:
        super().__init__(dataset, shuffle=shuffle, seed=seed, round_up=round_up)
        rank, world = get_dist_info()
        if not isinstance(stages, int) or stages < 1 or world % stages:
            raise ValueError(f'ENNPipelineSampler: stages={stages!r} must be a positive '
                             f'integer dividing the world size {world}.')
        # As DefaultSampler computes it, over replicas instead of ranks.
        self.rank, self.world_size = rank // stages, world // stages
        n = len(self.dataset)
        if self.round_up:
            self.num_samples = math.ceil(n / self.world_size)
            self.total_size = self.num_samples * self.world_size
        else:
            self.num_samples = math.ceil((n - self.rank) / self.world_size)
            self.total_size = n
