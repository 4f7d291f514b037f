"""enn_mm.core.eigenbasis: conversion keeps a model's outputs, grouped convs
factor per group, ENN layers keep the dense interface, deep copies and state
dicts round-trip, per-layer options live on the Eigenbasis."""
import copy

import pytest
import torch
import torchvision
from torch import nn

import enn_mm
from enn_mm.core import ENNConv2d, ENNLinear, ENNOptions, basis_error, factors

from helpers import mlp, rel_diff, square_mlp


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


def test_deepcopy_and_state_dict_round_trip():
    model = enn_mm.convert_to_enn(mlp())
    twin = copy.deepcopy(model)
    assert twin[0].forward.__self__ is twin[0]  # the ENN forward follows the copy
    twin.load_state_dict(model.state_dict())
    x = torch.randn(2, 20)
    assert torch.equal(twin(x), model(x))


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

    def step(m):
        m(torch.randn(8, 16)).square().mean().backward()
        opt = torch.optim.SGD(m.parameters(), lr=0.5)
        enn_mm.Retraction(opt, m)  # retracts after opt's steps, by each layer's interval
        opt.step()
        return {i: max(basis_error(B) for B in factors(m[i])[::2]) for i in (0, 2, 4, 6)}

    # the retraction reads the interval from the Eigenbasis: 0 turns one layer off
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
