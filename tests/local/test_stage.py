"""enn_mm.local.stage: a stage that cannot run alone is refused."""
import pytest
import torch
from torch import nn

from enn_mm.local.partition import probe_partition
from enn_mm.local.planning import record_calls
from enn_mm.local.stage import check_segments


class Toy(nn.Module):
    def __init__(self, skip):
        super().__init__()
        self.a, self.b, self.skip = nn.Conv2d(1, 4, 3, padding=1), nn.Conv2d(4, 4, 3), skip

    def forward(self, x, mode='tensor'):
        y = self.b(torch.relu(self.a(x)))
        # a parameter-free skip from the input past the cut: no gradient
        # crosses it, but a later stage alone never sees x
        return y + x.mean() if self.skip else y


def test_a_stage_that_cannot_run_alone_is_refused():
    for skip in (False, True):
        toy = Toy(skip)
        partition = probe_partition(toy, ['a'], (1, 8, 8))
        record = record_calls(toy, partition, (1, 8, 8))
        assert record.block_macs == [8 * 8 * 4 * 9, 6 * 6 * 4 * 4 * 9]
        if skip:
            with pytest.raises(ValueError, match="output of cut point 'a'"):
                check_segments(toy, partition, record, [[0], [1]])
        else:
            check_segments(toy, partition, record, [[0], [1]])
