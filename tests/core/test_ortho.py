"""enn_mm.core.ortho: the orthogonality penalty against closed forms and the
plain Gram matrix, and QR retraction with its interval."""
import pytest
import torch

import enn_mm
from enn_mm.core import (
    ENNOptions,
    bases,
    basis_error,
    basis_penalty,
    factors,
    orthogonality_penalty,
)

from helpers import mlp


def test_penalty_closed_form():
    # Q: columns (1,0,0) and (0,2,0): QᵀQ − I = diag(0, 3) -> 9
    Q = torch.tensor([[[1., 0.], [0., 2.], [0., 0.]]], requires_grad=True)
    # P: columns (1,1)/1 and (0,1): PᵀP − I = [[1,1],[1,0]] -> 3
    P = torch.tensor([[[1., 0.], [1., 1.]]], requires_grad=True)
    assert basis_penalty(Q).item() == pytest.approx(9.0)
    assert basis_penalty(P).item() == pytest.approx(3.0)
    # gradient 4·B(BᵀB − I), against autograd of the plain expression
    for B in (Q, P):
        B.grad = None
        basis_penalty(B).backward()
        ref = B.detach().clone().requires_grad_()
        eye = torch.eye(2)
        ((ref.transpose(1, 2) @ ref - eye)**2).sum().backward()
        assert torch.allclose(B.grad, ref.grad)
    double = torch.randn(2, 5, 3, dtype=torch.double, requires_grad=True)
    assert torch.autograd.gradcheck(basis_penalty, (double, ))


def test_penalty_of_wide_bases_matches_the_plain_gram():
    # r > 2·128: the CPU Gram is built from column blocks; value and gradient
    # must be those of the plain expression (fp64 reference).
    torch.manual_seed(0)
    for shape in [(1, 700, 300), (3, 300, 270), (1, 257, 257)]:
        B = (torch.randn(*shape) / shape[1]**0.5).requires_grad_()
        basis_penalty(B).backward()
        ref = B.detach().double().requires_grad_()
        residual = ref.transpose(1, 2) @ ref - torch.eye(shape[2], dtype=torch.double)
        value = (residual**2).sum()
        value.backward()
        assert basis_penalty(B).item() == pytest.approx(value.item(), rel=1e-5)
        torch.testing.assert_close(B.grad, ref.grad.float(), rtol=1e-4, atol=1e-5)
        assert basis_error(B) == pytest.approx(residual.abs().max().item(), rel=1e-5)


def test_probed_penalty_is_unbiased_with_variance_falling_as_one_over_k():
    """penalty_probes k: (1/k)·‖Bᵀ(BZ) − Z‖² with Rademacher Z. Over 2000 seeds
    its mean is the exact penalty and its mean gradient the closed form
    4·B(BᵀB − I), each within 4 standard errors of the sample mean; the
    variance of the value and of the gradient falls as 1/k (ratio 4 for k
    1 -> 4, within 3 to 5.3 at 2000 draws); one seed draws one estimate."""
    torch.manual_seed(0)
    B = torch.linalg.qr(torch.randn(2, 30, 8, dtype=torch.double))[0]
    B = (B + 0.05 * torch.randn(2, 30, 8, dtype=torch.double)).requires_grad_()
    exact = basis_penalty(B)
    g_exact, = torch.autograd.grad(exact, B)
    eye = torch.eye(8, dtype=torch.double)
    assert torch.allclose(g_exact, 4 * B.detach() @ (B.detach().transpose(1, 2) @ B.detach() - eye))
    var = {}
    n = 2000
    for k in (1, 4):
        vals, grads = [], []
        for seed in range(n):
            v = basis_penalty(B, probes=k, seed=seed)
            g, = torch.autograd.grad(v, B)
            vals.append(v.detach())
            grads.append(g)
        vals, grads = torch.stack(vals), torch.stack(grads)
        assert abs(vals.mean() - exact) < 4 * vals.std() / n**0.5
        err = (grads.mean(0) - g_exact).abs()
        assert (err < 4 * grads.std(0) / n**0.5 + 1e-12).float().mean() > 0.99
        var[k] = (vals.var().item(), (grads - g_exact).square().sum((1, 2, 3)).mean().item())
    assert 3.0 < var[1][0] / var[4][0] < 5.3 and 3.0 < var[1][1] / var[4][1] < 5.3
    assert torch.equal(basis_penalty(B, 4, seed=3), basis_penalty(B, 4, seed=3))
    assert not torch.equal(basis_penalty(B, 4, seed=3), basis_penalty(B, 4, seed=4))
    # an exactly orthonormal basis: every estimate is 0
    Q = torch.linalg.qr(torch.randn(1, 12, 5, dtype=torch.double))[0]
    assert basis_penalty(Q, probes=2, seed=0).item() == pytest.approx(0.0, abs=1e-20)
    # the gradient formula against autograd of the plain expression, one draw
    from enn_mm.core.ortho import rademacher_probes
    Z = rademacher_probes(B, 3, seed=5).double()
    ref = B.detach().clone().requires_grad_()
    ((ref.transpose(1, 2) @ (ref @ Z) - Z).square().sum() / 3).backward()
    g, = torch.autograd.grad(basis_penalty(B, probes=3, seed=5), B)
    assert torch.allclose(g, ref.grad)


def test_probed_model_penalty_seeds_each_basis_by_step_and_position():
    from enn_mm.core.ortho import probe_seed
    torch.manual_seed(0)
    model = enn_mm.convert_to_enn(mlp())
    with torch.no_grad():  # off the manifold, so that the estimate depends on the probes
        for B in bases(model):
            B.add_(0.1 * torch.randn_like(B))
    want = sum(basis_penalty(B, 2, probe_seed(7, i)) for i, B in enumerate(bases(model)))
    assert torch.equal(orthogonality_penalty(model, probes=2, step=7), want)
    assert not torch.equal(orthogonality_penalty(model, probes=2, step=8), want)


@pytest.mark.parametrize('kw, match', [
    (dict(ortho='penalty', penalty_probes=0), 'penalty_probes must be a positive integer'),
    (dict(ortho='penalty', penalty_probes=2.5), 'penalty_probes must be a positive integer'),
    (dict(ortho='retract', penalty_probes=4), r"has none: set ortho='penalty'"),
    (dict(ortho='none', penalty_probes=4), r"has none: set ortho='penalty'"),
])
def test_probes_bad_input(kw, match):
    with pytest.raises(ValueError, match=match):
        ENNOptions.from_dict(kw)


def test_model_penalty_sums_layers_and_gradients_reach_factors():
    torch.manual_seed(0)
    model = enn_mm.convert_to_enn(mlp())
    with torch.no_grad():
        for B in bases(model):
            B.mul_(1.1)
    expected = sum(((B.transpose(1, 2) @ B - torch.eye(B.shape[-1]))**2).sum()
                   for B in bases(model))
    pen = orthogonality_penalty(model)
    assert pen.item() == pytest.approx(expected.item(), rel=1e-5)
    loss = model(torch.randn(4, 20)).square().mean() + 1e-3 * pen
    loss.backward()
    for _, m in enn_mm.enn_modules(model):
        for t in factors(m):
            assert t.grad is not None and t.grad.abs().sum() > 0


def test_retraction_keeps_bases_orthonormal():
    torch.manual_seed(0)
    model = mlp()
    ENNOptions(ortho='retract', retract_interval=1).apply(model)
    opt = torch.optim.AdamW(model.parameters(), lr=0.05)
    enn_mm.Retraction(opt, model)
    for _ in range(3):
        model(torch.randn(8, 20)).square().mean().backward()
        opt.step()
        opt.zero_grad()
    assert enn_mm.orthogonality_error(model) < 1e-5
    # without retraction the same steps leave the bases far from orthonormal
    torch.manual_seed(0)
    free = enn_mm.convert_to_enn(mlp())
    opt = torch.optim.AdamW(free.parameters(), lr=0.05)
    for _ in range(3):
        free(torch.randn(8, 20)).square().mean().backward()
        opt.step()
        opt.zero_grad()
    assert enn_mm.orthogonality_error(free) > 1e-2


def test_retraction_interval_counts_optimizer_steps():
    model = mlp()
    ENNOptions(ortho='retract', retract_interval=2).apply(model)
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    retraction = enn_mm.Retraction(opt, model)
    errors = []
    for _ in range(4):
        model(torch.randn(8, 20)).square().mean().backward()
        opt.step()
        opt.zero_grad()
        errors.append(enn_mm.orthogonality_error(model))
    assert errors[0] > 1e-4 and errors[2] > 1e-4
    assert errors[1] < 1e-5 and errors[3] < 1e-5
    # the count is the retraction's state: restored, the schedule goes on
    assert retraction.state_dict() == {'steps': 4}
    opt2 = torch.optim.SGD(model.parameters(), lr=0.5)
    resumed = enn_mm.Retraction(opt2, model)
    resumed.load_state_dict({'steps': 3})
    model(torch.randn(8, 20)).square().mean().backward()
    opt2.step()  # the 4th step: retracts
    assert enn_mm.orthogonality_error(model) < 1e-5
    # removed, it retracts no more; other optimizers were never touched
    retraction.remove()
    resumed.remove()
    model(torch.randn(8, 20)).square().mean().backward()
    opt2.step()
    assert enn_mm.orthogonality_error(model) > 1e-4
