"""enn_mm.local.local_flops against a hand count on a tiny network."""
import pytest
import torch
from mmengine.registry import init_default_scope
from mmpretrain.registry import MODELS
from torch import nn

from enn_mm.local import local_flops


@MODELS.register_module(force=True)
class ENNTestTwoConvs(nn.Module):
    """conv(1→4, 3×3) - ReLU - conv(4→4, 3×3), no biases (a test backbone)."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 4, 3, padding=1, bias=False)
        self.conv2 = nn.Conv2d(4, 4, 3, padding=1, bias=False)

    def forward(self, x):
        return (self.conv2(torch.relu(self.conv1(x))), )


def test_local_flops_equal_a_hand_count():
    init_default_scope('mmpretrain')
    model = MODELS.build(dict(
        type='ENNLocalClassifier', cuts=['backbone.conv1'], input_shape=(1, 8, 8),
        local_head=dict(type='ENNPoolLinearLocalHead'),
        model=dict(type='ImageClassifier', backbone=dict(type='ENNTestTwoConvs'),
                   neck=dict(type='GlobalAveragePooling'),
                   head=dict(type='LinearClsHead', num_classes=10, in_channels=4))))
    n, pixels = 2, 8 * 8
    conv1 = 2 * n * pixels * 4 * 1 * 9  # multiply-adds x 2
    conv2 = 2 * n * pixels * 4 * 4 * 9
    linear = 2 * n * 4 * 10  # 4 pooled channels -> 10 classes
    before = {k: v.clone() for k, v in model.state_dict().items()}
    block0, block1 = local_flops(model, batch_size=n)
    # Block 0 reads the image: its backward is the weight gradient alone. Its
    # head: forward, weight gradient, gradient to the block output.
    assert block0 == dict(block=0, block_forward=conv1, block_backward=conv1, head=3 * linear,
                          head_ratio=pytest.approx(3 * linear / (2 * conv1)))
    # Block 1 reads a detached input: no gradient flows back past it; its
    # own head (the model's) is part of the block.
    assert block1 == dict(block=1, block_forward=conv2 + linear,
                          block_backward=conv2 + 2 * linear, head=0, head_ratio=0.0)
    # counted on a copy: the model and its gradients are untouched
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    assert all(p.grad is None for p in model.parameters())
    with pytest.raises(TypeError, match='needs an ENNLocalClassifier'):
        local_flops(nn.Linear(2, 2))
