# ENN-ℓ, Tiny-ImageNet ResNet-101.
# Reproduces: no paper number (the paper's Table 4 has no Tiny R101 column).
# Recipe: the authors' ENN-ℓ recipe (the authors' scripts, ENN-ℓ table, row "Tiny-ImageNet ResNet-50
# / 101 / 152", its ResNet-101 entries):
# - blocks: the stem, each of the 33 bottleneck blocks, the pooled FC (K = 35); no
#   gradient crosses a block boundary; one optimizer per block, plain SGD (the table
#   says "SGD"; torch's defaults, no momentum and no weight decay, are assumed);
# - local heads: a frozen random linear map of each block's flattened output (the
#   authors' heads): 2,386M fixed weights in all (8.9 GiB in fp32), the largest 209.7M;
#   local_head=dict(type='ENNPoolLinearLocalHead') is the light alternative (not the
#   authors' head);
# - loss per block: CE + γ·ortho of the block's ENN layers, γ = 5e-4;
# - lr 1e-4 for every block, cosine stepped per iteration with T_max 200 (past T_max it
#   follows the cosine back up, period 400 iterations), batch 64, 500 epochs.
# Deviations: final-epoch accuracy on the val images reported (best epoch kept beside
# it). ENN-ℓ trains in one process (no DDP).
_base_ = ['./resnet101_dense.py']

custom_imports = dict(imports=['enn_mm', 'enn_mm.local'], allow_failed_imports=False)

model = dict(
    _delete_=True,
    type='ENNLocalClassifier',
    model=dict(type='ENNModel', model={{_base_.model}},
               enn=dict(ortho='penalty', gamma=5e-4)),
    cuts='resnet_block',
    input_shape=(3, 64, 64),
    # the largest frozen head (209.7 M fixed weights) is over the default
    # budget of 2**23
    max_head_params=2**28,
    local_head=dict(type='ENNFrozenLinearLocalHead'))

train_dataloader = dict(batch_size=64)

optim_wrapper = dict(
    _delete_=True,
    constructor='ENNLocalOptimWrapperConstructor',
    block_constructor='ENNOptimWrapperConstructor',
    optimizer=dict(type='SGD', lr=1e-4, momentum=0.0, weight_decay=0.0))
# one copy of this schedule per block's optimizer
param_scheduler = [
    dict(type='CosineAnnealingLR', T_max=200, eta_min=0.0, by_epoch=False, begin=0),
]

train_cfg = dict(by_epoch=True, max_epochs=500, val_interval=1)
auto_scale_lr = dict(base_batch_size=64)
custom_hooks = [dict(type='ENNDiagnosticsHook', interval=500)]
