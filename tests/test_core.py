"""The pure-PyTorch core against dense references and closed forms."""
import copy
import pathlib

import pytest
import torch
import torchvision
from torch import nn

import enn_mm
from enn_mm.core import (ENNConv2d, ENNLinear, ENNOptions, basis_error, basis_penalty, bases,
                         dense_view, factors, is_enn, orthogonality_penalty)


def rel_diff(a, b):
    return ((a - b).abs().max() / b.abs().max()).item()


def mlp():
    return nn.Sequential(nn.Linear(20, 32), nn.GELU(), nn.Linear(32, 8), nn.GELU(), nn.Linear(8, 5))


@pytest.mark.parametrize('make,shape', [
    (lambda: torchvision.models.resnet18(num_classes=10), (2, 3, 32, 32)),
    (mlp, (4, 20)),
])
def test_conversion_preserves_outputs(make, shape):
    torch.manual_seed(0)
    model = make().eval()
    x = torch.randn(shape)
    with torch.no_grad():
        ref = model(x)
        enn_mm.convert_to_enn(model)
        out = model(x)
    n_dense = sum(isinstance(m, (nn.Conv2d, nn.Linear)) for m in make().modules())
    assert sum(1 for _ in enn_mm.enn_modules(model)) == n_dense
    assert rel_diff(out, ref) <= 1e-5
    # at conversion the bases are exactly orthonormal (SVD)
    assert enn_mm.orthogonality_error(model) < 1e-5


def test_export_gives_plain_layers_and_identical_outputs():
    torch.manual_seed(0)
    model = torchvision.models.resnet18(num_classes=10).eval()
    dense_keys = set(model.state_dict())
    enn_mm.convert_to_enn(model)
    # perturb the factors so the check is not just the SVD round trip
    with torch.no_grad():
        for _, m in enn_mm.enn_modules(model):
            for t in factors(m):
                t.add_(0.01 * torch.randn_like(t))
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        auto = model(x)  # some layers apply the factors: equal up to rounding
        ref = enn_mm.set_compute(model, 'materialize')(x)  # builds W, as the export
        enn_mm.export_dense(model)
        out = model(x)
    assert torch.equal(out, ref)
    assert rel_diff(auto, ref) < 1e-5
    assert not any(is_enn(m) for m in model.modules())
    assert all(type(m) in (nn.Conv2d, nn.Linear) for m in model.modules()
               if isinstance(m, (nn.Conv2d, nn.Linear)))
    assert set(model.state_dict()) == dense_keys
    fresh = torchvision.models.resnet18(num_classes=10).eval()
    fresh.load_state_dict(model.state_dict(), strict=True)
    with torch.no_grad():
        assert torch.equal(fresh(x), ref)


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


def test_grouped_and_depthwise_convs_factor_per_group():
    torch.manual_seed(0)
    for groups in (4, 8):
        conv = nn.Conv2d(8, 16, 3, padding=1, groups=groups)
        x = torch.randn(2, 8, 6, 6)
        ref = conv(x)
        enn_mm.convert_to_enn(nn.Sequential(conv))
        Q, lam, P = factors(conv)
        assert Q.shape == (groups, 16 // groups, min(16 // groups, 8 // groups * 9))
        assert P.shape[:2] == (groups, 8 // groups * 9)
        assert rel_diff(conv(x), ref) <= 1e-5


def test_enn_layers_keep_the_dense_interface():
    conv = ENNConv2d(4, 6, 3, stride=2, padding=1, groups=2)
    assert isinstance(conv, nn.Conv2d)
    assert (conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride,
            conv.padding, conv.groups) == (4, 6, (3, 3), (2, 2), (1, 1), 2)
    assert conv.weight.shape == (6, 2, 3, 3)
    lin = ENNLinear(7, 3)
    assert (lin.in_features, lin.out_features, lin.bias.shape) == (7, 3, (3, ))
    # the weight is computed from the factors
    Q, lam, P = factors(lin)
    assert torch.allclose(lin.weight, (Q[0] * lam[0]) @ P[0].T)
    # assigning a dense weight re-factors it
    new = torch.randn(3, 7)
    lin.weight = new
    assert torch.allclose(lin.weight, new, atol=1e-5)


def test_dense_checkpoint_loads_by_svd():
    torch.manual_seed(0)
    dense = mlp()
    enn = enn_mm.convert_to_enn(mlp())
    assert not torch.allclose(enn[0].weight, dense[0].weight)
    missing, unexpected = enn.load_state_dict(dense.state_dict(), strict=True)
    x = torch.randn(3, 20)
    assert rel_diff(enn(x), dense(x)) <= 1e-5
    wrong = nn.Sequential(nn.Linear(20, 33))
    with pytest.raises(RuntimeError, match='size mismatch for 0.weight'):
        enn_mm.convert_to_enn(mlp()).load_state_dict(wrong.state_dict(), strict=False)


def test_dense_view_reinitializes_into_the_same_parameters():
    model = enn_mm.convert_to_enn(mlp())
    before = [id(p) for p in model.parameters()]
    target = torch.randn(32, 20)
    with dense_view(model):
        assert type(model[0]) is nn.Linear
        model[0].weight.data.copy_(target)
    assert [id(p) for p in model.parameters()] == before
    assert is_enn(model[0])
    assert torch.allclose(model[0].weight, target, atol=1e-5)


def test_retraction_keeps_bases_orthonormal():
    torch.manual_seed(0)
    model = mlp()
    ENNOptions(ortho='retract', retract_interval=1).apply(model)
    opt = torch.optim.AdamW(model.parameters(), lr=0.05)
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
    errors = []
    for _ in range(4):
        model(torch.randn(8, 20)).square().mean().backward()
        opt.step()
        opt.zero_grad()
        errors.append(enn_mm.orthogonality_error(model))
    assert errors[0] > 1e-4 and errors[2] > 1e-4
    assert errors[1] < 1e-5 and errors[3] < 1e-5


def test_bf16_autocast_materializes_in_fp32():
    torch.manual_seed(0)
    layer = ENNLinear(16, 16)
    x = torch.randn(4, 16)
    with torch.autocast('cpu', dtype=torch.bfloat16):
        w = layer.weight
        y = layer(x)
    assert w.dtype == torch.float32
    assert y.dtype == torch.bfloat16
    assert rel_diff(y.float(), nn.functional.linear(x, layer.weight, layer.bias)) < 2e-2


@pytest.mark.parametrize('layer,shape', [
    (lambda: nn.Conv2d(8, 12, 3, stride=2, padding=1, groups=4), (2, 8, 9, 9)),  # grouped
    (lambda: nn.Conv2d(6, 6, 3, padding=1, groups=6, bias=False), (2, 6, 5, 5)),  # depthwise
    (lambda: nn.Conv2d(8, 16, (3, 1), padding='same', dilation=2), (2, 8, 7, 7)),
    (lambda: nn.Conv2d(4, 8, 2, padding='valid'), (3, 4, 6, 6)),
    (lambda: nn.Conv1d(4, 6, 3, stride=2), (3, 4, 10)),
    (lambda: nn.Conv3d(2, 4, 3, padding=1), (1, 2, 4, 4, 4)),
    (lambda: nn.Linear(10, 7), (2, 5, 10)),  # tokens
])
def test_factored_and_materialized_compute_the_dense_layer(layer, shape):
    torch.manual_seed(0)
    dense = layer()
    model = enn_mm.convert_to_enn(nn.Sequential(copy.deepcopy(dense)), types=(type(dense),))
    x = torch.randn(shape)
    x_ref = x.clone().requires_grad_()
    ref = dense(x_ref)
    ref.square().sum().backward()
    grads = {}
    for mode in enn_mm.COMPUTE_MODES:
        enn_mm.set_compute(model, mode)
        xi = x.clone().requires_grad_()
        y = model(xi)
        assert y.shape == ref.shape
        assert rel_diff(y, ref) < 1e-5, mode
        y.square().sum().backward()
        assert rel_diff(xi.grad, x_ref.grad) < 1e-5, mode
        grads[mode] = [p.grad.clone() for p in model.parameters()]
        model.zero_grad()
    for mode in ('factored', 'auto'):  # the same gradient for Q, λ, P, bias
        for a, b in zip(grads[mode], grads['materialize']):
            assert rel_diff(a, b) < 1e-4, mode
    positions = enn_mm.core.factored.output_positions(model[0], x)
    assert positions == ref.numel() // (ref.shape[1] if ref.dim() > 2 and not
                                         isinstance(dense, nn.Linear) else ref.shape[-1])


def test_auto_compute_builds_w_only_when_that_is_cheaper():
    conv = ENNConv2d(64, 64, 3, padding=1)  # d_in 576, d_out = r = 64
    built = []
    conv.parametrizations.weight[0].register_forward_hook(lambda *a: built.append(1))
    # factored: N·64·640 against N·64·576 + 64·64·576: cheaper iff N < 576
    conv(torch.randn(1, 64, 20, 20))  # N = 400
    assert built == []
    conv(torch.randn(2, 64, 20, 20))  # N = 800
    assert built == [1]
    with pytest.raises(ValueError, match="unknown ENN compute mode 'fast'"):
        ENNOptions(compute='fast')

    class Padded(nn.Conv2d):  # a forward of its own: always build W, run it
        def forward(self, x):
            return super().forward(nn.functional.pad(x, (1, 1, 1, 1)))

    dense = Padded(4, 8, 3)
    x = torch.randn(1, 4, 5, 5)
    ref = dense(x)
    model = enn_mm.set_compute(enn_mm.convert_to_enn(nn.Sequential(dense)), 'factored')
    assert rel_diff(model(x), ref) < 1e-5


def test_deepcopy_and_state_dict_round_trip():
    model = enn_mm.convert_to_enn(mlp())
    twin = copy.deepcopy(model)
    assert twin[0].forward.__self__ is twin[0]  # the ENN forward follows the copy
    twin.load_state_dict(model.state_dict())
    x = torch.randn(2, 20)
    assert torch.equal(twin(x), model(x))


def test_export_or_dense_view_of_one_copy_leaves_the_others_intact():
    # deep copies share torch's injected parametrization class (EMA models do)
    model = enn_mm.convert_to_enn(mlp())
    ema = copy.deepcopy(model)
    x = torch.randn(2, 20)
    ref = model(x)
    dense = enn_mm.export_dense(copy.deepcopy(model))
    with dense_view(model):
        pass
    assert torch.allclose(ema(x), ref) and torch.allclose(model(x), ref, atol=1e-6)
    assert torch.allclose(dense(x), ref) and is_enn(ema[0]) and not is_enn(dense[0])


# ------------------------------------------------------------- bad input
def test_pattern_matching_nothing_names_the_pattern():
    with pytest.raises(ValueError, match=r"include pattern 'backbone\.\*' matches no"):
        enn_mm.convert_to_enn(mlp(), include=['backbone.*'])
    with pytest.raises(ValueError, match=r"exclude pattern 'head' matches no"):
        enn_mm.convert_to_enn(mlp(), exclude=['head'])


@pytest.mark.parametrize('types,name', [(['Embedding'], 'Embedding'),
                                        ([nn.ConvTranspose2d], 'ConvTranspose2d')])
def test_unsupported_layer_type(types, name):
    with pytest.raises(ValueError, match=f"cannot convert layers of type '{name}'"):
        enn_mm.convert_to_enn(mlp(), types=types)


def test_unconvertible_layers_are_named():
    model = nn.Sequential(nn.Linear(3, 3), nn.LazyLinear(4))
    with pytest.raises(ValueError, match="layer '1'.*lazy module"):
        enn_mm.convert_to_enn(model)
    normed = nn.Sequential(nn.utils.parametrizations.weight_norm(nn.Linear(3, 3)))
    with pytest.raises(ValueError, match="layer '0' already has a parametrization"):
        enn_mm.convert_to_enn(normed)


def test_unknown_options_are_rejected():
    with pytest.raises(KeyError, match="unknown ENN option 'gamme'.*'gamma'"):
        ENNOptions.from_dict(dict(gamme=1e-5))
    with pytest.raises(ValueError, match="unknown ENN ortho mode 'cayley-x'"):
        ENNOptions(ortho='cayley-x')
    with pytest.raises(ValueError, match='retract_interval must be a positive integer'):
        ENNOptions(ortho='retract', retract_interval=0)


# ------------------------------------------------------------- shared bases
def square_mlp():
    return nn.Sequential(nn.Linear(16, 16), nn.Tanh(), nn.Linear(16, 16), nn.Tanh(),
                         nn.Linear(16, 16), nn.Tanh(), nn.Linear(16, 4))


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


def test_penalty_weight_schedule():
    """One schedule for ENNModel and ENN-ℓ: n·γ on every n-th step, else 0."""
    opts = ENNOptions(ortho='penalty', gamma=1e-3, penalty_interval=4)
    assert [opts.penalty_weight(s) for s in range(9)] == \
        [4e-3, 0, 0, 0, 4e-3, 0, 0, 0, 4e-3]
    assert ENNOptions().penalty_weight(0) == 0.0  # retraction: no penalty
    assert ENNOptions(ortho='penalty').penalty_weight(3) == pytest.approx(1e-5)


# ------------------------------------------------------------- per-layer options
def test_per_layer_options_live_on_the_eigenbasis():
    from enn_mm.core.eigenbasis import eigenbasis
    fresh = eigenbasis(ENNLinear(4, 4))
    assert (fresh.compute, fresh.share, fresh.retract_interval) == ('auto', None, 0)
    with pytest.raises(TypeError, match='not an ENN layer'):
        eigenbasis(nn.Linear(4, 4))
    torch.manual_seed(0)
    model = square_mlp()
    ENNOptions(share=[dict(name='mlp', include=['0', '2'], share='P')], compute='factored',
               retract_interval=1).apply(model)
    layers = [model[i] for i in (0, 2, 4, 6)]
    assert [eigenbasis(m).share for m in layers] == [('mlp', 'P'), ('mlp', 'P'), None, None]
    assert all(eigenbasis(m).compute == 'factored' for m in layers)
    assert all(eigenbasis(m).retract_interval == 1 for m in layers)
    enn_mm.set_compute(model, 'materialize')
    assert all(eigenbasis(m).compute == 'materialize' for m in layers)
    # nothing of ENN's is left on the layers or their Parameters (but the load hook's handle)
    assert not [k for m in model.modules() for k in vars(m)
                if k.startswith('_enn_') and k != '_enn_load_hook']
    assert not [k for p in model.parameters() for k in vars(p) if k.startswith('_enn_')]
    for src in pathlib.Path(enn_mm.__file__).parent.rglob('*.py'):
        text = src.read_text()
        assert not any(old in text for old in ('_enn_compute', '_enn_share',
                                               '_enn_retract_every')), src

    def step(m):
        m(torch.randn(8, 16)).square().mean().backward()
        opt = torch.optim.SGD(m.parameters(), lr=0.5)
        opt.step()
        return {i: max(basis_error(B) for B in factors(m[i])[::2]) for i in (0, 2, 4, 6)}

    # the retraction hook reads the interval from the Eigenbasis: 0 turns one layer off
    eigenbasis(model[6]).retract_interval = 0
    twin = copy.deepcopy(model)
    errors = step(model)
    assert max(errors[i] for i in (0, 2, 4)) < 1e-5 and errors[6] > 1e-3
    # a deep copy keeps compute and share; it does not retract until armed itself
    assert [eigenbasis(twin[i]).share for i in (0, 2)] == [('mlp', 'P')] * 2
    assert eigenbasis(twin[0]).compute == 'materialize'
    assert all(eigenbasis(twin[i]).retract_interval == 0 for i in (0, 2, 4, 6))
    assert min(step(twin).values()) > 1e-3
    enn_mm.enable_retraction(twin, 1)
    assert max(step(twin).values()) < 1e-5


def test_constructor_rules_reach_exactly_the_factors():
    from enn_mm.engine.optimizers import ENNOptimWrapperConstructor
    from enn_mm.core.eigenbasis import factor_names
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(16, 16), nn.BatchNorm1d(16), nn.Linear(16, 16),
                          nn.Linear(16, 4))
    ENNOptions(share=[dict(include=['0', '2'], share='P')], exclude=['3']).apply(model)
    Q0, lam0, P0 = factors(model[0])
    Q2, lam2, P2 = factors(model[2])
    assert P0 is P2
    basis, spectrum = {id(Q0), id(Q2), id(P0)}, {id(lam0), id(lam2)}
    # the factors' names, found by identity: the shared P under both layers
    assert factor_names(model) == dict(
        basis={f'{i}.parametrizations.weight.original{j}' for i in (0, 2) for j in (0, 2)},
        spectrum={f'{i}.parametrizations.weight.original1' for i in (0, 2)})
    assert factor_names(model, suffix=True) == dict(
        basis={'.weight.original0', '.weight.original2'}, spectrum={'.weight.original1'})
    # a user key longer than the factor keys wins on its parameter, a shorter one does not
    user = {'2.parametrizations.weight.original1': dict(lr_mult=3.0),
            'weight.original1': dict(lr_mult=7.0)}
    ctor = ENNOptimWrapperConstructor(
        dict(optimizer=dict(type='SGD', lr=0.1, weight_decay=0.05)),
        dict(basis_lr_mult=0.5, custom_keys=user))
    for _ in range(2):  # the constructor serves a second model alike
        groups = ctor(model).optimizer.param_groups
        seen = [id(p) for g in groups for p in g['params']]
        assert sorted(seen) == sorted({id(p) for p in model.parameters()})  # each once
        rule = {id(p): (g.get('lr_mult'), g['lr'], g['weight_decay'])
                for g in groups for p in g['params']}
        assert {i for i, r in rule.items() if r[0] == 0.5} == basis
        assert all(rule[i] == (0.5, 0.05, 0.0) for i in basis)
        assert rule[id(lam0)] == (1.0, 0.1, 0.05)
        assert rule[id(lam2)] == (3.0, pytest.approx(0.3), 0.05)
        assert all(r[0] is None for i, r in rule.items() if i not in basis | spectrum)
        assert ctor.paramwise_cfg['custom_keys'] == user
