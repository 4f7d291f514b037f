# ENN-ℓ, CIFAR-100 ResNet-50.
# Reproduces: the paper's Table 4, "ENN-ℓ" row, C100 R50 (paper: 27.58 % test error).
# Recipe: the authors' ENN-ℓ recipe (the authors' scripts, ENN-ℓ table, row "CIFAR-100
# ResNet-50/152").
# - blocks: the stem, each of the 16 bottleneck blocks, the pooled FC (K = 18); no
#   gradient crosses a block boundary; one AdamW per block;
# - local heads: a frozen random linear map of each block's flattened output (the
#   authors' heads): 187M fixed weights in all (0.7 GiB in fp32), the largest 26.2M;
# - loss per block: CE + γ·ortho of the block's ENN layers, γ = 1e-6;
# - lr: stem 1e-4, residual blocks 1e-4 (constant), FC 1e-3; the stem and the FC follow
#   a one-cycle schedule peaking at 5x their base lr (5e-4, 5e-3) with pct_start 0.35
#   over the 500 epochs, torch's other one-cycle defaults (start at peak / 25, cosine
#   annealing to start / 1e4);
# - AdamW weight decay 0.01 (torch's default; the table gives none), batch 512, 500
#   epochs.
# Deviations: no weight decay on Q and P; final-epoch test accuracy reported (best epoch
# kept beside it). ENN-ℓ trains in one process (no DDP).
_base_ = ['./resnet50_dense.py']

custom_imports = dict(imports=['enn_mm', 'enn_mm.local'], allow_failed_imports=False)

model = dict(
    _delete_=True,
    type='ENNLocalClassifier',
    model=dict(type='ENNModel', model={{_base_.model}},
               enn=dict(ortho='penalty', gamma=1e-6)),
    cuts='resnet_block',
    input_shape=(3, 32, 32),
    # the largest frozen head (26.2 M fixed weights) is over the default
    # budget of 2**23
    max_head_params=2**25,
    local_head=dict(type='ENNFrozenLinearLocalHead'))

train_dataloader = dict(batch_size=512)

# One AdamW per block. The base lr is the residual blocks'; the stem's and the
# FC's lr is set entirely by their one-cycle schedules below.
optim_wrapper = dict(
    _delete_=True,
    constructor='ENNLocalOptimWrapperConstructor',
    block_constructor='ENNOptimWrapperConstructor',
    optimizer=dict(type='AdamW', lr=1e-4, weight_decay=0.01))

max_epochs = 500
num_blocks = 18  # stem + 16 bottleneck blocks + pooled FC
one_cycle = dict(type='OneCycleLR', pct_start=0.35, by_epoch=True, begin=0,
                 end=max_epochs, convert_to_iter_based=True)
param_scheduler = {f'block{k}': [] for k in range(num_blocks)}  # constant lr
param_scheduler.update({
    '_delete_': True,
    'block0': [dict(one_cycle, eta_max=5 * 1e-4)],  # stem
    f'block{num_blocks - 1}': [dict(one_cycle, eta_max=5 * 1e-3)],  # FC
})

train_cfg = dict(by_epoch=True, max_epochs=max_epochs, val_interval=1)
auto_scale_lr = dict(base_batch_size=512)
custom_hooks = [dict(type='ENNDiagnosticsHook', interval=500)]
