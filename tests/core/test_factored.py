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


def test_transposed_basis_copy_is_the_strided_view_bit_for_bit():
    """The factored conv takes Pᵀ by a 2-D transpose copy (faster on a CPU
    than the strided copy of a transposed view): the same output and the same
    gradients of x, Q, λ, P, bit for bit, as the view; and with shared bases
    the layers still compute their dense twins."""
    from enn_mm.core.factored import _factored
    torch.manual_seed(0)
    conv = enn_mm.convert_to_enn(nn.Sequential(nn.Conv2d(8, 16, 3, padding=1)))[0]
    p = conv.parametrizations.weight
    x = torch.randn(2, 8, 7, 7)

    def run(view):
        xi = x.clone().requires_grad_()
        if view:  # the former kernel: a reshaped transposed view of P
            g, d_out, r = p.original0.shape
            k1 = p.original2.transpose(1, 2).reshape(g * r, 8, 3, 3)
            y = nn.functional.conv2d(xi, k1, None, 1, 1)
            k2 = (p.original0 * p.original1.unsqueeze(1)).reshape(d_out, r, 1, 1)
            out = nn.functional.conv2d(y, k2, conv.bias)
        else:
            out = _factored(conv, xi, p.original0, p.original1, p.original2)
        out.square().sum().backward()
        grads = [xi.grad] + [t.grad.clone() for t in conv.parameters()]
        conv.zero_grad()
        return out.detach(), grads

    (a, ga), (b, gb) = run(False), run(True)
    assert torch.equal(a, b)
    for u, v in zip(ga, gb):
        assert torch.equal(u, v)
    # shared P over two equal convs: each still computes its dense twin, factored
    dense = nn.Sequential(nn.Conv2d(8, 8, 3, padding=1), nn.Conv2d(8, 8, 3, padding=1))
    model = enn_mm.convert_to_enn(copy.deepcopy(dense))
    enn_mm.core.share_bases(model, [dict(name='s', include=['0', '1'], share='P')])
    enn_mm.set_compute(model, 'factored')
    twin = enn_mm.export_dense(copy.deepcopy(model))
    assert rel_diff(model(x), twin(x)) < 1e-5
