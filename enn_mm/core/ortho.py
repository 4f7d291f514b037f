"""Orthonormality of the bases: penalty, error measure and retraction."""
from typing import Optional

import torch
from torch import Tensor

from .eigenbasis import eigenbasis, enn_modules, factors

__all__ = ['basis_penalty', 'basis_error', 'retract_', 'Retraction', 'probe_seed',
           'penalty_terms']


# Column-block width of the CPU Gram matrix (see `_gram`).
_GRAM_BLOCK = 128


def _gram(B: Tensor) -> Tensor:
    """``BᵀB`` of a batch of bases ``B`` of shape ``(g, n, r)``.

    On the CPU, where the penalty's matmuls are a large part of a training
    step, only the upper block triangle is multiplied (column blocks of
    ``_GRAM_BLOCK``) and mirrored: about a third fewer FLOPs than a full
    ``BᵀB``, the same matrix up to float rounding. On other devices one
    matmul is cheaper than several launches.
    """
    r, w = B.shape[-1], _GRAM_BLOCK
    Bt = B.transpose(-2, -1)
    if B.device.type != 'cpu' or r <= 2 * w:
        return Bt @ B
    G = B.new_empty(*B.shape[:-2], r, r)
    for i in range(0, r, w):
        G[..., i:i + w, i:] = Bt[..., i:i + w, :] @ B[..., i:]
    for i in range(w, r, w):
        G[..., i:i + w, :i] = G[..., :i, i:i + w].transpose(-2, -1)
    return G


def _product_like(B: Tensor, a: Tensor, b: Tensor) -> Tensor:
    """``a @ b`` (the shape of ``B``) written in ``B``'s memory layout: a
    basis stored transposed (``P``, see enn_mm/core/eigenbasis.py) gets
    ``(bᵀaᵀ)ᵀ``, so its gradient joins the forward's without a transposing
    copy."""
    if not B.is_contiguous() and B.mT.is_contiguous():
        return (b.mT @ a.mT).mT
    return a @ b


def _gram_residual(B: Tensor) -> Tensor:
    """``BᵀB − I`` for a batch of bases ``B`` of shape ``(g, n, r)``."""
    eye = torch.eye(B.shape[-1], dtype=B.dtype, device=B.device)
    return _gram(B) - eye


class _BasisPenalty(torch.autograd.Function):
    """``‖BᵀB − I‖²_F`` with its gradient in closed form, ``4·B(BᵀB − I)``.

    One small matmul in backward instead of an autograd graph through the Gram
    matrix: the penalty is evaluated every step, so this matters.
    """

    @staticmethod
    def forward(ctx, B):
        B32 = B if B.dtype == torch.float64 else B.float()
        R = _gram_residual(B32)
        ctx.save_for_backward(B32, R)
        ctx.dtype = B.dtype
        return R.square().sum()

    @staticmethod
    def backward(ctx, grad):
        B32, R = ctx.saved_tensors
        return (_product_like(B32, B32, R) * (4 * grad)).to(ctx.dtype)


class _ProbedBasisPenalty(torch.autograd.Function):
    """``(1/k)·‖Bᵀ(BZ) − Z‖²_F`` for probes ``Z`` (``(g, r, k)``, given as its
    transpose ``Zᵀ``, ``(g, k, r)``) with ``E[ZZᵀ] = k·I``: an unbiased
    estimate of ``‖BᵀB − I‖²_F``, and of its gradient, without the ``r × r``
    Gram matrix.

    With ``Y = BZ`` and ``M = BᵀY − Z`` the gradient is
    ``(2/k)·(YMᵀ + (BM)Zᵀ)``, whose mean over ``Z`` is ``4·B(BᵀB − I)``.
    Forward and backward cost about ``5·n·r·k`` multiply-adds against the
    exact penalty's ``2·n·r²``. The products are taken with the probes as
    rows (``Yᵀ = ZᵀBᵀ``, ``Mᵀ = YᵀB − Zᵀ``), where a CPU GEMM with a few
    rows is several times faster than one with a few columns, and the
    gradient as one product ``[Y, BM]·[M, Z]ᵀ``, so that the ``n × r``
    result is written once.
    """

    @staticmethod
    def forward(ctx, B, Zt):
        B32 = B if B.dtype == torch.float64 else B.float()
        Zt = Zt.to(B32.dtype)
        Bt = B32.transpose(-2, -1)
        Yt = Zt @ Bt
        Mt = Yt @ B32 - Zt
        ctx.save_for_backward(B32, Zt, Yt, Mt)
        ctx.dtype = B.dtype
        return Mt.square().sum() / Zt.shape[-2]

    @staticmethod
    def backward(ctx, grad):
        B32, Zt, Yt, Mt = ctx.saved_tensors
        scale = 2 * grad / Zt.shape[-2]
        left = torch.cat([Yt, Mt @ B32.transpose(-2, -1)], -2)   # [Y, BM]ᵀ
        right = torch.cat([Mt, Zt], -2) * scale                  # [M, Z]ᵀ
        return _product_like(B32, left.transpose(-2, -1), right).to(ctx.dtype), None


def probe_seed(step: int, index: int) -> int:
    """Seed of the probes of basis ``index`` (in :func:`bases` order) at
    training step ``step``: a function of the two only, so every data-parallel
    replica and every ENN-ℓ block draws the same probes as one process does.

    Args:
        step (int): Training step, 0-based.
        index (int): Position of the basis in :func:`bases` of the model.

    Returns:
        int: A 63-bit seed.
    """
    return (0x9E3779B97F4A7C15 * (step + 1) + 0xBF58476D1CE4E5B9 * (index + 1)) % 2**63


def rademacher_probes(B: Tensor, probes: int, seed: int) -> Tensor:
    """``(g, r, probes)`` random signs for a basis ``B`` of shape
    ``(g, n, r)``, from their own generator (the global random stream is
    not used).

    Args:
        B (Tensor): The basis (for its shape and device).
        probes (int): Probes per group.
        seed (int): Seed of the generator (see :func:`probe_seed`).

    Returns:
        Tensor: ±1 entries, fp32, on ``B``'s device.
    """
    g = torch.Generator().manual_seed(seed)
    z = torch.randint(0, 2, (*B.shape[:-2], B.shape[-1], probes), generator=g)
    return (2 * z - 1).to(device=B.device, dtype=torch.float32)


def basis_penalty(B: Tensor, probes: Optional[int] = None, seed: int = 0) -> Tensor:
    """``Σ_groups ‖BᵀB − I‖²_F`` of a (batched) basis, differentiable; with
    ``probes`` k, its Gram-free unbiased estimate ``(1/k)·‖Bᵀ(BZ) − Z‖²_F``
    from k Rademacher probes ``Z`` (Hutchinson's estimator of
    ``tr((BᵀB − I)²)``), whose variance falls as 1/k.

    Computed in fp32 (fp64 for fp64 input) whatever the parameter dtype.

    Args:
        B (Tensor): Bases of shape ``(g, n, r)``.
        probes (int, optional): Number of probes; ``None`` computes the
            penalty exactly.
        seed (int): Seed of the probes (:func:`probe_seed`). Defaults to 0.

    Returns:
        Tensor: The penalty, a scalar; its gradient is ``4·B(BᵀB − I)``
        (exact), or an unbiased estimate of it (probes).
    """
    if probes is None:
        return _BasisPenalty.apply(B)
    Z = rademacher_probes(B, probes, seed)
    return _ProbedBasisPenalty.apply(B, Z.transpose(-2, -1).contiguous())


@torch.no_grad()
def basis_error(B: Tensor) -> float:
    """Largest absolute entry of ``BᵀB − I`` (0 for an exact orthonormal basis).

    Args:
        B (Tensor): Bases of shape ``(g, n, r)``; measured in fp32.

    Returns:
        float: The error over all groups.
    """
    return _gram_residual(B.float()).abs().max().item()


@torch.no_grad()
def retract_(B: Tensor) -> Tensor:
    """Replace ``B`` in place by the Q factor of its QR decomposition.

    The signs are fixed so that ``R`` has a positive diagonal, which keeps the
    result the closest QR retraction to ``B`` (no column flips sign).

    Args:
        B (Tensor): Bases of shape ``(g, n, r)``, overwritten (the QR runs
            in fp32).

    Returns:
        Tensor: ``B`` itself.
    """
    q, r = torch.linalg.qr(B.float())
    sign = torch.sign(torch.diagonal(r, dim1=-2, dim2=-1))
    sign[sign == 0] = 1
    B.copy_(q * sign.unsqueeze(-2))
    return B


# --------------------------------------------------------------- model level
def bases(model) -> list:
    """The distinct orthonormal bases (Q and P Parameters) of ``model``.

    A basis shared by several layers appears once, so the penalty and the
    retraction count it once.

    Args:
        model (nn.Module): Any module.

    Returns:
        list: The Q and P Parameters, in layer order (Q before P).
    """
    seen, out = set(), []
    for _, module in enn_modules(model):
        Q, _, P = factors(module)
        for B in (Q, P):
            if id(B) not in seen:
                seen.add(id(B))
                out.append(B)
    return out


def penalty_terms(indexed_bases, probes: Optional[int] = None, step: int = 0) -> list:
    """:func:`basis_penalty` of each ``(position, basis)`` pair, the probes
    seeded by ``step`` and the basis's position among the model's
    (:func:`probe_seed`): the one rule the whole model's penalty and each
    ENN-ℓ block's follow.

    Args:
        indexed_bases (Iterable[tuple[int, Tensor]]): Bases with their
            positions in :func:`bases` of the model.
        probes (int, optional): Probes per basis; ``None`` is exact.
        step (int): Training step. Defaults to 0.

    Returns:
        list[Tensor]: One scalar per basis.
    """
    return [basis_penalty(B, probes, probe_seed(step, i)) for i, B in indexed_bases]


def orthogonality_penalty(model, probes: Optional[int] = None, step: int = 0) -> Tensor:
    """``Σ_bases ‖BᵀB − I‖²_F`` over all ENN layers (differentiable), exact
    or estimated with ``probes`` probes per basis (:func:`basis_penalty`).

    Each distinct basis (:func:`bases`) is counted once.

    Args:
        model (nn.Module): Any module.
        probes (int, optional): Probes per basis; ``None`` is exact.
        step (int): Training step, which seeds the probes with the basis's
            position (:func:`probe_seed`). Defaults to 0.

    Returns:
        Tensor: The penalty, a scalar (a CPU zero without ENN layers).
    """
    terms = penalty_terms(enumerate(bases(model)), probes, step)
    if not terms:
        return torch.zeros(())
    return torch.stack(terms).sum()


def orthogonality_error(model, reduction: str = 'max'):
    """How far the bases of ``model`` are from orthonormal.

    Args:
        model (nn.Module): A model with ENN layers.
        reduction (str): ``'max'`` gives the largest ``|BᵀB − I|`` entry over
            all bases (a float); ``'none'`` gives ``{layer name: error}`` with
            the worse of the layer's Q and P.

    Returns:
        float | dict: The largest error (0.0 without ENN layers), or the
        per-layer errors for ``reduction='none'``.

    Raises:
        ValueError: ``reduction`` is neither ``'max'`` nor ``'none'``.
    """
    per_layer = {}
    for name, module in enn_modules(model):
        Q, _, P = factors(module)
        per_layer[name] = max(basis_error(Q), basis_error(P))
    if reduction == 'none':
        return per_layer
    if reduction != 'max':
        raise ValueError(f"reduction must be 'max' or 'none', got {reduction!r}")
    return max(per_layer.values(), default=0.0)


# Retraction runs after the steps of an optimizer that updates bases, from an
# instance-level step post-hook that a Retraction object owns: only steps
# that happen count (an AMP scaler that skips a step skips the retraction),
# each optimizer (one per ENN-ℓ block) retracts exactly the bases it updates,
# and the step counter is the object's state, saved with its owner.
class Retraction:
    """QR retraction of the bases one optimizer updates, after every n-th of
    its steps (n: the ``retract_interval`` of the basis's layer).

    Registers a step post-hook on ``optimizer`` itself (not a global one);
    :meth:`remove` takes it off. The number of steps taken is the state
    (:meth:`state_dict`), so a resumed run retracts on the same steps;
    mmengine's ``ENNOptimWrapper`` saves it with the optimizer. Layers whose
    ``retract_interval`` is 0 (``ortho='penalty'``/``'none'``, or a deep
    copy such as an EMA model) are left alone. Use it in a plain PyTorch
    loop as::

        retraction = Retraction(optimizer, model)   # after enable_retraction
        ...
        optimizer.step()                            # retracts on schedule

    Args:
        optimizer (torch.optim.Optimizer): The optimizer.
        model (nn.Module): The model whose ENN layers' bases (those among
            the optimizer's parameters) to retract.
    """

    def __init__(self, optimizer, model):
        self.optimizer = optimizer
        mine = {id(p) for g in optimizer.param_groups for p in g['params']}
        self.bases = []  # (basis Parameter, interval), each basis once
        seen = set()
        for _, module in enn_modules(model):
            interval = eigenbasis(module).retract_interval
            Q, _, P = factors(module)
            for B in (Q, P):
                if interval and id(B) in mine and id(B) not in seen:
                    seen.add(id(B))
                    self.bases.append((B, interval))
        self.steps = 0
        self._handle = optimizer.register_step_post_hook(self._after_step) \
            if self.bases else None

    def _after_step(self, optimizer, args, kwargs) -> None:
        self.steps += 1
        for B, interval in self.bases:
            if self.steps % interval == 0:
                retract_(B.data)

    def state_dict(self) -> dict:
        """The state to checkpoint.

        Returns:
            dict: ``{'steps': n}``, the optimizer steps taken.
        """
        return {'steps': self.steps}

    def load_state_dict(self, state: dict) -> None:
        """Restore the step count of :meth:`state_dict`.

        Args:
            state (dict): A :meth:`state_dict`.
        """
        self.steps = int(state['steps'])

    def remove(self) -> None:
        """Take the hook off the optimizer (no more retraction)."""
        if self._handle is not None:
            self._handle.remove()
            self._handle = None


def enable_retraction(model, interval: int = 1, optimizer=None):
    """Keep the bases of ``model`` orthonormal by QR retraction.

    Sets :attr:`Eigenbasis.retract_interval` of every ENN layer of ``model``:
    after every ``interval``-th step of an optimizer that updates them, Q and
    P are replaced by the Q factor of their QR decomposition (orthonormal to
    float precision). The retraction itself is a :class:`Retraction` on that
    optimizer: pass ``optimizer`` here to get one, or let mmengine's
    ``ENNOptimWrapperConstructor`` make it.

    Args:
        model (nn.Module): The model whose ENN layers to retract.
        interval (int): Optimizer steps between retractions. Defaults to 1.
        optimizer (torch.optim.Optimizer, optional): The optimizer whose
            steps trigger the retraction.

    Returns:
        Retraction | None: The retraction on ``optimizer`` (None without one).

    Raises:
        ValueError: ``interval`` is not a positive integer.
    """
    if not isinstance(interval, int) or interval <= 0:
        raise ValueError(f'retract_interval must be a positive integer, got {interval!r}')
    for _, module in enn_modules(model):
        eigenbasis(module).retract_interval = interval
    return Retraction(optimizer, model) if optimizer is not None else None
