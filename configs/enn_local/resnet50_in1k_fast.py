# The fast ENN-ℓ recipe of configs/enn_local/resnet18w16_fmnist_fast.py on
# MMPretrain's ImageNet ResNet-50 (resnet/resnet50_8xb32_in1k.py): the same
# optimizer (AdamW, lr 2e-3, weight decay 0.05, none on norms and biases), the
# same ortho mode (QR retraction after every 10th step), two blocks (cut at the
# middle of the network: after layer3.0, 8 of its 16 bottlenecks on each
# side) and the same head (fresh full-width copies of two of the network's
# later blocks, the stride-2 one first: layer4.0 and layer4.2; pooling,
# linear).
# The speed benchmark (tools/benchmarks/pipeline_speedup.py --config ...
# --size 112) trains this model.
_base_ = ['mmpretrain::resnet/resnet50_8xb32_in1k.py']

custom_imports = dict(imports=['enn_mm', 'enn_mm.local'], allow_failed_imports=False)

model = dict(
    _delete_=True,
    type='ENNLocalClassifier',
    model=dict(type='ENNModel', model={{_base_.model}},
               enn=dict(ortho='retract', retract_interval=10)),
    cuts=['backbone.layer3.0'],
    input_shape=(3, 224, 224),
    # the two layer4 copies hold 12.6M weights, over the default budget of 2**23
    max_head_params=2**24,
    local_head=dict(type='ENNDownstreamLocalHead', depth=2))

optim_wrapper = dict(
    _delete_=True,
    constructor='ENNLocalOptimWrapperConstructor',
    block_constructor='ENNOptimWrapperConstructor',
    optimizer=dict(type='AdamW', lr=2e-3, weight_decay=0.05),
    paramwise_cfg=dict(norm_decay_mult=0.0, bias_decay_mult=0.0))
