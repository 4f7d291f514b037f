"""ENN settings, validated the same way from Python and from configs."""
import difflib
from dataclasses import dataclass, fields
from typing import Optional, Sequence

from torch import nn

from .convert import convert_to_enn
from .factored import COMPUTE_MODES, set_compute
from .ortho import enable_retraction
from .share import share_bases

__all__ = ['ENNOptions']

ORTHO_MODES = ('penalty', 'retract', 'none')


@dataclass
class ENNOptions:
    """What to convert and how to keep the bases orthonormal.

    Args:
        ortho (str): ``'retract'`` (default) re-orthonormalizes Q and P by
            QR after every ``retract_interval`` optimizer steps (exactly
            orthonormal there); ``'penalty'`` adds
            ``gamma·Σ(‖QᵀQ−I‖²_F + ‖PᵀP−I‖²_F)`` to the loss (the paper's
            released-code mode); ``'none'`` does neither. Retraction beat the
            penalty on every data set measured (docs/results.md).
        gamma (float, optional): Penalty weight. Defaults to 1e-5 for
            ``'penalty'`` (the paper's CIFAR ResNet-50 value) and 0 otherwise;
            a positive value with ``'retract'`` adds the penalty as well.
        retract_interval (int): Optimizer steps between retractions.
            Defaults to 10: a QR of every basis costs the same whatever the
            batch, so at small batches and inputs retracting every step
            dominates the step (docs/results.md#training-step-overhead).
        penalty_interval (int): Apply the penalty on every n-th training
            step only, weighted ``n·gamma`` so its average pull is unchanged
            (it costs about as much as materializing the weights; the
            paper's setting is 1).
        penalty_probes (int, optional): Estimate the penalty from this many
            random probes per basis instead of forming ``BᵀB``:
            ``(1/k)·‖Bᵀ(BZ) − Z‖²_F`` with Rademacher ``Z`` is unbiased in
            value and gradient and costs ``O(n·r·k)`` instead of
            ``O(n·r²)`` (:func:`enn_mm.core.basis_penalty`). The probes are
            a function of the step and the basis, the same on every
            data-parallel replica. ``None`` (default) is exact.
        include (Sequence[str]): Glob patterns of module names to convert
            (default: every layer of ``types``).
        exclude (Sequence[str]): Glob patterns of module names to keep dense.
        types (Sequence[str]): Layer types to convert.
        share (Sequence[dict]): Groups of equal-shape layers sharing P and/or
            Q, each ``dict(name=..., include=[glob, ...], share='P'|'Q'|'PQ')``
            (see :func:`enn_mm.core.share_bases`).
        compute (str): How a layer computes: ``'auto'`` (per call, the
            cheaper of building ``W`` and applying the factors, see
            :mod:`enn_mm.core.factored`), ``'materialize'`` or ``'factored'``.

    Raises:
        ValueError: An unknown ``ortho`` or ``compute`` mode, a negative
            ``gamma``, an interval that is not a positive integer, or
            ``penalty_probes`` that is not a positive integer or is given
            without a penalty.
    """
    ortho: str = 'retract'
    gamma: Optional[float] = None
    retract_interval: int = 10
    penalty_interval: int = 1
    penalty_probes: Optional[int] = None
    include: Sequence[str] = ()
    exclude: Sequence[str] = ()
    types: Sequence[str] = ('Conv2d', 'Linear')
    share: Sequence[dict] = ()
    compute: str = 'auto'

    def __post_init__(self):
        if self.ortho not in ORTHO_MODES:
            raise ValueError(f'unknown ENN ortho mode {self.ortho!r}; choose one '
                             f'of {ORTHO_MODES}.')
        if self.compute not in COMPUTE_MODES:
            raise ValueError(f'unknown ENN compute mode {self.compute!r}; choose one of '
                             f'{COMPUTE_MODES}.')
        if self.gamma is None:
            self.gamma = 1e-5 if self.ortho == 'penalty' else 0.0
        if self.gamma < 0:
            raise ValueError(f'ENN gamma must be >= 0, got {self.gamma}.')
        for key in ('retract_interval', 'penalty_interval'):
            value = getattr(self, key)
            if not isinstance(value, int) or value <= 0:
                raise ValueError(f'ENN {key} must be a positive integer, got {value!r}.')
        if self.penalty_probes is not None:
            if isinstance(self.penalty_probes, bool) or not isinstance(self.penalty_probes, int) \
                    or self.penalty_probes <= 0:
                raise ValueError(f'ENN penalty_probes must be a positive integer (e.g. 4), got '
                                 f'{self.penalty_probes!r}; None computes the penalty exactly.')
            if self.gamma <= 0:
                raise ValueError(
                    f'ENN penalty_probes={self.penalty_probes} estimates the orthonormality '
                    f'penalty, but ortho={self.ortho!r} with gamma={self.gamma:g} has none: '
                    "set ortho='penalty' (or a gamma > 0), or drop penalty_probes.")
        for key in ('include', 'exclude', 'types'):
            value = getattr(self, key)
            setattr(self, key, (value, ) if isinstance(value, str) else tuple(value))

    @classmethod
    def from_dict(cls, cfg: Optional[dict]) -> 'ENNOptions':
        """Build from a config dict, rejecting unknown keys by name.

        Args:
            cfg (dict, optional): Field values; None or empty for the
                defaults.

        Returns:
            ENNOptions: The validated options.

        Raises:
            KeyError: A key is not a field (the message suggests the closest
                one).
            ValueError: A value is invalid (see :class:`ENNOptions`).
        """
        cfg = dict(cfg or {})
        valid = [f.name for f in fields(cls)]
        for key in cfg:
            if key not in valid:
                close = difflib.get_close_matches(key, valid, n=1)
                hint = f' Did you mean {close[0]!r}?' if close else ''
                raise KeyError(f'unknown ENN option {key!r}.{hint} Valid options: '
                               f'{", ".join(valid)}.')
        return cls(**cfg)

    def penalty_weight(self, step: int) -> float:
        """The penalty's weight at training step ``step`` (0-based): ``n·γ``
        on every n-th step (``penalty_interval`` n), else 0; 0 without a
        penalty. ``ENNModel`` and ENN-ℓ's blocks both weigh it so.

        Args:
            step (int): The training step, 0-based.

        Returns:
            float: The weight of the orthogonality penalty at ``step``.
        """
        if self.gamma <= 0 or step % self.penalty_interval:
            return 0.0
        return self.gamma * self.penalty_interval

    def apply(self, model: nn.Module) -> nn.Module:
        """Convert ``model`` in place and arm retraction if asked for.

        Converts the selected layers (:func:`enn_mm.core.convert_to_enn`),
        shares bases if ``share`` is set, sets the compute mode and, for
        ``ortho='retract'``, enables retraction every ``retract_interval``
        steps.

        Args:
            model (nn.Module): The model, modified in place.

        Returns:
            nn.Module: ``model`` itself.

        Raises:
            ValueError: A pattern or type that selects nothing or cannot be
                converted, or an invalid share group.
            KeyError: A share group with unknown keys or no ``include``.
        """
        convert_to_enn(model, include=self.include, exclude=self.exclude, types=self.types)
        if self.share:
            share_bases(model, self.share)
        set_compute(model, self.compute)
        if self.ortho == 'retract':
            enable_retraction(model, self.retract_interval)
        return model
