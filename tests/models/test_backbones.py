"""Every MMPretrain backbone family built from Conv2d/Linear converts, trains
and exports: each built from its packaged config at a small input size."""
import copy

import pytest
import torch
from mmengine.hub import get_config
from mmengine.registry import init_default_scope
from mmpretrain.registry import MODELS
from mmpretrain.structures import DataSample
from torch import nn

import enn_mm
from enn_mm.core import enn_modules, factors, is_enn

# (packaged config, overrides of model.backbone / model.head, input size).
# Overrides only shrink widths/depths/input so the suite stays fast on a CPU.
CASES = {
    'ResNet': ('resnet/resnet18_8xb32_in1k.py', dict(base_channels=16), 32),
    'ResNetV1c': ('resnet/resnetv1c50_8xb32_in1k.py', dict(depth=18, base_channels=16), 32),
    'ResNetV1d': ('resnet/resnetv1d50_8xb32_in1k.py', dict(depth=18, base_channels=16), 32),
    'ResNeXt': ('resnext/resnext50-32x4d_8xb32_in1k.py', dict(base_channels=16), 32),
    'SEResNet': ('seresnet/seresnet50_8xb32_in1k.py', dict(base_channels=16), 32),
    'RegNet': ('regnet/regnetx-400mf_8xb128_in1k.py', {}, 32),
    'MobileNetV2': ('mobilenet_v2/mobilenet-v2_8xb32_in1k.py', {}, 32),
    'MobileNetV3': ('mobilenet_v3/mobilenet-v3-small_8xb128_in1k.py', {}, 32),
    'EfficientNet': ('efficientnet/efficientnet-b0_8xb32_in1k.py', {}, 32),
    'ConvNeXt': ('convnext/convnext-tiny_32xb128_in1k.py', dict(arch='atto'), 32),
    'VisionTransformer': ('vision_transformer/vit-base-p16_64xb64_in1k.py',
                          dict(arch='deit-tiny', img_size=32, patch_size=8), 32),
    'DeiT': ('deit/deit-tiny_4xb256_in1k.py', dict(img_size=32, patch_size=8), 32),
    'SwinTransformer': ('swin_transformer/swin-tiny_16xb64_in1k.py',
                        dict(arch=dict(embed_dims=32, depths=[2, 2, 2, 2], num_heads=[1, 2, 2, 4]),
                             img_size=64, window_size=2), 64),
    'PoolFormer': ('poolformer/poolformer-s12_32xb128_in1k.py', {}, 32),
    'HRNet': ('hrnet/hrnet-w18_4xb32_in1k.py', {}, 32),
}
HEAD_CHANNELS = {
    'ResNet': 128, 'ResNetV1c': 128, 'ResNetV1d': 128, 'ResNeXt': 512, 'SEResNet': 512,
    'ConvNeXt': 320, 'VisionTransformer': 192, 'DeiT': 192, 'SwinTransformer': 256
}


def build(name):
    path, backbone, size = CASES[name]
    cfg = get_config('mmpretrain::' + path)
    cfg.model.backbone.update(backbone)
    cfg.model.pop('train_cfg', None)  # mixup/cutmix: not needed for one step
    if name in HEAD_CHANNELS:
        cfg.model.head.in_channels = HEAD_CHANNELS[name]
    cfg.model.head.num_classes = 10
    init_default_scope('mmpretrain')
    torch.manual_seed(0)
    return MODELS.build(cfg.model), size


def dense_types(model):
    return {type(m) for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))}


@pytest.mark.parametrize('name', list(CASES))
def test_backbone_converts_trains_and_exports(name):
    model, size = build(name)
    n_dense = sum(isinstance(m, (nn.Conv2d, nn.Linear)) for m in model.modules())
    types = dense_types(model)
    model.eval()
    x = torch.randn(2, 3, size, size)
    with torch.no_grad():
        ref = model(x, mode='tensor')
        enn_mm.convert_to_enn(model)
        out = model(x, mode='tensor')
    assert sum(1 for _ in enn_modules(model)) == n_dense
    assert ((out - ref).abs().max() / ref.abs().max()).item() <= 1e-5

    # norms, cls tokens, position embeddings stay dense parameters
    for pname, p in model.named_parameters():
        if 'parametrizations' not in pname:
            assert not pname.endswith('.weight') or not any(
                isinstance(m, (nn.Conv2d, nn.Linear)) and is_enn(m)
                for m in [model.get_submodule(pname.rsplit('.', 1)[0])])

    # one training step reaches every factor
    model.train()
    samples = [DataSample().set_gt_label(i) for i in range(2)]
    losses = model.loss(x, samples)
    loss = sum(v for k, v in losses.items() if 'loss' in k)
    loss = loss + 1e-5 * enn_mm.orthogonality_penalty(model)
    loss.backward()
    assert torch.isfinite(loss)
    for lname, m in enn_modules(model):  # frozen stages stay frozen, as factors
        assert all((t.grad is not None) == t.requires_grad for t in factors(m)), lname
    assert sum(t.grad is not None for _, m in enn_modules(model) for t in factors(m)) > 0
    # Adam: a bounded step (batch-2 BN gradients can be huge in plain SGD)
    torch.optim.Adam(model.parameters(), lr=1e-3).step()

    model.eval()
    with torch.no_grad():
        trained = model(x, mode='tensor')
        # building every W, as the export does: the same arithmetic
        materialized = enn_mm.set_compute(copy.deepcopy(model), 'materialize')(x, mode='tensor')
    assert torch.isfinite(trained).all()
    with torch.no_grad():
        dense = enn_mm.export_dense(copy.deepcopy(model))
        exported = dense(x, mode='tensor')
    assert torch.equal(exported, materialized)
    assert ((exported - trained).abs().max() / trained.abs().max()).item() <= 1e-5
    assert dense_types(dense) == types
    assert not any(True for _ in enn_modules(dense))
