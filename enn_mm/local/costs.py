"""What each ENN-ℓ block and its local head cost, counted by PyTorch's FLOP
counter (``torch.utils.flop_counter.FlopCounterMode``: matmuls, convolutions,
attention; elementwise ops count 0).

A pipeline stage runs its blocks and their heads, so a head that costs as
much as its block halves what the stage could otherwise do: this is the
number to look at before choosing a head.
"""
import copy
from typing import Dict, List

import torch
from mmpretrain.structures import DataSample
from torch.utils.flop_counter import FlopCounterMode

from .step import HEADS_KEY, block_key

__all__ = ['local_flops']


def local_flops(model, batch_size: int = 8) -> List[Dict[str, float]]:
    """Forward and backward FLOPs of every block of an ENN-ℓ model and of its
    local head, on one batch of random images.

    The step is the one ``train_step`` runs (each block's forward, its local
    head and objectives on the detached cut output, the backward through
    both; the last block's own loss), on a copy of the model (its weights,
    gradients and batch-norm statistics are left alone), without the
    orthonormality penalty and the optimizer steps.

    Args:
        model (ENNLocalClassifier): The model.
        batch_size (int): Images in the batch. Defaults to 8.

    Returns:
        list[dict]: Per block ``k``: ``block``, ``block_forward``,
        ``block_backward`` and ``head`` (forward + backward of the local
        head and objectives, the gradient to the block's output included;
        0 for the last block, whose head is the model's own and counted in
        the block), each in FLOPs (a multiply-add is 2), and ``head_ratio``
        = head / (block forward + backward).

    Raises:
        TypeError: ``model`` is not an ``ENNLocalClassifier``.
    """
    if not hasattr(model, 'local_partition'):
        raise TypeError(f'local_flops needs an ENNLocalClassifier, got {type(model).__name__}.')
    model = copy.deepcopy(model).train()
    device = next(model.parameters()).device
    image = torch.randn(batch_size, *model.local_input_shape, device=device)
    num_classes = model.head.num_classes
    target = torch.arange(batch_size, device=device) % num_classes
    samples = [DataSample().set_gt_label(int(t)) for t in target]
    counter = FlopCounterMode(display=False)
    records, mark = [], [0]

    def total() -> int:
        return counter.get_total_flops()

    def count(k: int, z: torch.Tensor) -> None:
        forward = total() - mark[0]
        start = total()
        z_head = z.detach().requires_grad_(True)
        logits = getattr(model, HEADS_KEY)[block_key(k)](z_head)
        loss = sum(weight * objective(z_head, target, logits, image, model.local_loss_module)
                   for _, weight, objective in model.block_objectives(k))
        loss.backward()
        head = total() - start
        start = total()
        z.backward(z_head.grad)  # stops at the block's input: the previous cut is detached
        records.append(dict(block=k, block_forward=forward, block_backward=total() - start,
                            head=head))
        mark[0] = total()

    with counter, model.cut_hooks(count):
        losses = model.head.loss(model.extract_feat(image), samples)
        forward = total() - mark[0]
        start = total()
        sum(v for k, v in losses.items() if 'loss' in k).backward()
        records.append(dict(block=model.num_blocks - 1, block_forward=forward,
                            block_backward=total() - start, head=0))
    for r in records:
        r['head_ratio'] = r['head'] / max(1, r['block_forward'] + r['block_backward'])
    return records
