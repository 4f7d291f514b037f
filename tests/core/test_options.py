"""enn_mm.core.options: ENNOptions' checks and the penalty weight schedule."""
import pytest

from enn_mm.core import ENNOptions


def test_unknown_options_are_rejected():
    with pytest.raises(KeyError, match="unknown ENN option 'gamme'.*'gamma'"):
        ENNOptions.from_dict(dict(gamme=1e-5))
    with pytest.raises(ValueError, match="unknown ENN ortho mode 'cayley-x'"):
        ENNOptions(ortho='cayley-x')
    with pytest.raises(ValueError, match='retract_interval must be a positive integer'):
        ENNOptions(ortho='retract', retract_interval=0)


def test_penalty_weight_schedule():
    """One schedule for ENNModel and ENN-ℓ: n·γ on every n-th step, else 0."""
    opts = ENNOptions(ortho='penalty', gamma=1e-3, penalty_interval=4)
    assert [opts.penalty_weight(s) for s in range(9)] == \
        [4e-3, 0, 0, 0, 4e-3, 0, 0, 0, 4e-3]
    assert ENNOptions().penalty_weight(0) == 0.0  # retraction: no penalty
    assert ENNOptions(ortho='penalty').penalty_weight(3) == pytest.approx(1e-5)
