"""Symmetric InfoNCE over the global batch, with several positives per row.

Under DDP every rank gathers the image and text embeddings (and positive
groups) of all ranks and computes the *same* full-batch loss; the gather's
backward all-reduces the gradient, so after DDP's averaging the parameters
get exactly the gradient of the single-process loss on the concatenated
batch. Ranks may hold different numbers of samples (a last partial batch).
"""
from typing import List, Optional, Tuple

import torch
import torch.distributed as dist
from torch import Tensor

__all__ = ['symmetric_info_nce', 'gather_batch']


def _world() -> Tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _sizes(n: int, device) -> List[int]:
    _, world = _world()
    mine = torch.tensor([n], device=device)
    sizes = [torch.zeros_like(mine) for _ in range(world)]
    dist.all_gather(sizes, mine)
    return [int(s) for s in sizes]


def _pad(x: Tensor, rows: int) -> Tensor:
    return torch.cat([x, x.new_zeros((rows - x.shape[0], ) + x.shape[1:])])


class _GatherWithGrad(torch.autograd.Function):
    """all_gather forward; backward sums the gradient over ranks (every
    rank computes the same loss) and keeps this rank's rows."""

    @staticmethod
    def forward(ctx, x: Tensor, rank: int, world: int) -> Tensor:
        out = [torch.empty_like(x) for _ in range(world)]
        dist.all_gather(out, x.contiguous())
        ctx.rank, ctx.rows = rank, x.shape[0]
        return torch.cat(out)

    @staticmethod
    def backward(ctx, grad: Tensor):
        grad = grad.contiguous().clone()
        dist.all_reduce(grad)
        return grad[ctx.rank * ctx.rows:(ctx.rank + 1) * ctx.rows], None, None


def gather_batch(*tensors: Optional[Tensor]) -> Tuple[Optional[Tensor], ...]:
    """Concatenate each tensor over all ranks in rank order (no-op without
    a process group). Floating tensors keep gradients; None stays None.

    A collective call: every rank must call it with the same tensors being
    None. Tensors that require gradients are gathered with a backward that
    sums their gradient over the ranks and keeps this rank's rows.

    Args:
        *tensors (Tensor | None): Tensors whose first dimension is this
            rank's batch size (the same for all of them; it may differ
            between ranks).

    Returns:
        tuple: The gathered tensors in argument order, each with the sum of
        the ranks' batch sizes as first dimension (the inputs unchanged
        without a process group), None where the input was None.
    """
    rank, world = _world()
    if world == 1:
        return tensors
    ref = next(t for t in tensors if t is not None)
    sizes = _sizes(ref.shape[0], ref.device)
    rows = max(sizes)
    out = []
    for t in tensors:
        if t is None:
            out.append(None)
            continue
        padded = _pad(t, rows)
        if t.is_floating_point() and t.requires_grad:
            full = _GatherWithGrad.apply(padded, rank, world)
        else:
            parts = [torch.empty_like(padded) for _ in range(world)]
            dist.all_gather(parts, padded.contiguous())
            full = torch.cat(parts)
        out.append(torch.cat([full[r * rows:r * rows + n] for r, n in enumerate(sizes)]))
    return tuple(out)


def symmetric_info_nce(image: Tensor, text: Tensor, logit_scale: Tensor,
                       groups: Optional[Tensor] = None,
                       text_groups: Optional[Tensor] = None) -> Tensor:
    """CLIP's symmetric cross-entropy, generalized to several positives.

    Row ``i`` pairs image ``i`` with text ``i``. Image ``i`` and text ``j``
    are also a positive pair when ``groups[i] == groups[j]`` (e.g. two
    captions of one COCO image, or two images of one class); the target of
    each row is then uniform over its positives. Without ``groups`` this is
    exactly CLIP's loss (targets on the diagonal). With ``text_groups`` the
    texts need not pair with the images row by row (e.g. one caption per
    class of the batch): image ``i`` and text ``j`` are positive when
    ``groups[i] == text_groups[j]``, and every row must have a positive.

    Args:
        image (Tensor): (N, d) L2-normalized image embeddings.
        text (Tensor): (N, d) L2-normalized text embeddings; (M, d) with
            ``text_groups``.
        logit_scale (Tensor): Scalar multiplier (1 / temperature).
        groups (Tensor, optional): (N,) integer group of each image (and of
            its text when there are no ``text_groups``). Defaults to None
            (only the diagonal pairs are positive).
        text_groups (Tensor, optional): (M,) integer group of each text.
            Defaults to None (the texts' groups are ``groups``).

    Returns:
        Tensor: ``(loss_i2t + loss_t2i) / 2``.

    Raises:
        ValueError: ``text_groups`` without ``groups``, or an image or text
            with no positive among the other side.
    """
    logits = logit_scale * image @ text.t()
    if groups is None:
        if text_groups is not None:
            raise ValueError('text_groups needs the images\' groups')
        pos = torch.eye(len(image), device=image.device, dtype=logits.dtype)
    else:
        text_groups = groups if text_groups is None else text_groups
        pos = (groups[:, None] == text_groups[None, :]).to(logits.dtype)
        if not (pos.sum(1).all() and pos.sum(0).all()):
            raise ValueError('every image needs a text of its group in the batch and '
                             'every text an image of its group')
    i2t = -(pos / pos.sum(1, keepdim=True) * logits.log_softmax(1)).sum(1).mean()
    pos_t = pos.t()
    t2i = -(pos_t / pos_t.sum(1, keepdim=True) * logits.t().log_softmax(1)).sum(1).mean()
    return (i2t + t2i) / 2
