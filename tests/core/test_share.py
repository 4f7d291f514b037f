"""enn_mm.core.share: bases shared between layers."""
import pytest
import torch
from torch import nn

import enn_mm
from enn_mm.core import ENNOptions, bases, dense_view, factors, orthogonality_penalty

from helpers import rel_diff, square_mlp


def test_shared_basis_is_one_parameter_counted_once():
    torch.manual_seed(0)
    model = square_mlp()
    x = torch.randn(3, 16)
    ref = model(x)
    ENNOptions(share=[dict(name='mlp', include=['0', '2', '4'], share='P')]).apply(model)
    P = [factors(model[i])[2] for i in (0, 2, 4)]
    assert P[0] is P[1] is P[2]
    assert len(bases(model)) == 4 * 2 - 2
    # square layers: P is a full orthogonal basis, so sharing it is exact
    assert rel_diff(model(x), ref) < 1e-5
    expected = sum(((B.transpose(1, 2) @ B - torch.eye(B.shape[-1]))**2).sum()
                   for B in bases(model))
    assert orthogonality_penalty(model).item() == pytest.approx(expected.item(), abs=1e-9)
    # checkpoints: a fresh shared model loads the state dict, still shared
    twin = square_mlp()
    ENNOptions(share=[dict(name='mlp', include=['0', '2', '4'], share='P')]).apply(twin)
    twin.load_state_dict(model.state_dict())
    assert factors(twin[0])[2] is factors(twin[4])[2]
    assert torch.equal(twin(x), model(x))
    assert torch.allclose(enn_mm.export_dense(twin)(x), model(x), atol=1e-6)


def test_shared_basis_projects_non_square_followers_and_survives_reinit():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(32, 8), nn.Linear(32, 8))  # P: 32 x 8, not square
    W0, W1 = model[0].weight.detach().clone(), model[1].weight.detach().clone()
    ENNOptions(share=[dict(include=['*'], share='P')]).apply(model)
    P = factors(model[0])[2][0]
    assert torch.allclose(model[0].weight, W0, atol=1e-6)  # the leader is exact
    assert torch.allclose(model[1].weight, W1 @ P @ P.T, atol=1e-6)  # projected
    new = torch.randn(8, 32)
    with dense_view(model):
        model[0].weight.data.copy_(new)
    assert factors(model[0])[2] is factors(model[1])[2]
    assert torch.allclose(model[0].weight, new, atol=1e-5)


def test_share_groups_reject_bad_input():
    with pytest.raises(ValueError, match=r"'bad'.*P of '1' has shape .*only layers of equal shape"):
        ENNOptions(share=[dict(name='bad', include=['0', '1'])]).apply(
            nn.Sequential(nn.Linear(8, 8), nn.Linear(9, 8)))
    with pytest.raises(ValueError, match="matches 1 ENN layer"):
        ENNOptions(share=[dict(name='one', include=['0'])]).apply(square_mlp())
    with pytest.raises(KeyError, match='unknown'):
        ENNOptions(share=[dict(include=['0', '2'], basis='P')]).apply(square_mlp())


@pytest.mark.parametrize('share', ['Q', 'PQ'])
def test_sharing_q_or_both_bases(share):
    """share='Q' shares the output basis, 'PQ' both: one Parameter each,
    counted once by the penalty and the retraction, kept through a
    state-dict round trip. The first layer keeps its exact factorization;
    the others are projected onto the shared bases: exact for a shared
    square Q (Q·Qᵀ·W = W), and for 'PQ' the closed form
    Q0·diag(diag(Q0ᵀ·W·P0))·P0ᵀ."""
    torch.manual_seed(0)
    model = square_mlp()
    x = torch.randn(3, 16)
    ref = model(x)
    dense = [model[i].weight.detach().clone() for i in (0, 2, 4)]
    opts = ENNOptions(share=[dict(name='mlp', include=['0', '2', '4'], share=share)])
    opts.apply(model)
    Q = [factors(model[i])[0] for i in (0, 2, 4)]
    P = [factors(model[i])[2] for i in (0, 2, 4)]
    assert Q[0] is Q[1] is Q[2]
    assert (P[0] is P[1] is P[2]) == (share == 'PQ')
    assert len(bases(model)) == 4 * 2 - 2 * len(share)
    assert rel_diff(model[0].weight, dense[0]) < 1e-5
    if share == 'Q':
        assert rel_diff(model(x), ref) < 1e-5
    else:
        Q0, P0 = Q[0][0], P[0][0]
        for i, W in zip((2, 4), dense[1:]):
            want = Q0 @ torch.diag(torch.diagonal(Q0.T @ W @ P0)) @ P0.T
            assert rel_diff(model[i].weight, want) < 1e-5
    expected = sum(((B.transpose(1, 2) @ B - torch.eye(B.shape[-1]))**2).sum()
                   for B in bases(model))
    assert orthogonality_penalty(model).item() == pytest.approx(expected.item(), abs=1e-9)
    twin = square_mlp()
    ENNOptions(share=[dict(name='mlp', include=['0', '2', '4'], share=share)]).apply(twin)
    twin.load_state_dict(model.state_dict())
    assert factors(twin[0])[0] is factors(twin[4])[0]
    assert rel_diff(twin(x), model(x)) == 0
