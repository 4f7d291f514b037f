"""One ENN-ℓ training step, block by block (plain PyTorch).

The per-step API that the single-process ``train_step``, the pipeline stages
and the planner's timing all use: :class:`LocalStep` trains each block on its
own loss as the forward pass reaches the block's cut point. The penalty
weight of the step is passed in (``ENNLocalClassifier.penalty_weight``); the
optimizer wrappers are duck-typed (mmengine's ``OptimWrapper`` interface).
"""
from collections import OrderedDict
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch
from torch import Tensor

from ..core.ortho import penalty_terms
from .partition import main_tensor

__all__ = ['LocalStep', 'block_key', 'block_penalty', 'log_block', 'targets_of',
           'HEADS_KEY', 'OBJECTIVES_KEY']

HEADS_KEY = 'local_heads'
OBJECTIVES_KEY = 'local_objectives'


def block_key(k: int) -> str:
    """Name of block ``k``'s optimizer wrapper, scheduler list and logs.

    Args:
        k (int): Block index.

    Returns:
        str: ``'block{k}'``.
    """
    return f'block{k}'


def targets_of(data_samples) -> Tensor:
    """The training targets of a batch: soft scores (mixup, cutmix) win over
    labels, as in MMPretrain's ``ClsHead``.

    Args:
        data_samples (list[DataSample]): The batch's data samples.

    Returns:
        Tensor: The stacked ``gt_score`` ``(N, C)`` if the first sample has
        one, else the concatenated ``gt_label`` ``(N,)``.
    """
    if 'gt_score' in data_samples[0]:
        return torch.stack([s.gt_score for s in data_samples])
    return torch.cat([s.gt_label for s in data_samples])


def block_penalty(block_bases: Sequence[Tuple[int, Tensor]], probes: Optional[int] = None,
                  step: int = 0) -> Optional[Tensor]:
    """The orthonormality penalty of one block's bases (``None`` if it owns
    none). Same order, arithmetic and probes as ``orthogonality_penalty``:
    with one block the two agree bit for bit.

    Args:
        block_bases (Sequence[tuple[int, Tensor]]): The block's bases with
            their positions among the model's (``block_bases``).
        probes (int, optional): Probes per basis (``penalty_probes``);
            ``None`` is exact.
        step (int): Training step, which seeds the probes. Defaults to 0.

    Returns:
        Tensor | None: The sum of their ``penalty_terms``.
    """
    terms = penalty_terms(block_bases, probes, step)
    return torch.stack(terms).sum() if terms else None


def log_block(log_vars: Dict[str, Tensor], k: int, loss: Tensor, logits: Optional[Tensor],
              target: Tensor) -> None:
    """Record block ``k``'s loss and, with hard labels, its top-1 accuracy.

    Args:
        log_vars (dict[str, Tensor]): Updated in place with
            ``block{k}.loss`` (detached) and ``block{k}.top1`` (in percent).
        k (int): Block index.
        loss (Tensor): The block's loss.
        logits (Tensor, optional): The logits the top-1 is computed from;
            ``None`` logs no top-1.
        target (Tensor): Labels ``(N,)``; soft scores ``(N, C)`` log no
            top-1.
    """
    log_vars[f'{block_key(k)}.loss'] = loss.detach()
    if logits is not None and target.dim() == 1:
        with torch.no_grad():
            top1 = (logits.argmax(dim=1) == target).float().mean() * 100
        log_vars[f'{block_key(k)}.top1'] = top1


class LocalStep:
    """The updates of one ENN-ℓ training step, block by block.

    ``local_update(k, z)`` trains block ``k`` (not the last) on its output —
    use it as the callback of ``model.cut_hooks`` —, ``final_losses`` runs the
    forward to the model's own loss and ``final_update`` trains the last
    block.

    Args:
        model (ENNLocalClassifier): The model.
        wrappers (list[OptimWrapper]): One per block
            (``model.block_wrappers(optim_wrapper)``).
        target (Tensor): Labels ``(B,)`` or soft scores ``(B, C)``.
        penalty_weight (float, optional): Weight of the orthonormality
            penalty at this step (``model.penalty_weight(step)``): ``None``
            without a penalty, 0 on a step that skips it.
        grad_sync (callable, optional): Called with a block index after that
            block's backward and before its step (averages gradients over
            data-parallel replicas); ``None`` steps at once.
        image (Tensor, optional): The network input after the data
            preprocessor, for objectives that read it (reconstruction).
    """

    def __init__(self, model, wrappers: List, target: Tensor,
                 penalty_weight: Optional[float] = None,
                 grad_sync: Optional[Callable[[int], None]] = None,
                 image: Optional[Tensor] = None):
        self.model, self.wrappers, self.target = model, wrappers, target
        self.gamma = penalty_weight
        self.grad_sync = grad_sync
        self.image = image
        # One walk over the model per step, not one per block.
        self.bases = model.block_bases() if self.gamma else None
        self.probes = getattr(getattr(model, 'enn_options', None), 'penalty_probes', None)
        self.log_vars = OrderedDict()
        self._final_logits = []

    def _step(self, k: int, loss: Tensor) -> None:
        wrapper = self.wrappers[k]
        if self.grad_sync is None:
            wrapper.update_params(loss)
            return
        wrapper.backward(wrapper.scale_loss(loss))
        if wrapper.should_update():
            self.grad_sync(k)
            wrapper.step()
            wrapper.zero_grad()

    def _penalty(self, k: int) -> Optional[Tensor]:
        if not self.gamma:
            return None
        # the step this is for block k (its wrapper's updates so far), as in one process
        return block_penalty(self.bases[k], self.probes, self.wrappers[k].inner_count)

    def local_update(self, k: int, z: Tensor) -> None:
        """Loss of block ``k``'s local head on ``z``, backward, step.

        The loss is the weighted sum of the block's objectives plus ``γ``
        times its penalty; the backward runs outside autocast; the loss,
        top-1 and (with several objectives) each objective's term are
        logged.

        Args:
            k (int): Index of a local block (not the last).
            z (Tensor): The block's output at its cut point.
        """
        model = self.model
        logits = getattr(model, HEADS_KEY)[block_key(k)](z)
        loss, terms = None, model.block_objectives(k)
        for name, weight, objective in terms:
            term = objective(z, self.target, logits, self.image, model.local_loss_module)
            if len(terms) > 1:
                self.log_vars[f'{block_key(k)}.loss_{name}'] = term.detach()
            term = term if weight == 1 else weight * term
            loss = term if loss is None else loss + term
        penalty = self._penalty(k)
        if penalty is not None:
            loss = loss + self.gamma * penalty
        # backward outside autocast, as after any forward under AMP
        with torch.autocast(z.device.type, enabled=False):
            self._step(k, loss)
        log_block(self.log_vars, k, loss, logits, self.target)

    def final_losses(self, inputs: Tensor, samples) -> Dict[str, Tensor]:
        """The forward pass to the model head's loss dict.

        Args:
            inputs (Tensor): The network input after the data preprocessor.
            samples (list[DataSample]): The batch's data samples.

        Returns:
            dict[str, Tensor]: The loss items of ``model.head.loss``.
        """
        model = self.model
        handle = model.head.register_forward_hook(
            lambda m, a, out: self._final_logits.append(main_tensor(out)))
        try:
            return model.head.loss(model.extract_feat(inputs), samples)
        finally:
            handle.remove()

    def final_update(self, losses: Dict[str, Tensor]) -> Dict[str, Tensor]:
        """Train the last block on the model's own loss; return the logs.

        Args:
            losses (dict[str, Tensor]): The head's loss items
                (:meth:`final_losses`); ``loss_ortho`` (the last block's
                penalty, or 0 on a step without it) is added in place when
                the model has a penalty.

        Returns:
            dict[str, Tensor]: The parsed loss items (``loss`` is the last
            block's loss) and every block's ``block{k}.*`` logs.
        """
        model = self.model
        k = model.num_blocks - 1
        penalty = self._penalty(k)
        if penalty is not None:  # the last block's own bases only
            losses['loss_ortho'] = self.gamma * penalty
        elif self.gamma is not None:  # logged every step, as ENNModel does
            losses['loss_ortho'] = self.target.new_zeros((), dtype=torch.float)
        loss, final_vars = model.parse_losses(losses)
        self._step(k, loss)
        log_block(self.log_vars, k, loss, self._final_logits[-1] if self._final_logits else None,
                  self.target)
        final_vars.update(self.log_vars)
        return final_vars
