# ENN-ℓ, Tiny-ImageNet ResNet-152.
# Reproduces: no paper number (the paper's Table 4 has no Tiny R152 column).
# Recipe: the authors' ENN-ℓ recipe (the authors' scripts, ENN-ℓ table, row "Tiny-ImageNet ResNet-50
# / 101 / 152", its ResNet-152 entries):
# - blocks: the stem, each of the 50 bottleneck blocks, the pooled FC (K = 52); no
#   gradient crosses a block boundary; one optimizer per block, AdamW with weight decay
#   0.01 (torch's default);
# - local heads: a frozen random linear map of each block's flattened output (the
#   authors' heads): 3,487M fixed weights in all (13.0 GiB in fp32), the largest 209.7M;
#   local_head=dict(type='ENNPoolLinearLocalHead') is the light alternative (not the
#   authors' head);
# - loss per block: CE + γ·ortho of the block's ENN layers, γ = 1e-4;
# - lr 1e-4 for every block, cosine stepped per iteration with T_max 200 (past T_max it
#   follows the cosine back up, period 400 iterations), batch 64, 500 epochs.
# Deviations: no weight decay on Q and P; final-epoch accuracy on the val images
# reported (best epoch kept beside it). ENN-ℓ trains in one process (no DDP).
_base_ = ['./resnet152_dense.py']

custom_imports = dict(imports=['enn_mm', 'enn_mm.local'], allow_failed_imports=False)

model = dict(
    _delete_=True,
    type='ENNLocalClassifier',
    model=dict(type='ENNModel', model={{_base_.model}},
               enn=dict(ortho='penalty', gamma=1e-4)),
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
    optimizer=dict(type='AdamW', lr=1e-4, weight_decay=0.01))
# one copy of this schedule per block's optimizer
param_scheduler = [
    dict(type='CosineAnnealingLR', T_max=200, eta_min=0.0, by_epoch=False, begin=0),
]

train_cfg = dict(by_epoch=True, max_epochs=500, val_interval=1)
auto_scale_lr = dict(base_batch_size=64)
custom_hooks = [dict(type='ENNDiagnosticsHook', interval=500)]
