"""enn_mm.core.factored: the factored and materialized computations against
the dense layer, the 'auto' choice between them, bf16 autocast."""
import copy

import pytest
import torch
from torch import nn

import enn_mm
from enn_mm.core import ENNConv2d, ENNLinear, ENNOptions

from helpers import rel_diff


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
    # fewer output positions than outputs: λ scales the intermediate, not Q
    (lambda: nn.Conv2d(4, 32, 3, padding=1, groups=2), (1, 4, 2, 2)),
    (lambda: nn.Linear(6, 20), (3, 6)),
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


def test_p_is_stored_as_the_factored_kernel_and_keeps_that_layout():
    """P lives in the memory of Pᵀ, so the factored conv's kernel is a view
    of it (no copy); its gradient, optimizer state, retraction, copies,
    checkpoints and weight assignment keep that layout; a P of another
    layout (as a user might assign) computes the same values."""
    from enn_mm.core import factors
    torch.manual_seed(0)
    conv = enn_mm.convert_to_enn(nn.Sequential(nn.Conv2d(8, 16, 3, padding=1)))[0]
    enn_mm.set_compute(conv, 'factored')
    Q, lam, P = factors(conv)
    layout = P.stride()
    assert P.shape == (1, 72, 16) and layout == (72 * 16, 1, 72)
    kernel = P.transpose(1, 2).reshape(16, 8, 3, 3)
    assert kernel.data_ptr() == P.data_ptr() and kernel.is_contiguous()
    x = torch.randn(2, 8, 7, 7)
    ref = conv(x).detach()
    opt = torch.optim.AdamW(conv.parameters(), lr=1e-3)
    (conv(x).square().sum() + enn_mm.core.ortho.basis_penalty(P)).backward()
    assert P.grad.stride() == layout
    opt.step()
    assert P.stride() == layout and opt.state[P]['exp_avg'].stride() == layout
    enn_mm.core.ortho.retract_(P)
    assert P.stride() == layout
    assert enn_mm.core.ortho.basis_error(P) < 1e-5
    for other in (copy.deepcopy(conv), copy.deepcopy(conv).double()):
        assert factors(other)[2].stride() == layout
    fresh = enn_mm.convert_to_enn(nn.Sequential(nn.Conv2d(8, 16, 3, padding=1)))[0]
    fresh.load_state_dict(conv.state_dict())
    assert factors(fresh)[2].stride() == layout and torch.equal(factors(fresh)[2], P)
    with torch.no_grad():
        fresh.weight = torch.randn(16, 8, 3, 3)  # factored again (right_inverse)
    assert factors(fresh)[2].stride() == layout
    # a contiguous P: the same values, the same output
    y = conv(x)
    P.data = P.data.contiguous()
    assert P.is_contiguous() and torch.allclose(conv(x), y, atol=1e-6)
    assert not torch.equal(y, ref)  # (the step above changed the layer)
    x = torch.randn(2, 8, 7, 7)
    # shared P over two equal convs: each still computes its dense twin, factored
    dense = nn.Sequential(nn.Conv2d(8, 8, 3, padding=1), nn.Conv2d(8, 8, 3, padding=1))
    model = enn_mm.convert_to_enn(copy.deepcopy(dense))
    enn_mm.core.share_bases(model, [dict(name='s', include=['0', '1'], share='P')])
    enn_mm.set_compute(model, 'factored')
    twin = enn_mm.export_dense(copy.deepcopy(model))
    assert rel_diff(model(x), twin(x)) < 1e-5
