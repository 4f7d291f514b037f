"""enn_mm.core.convert: dense export, dense checkpoints loaded by SVD,
dense_view, copies left intact, and the errors of convert_to_enn."""
import copy

import pytest
import torch
import torchvision
from torch import nn

import enn_mm
from enn_mm.core import dense_view, factors, is_enn

from helpers import mlp, rel_diff


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
