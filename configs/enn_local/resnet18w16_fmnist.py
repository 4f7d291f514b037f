# ENN-ℓ: the ENN recipe of configs/enn, trained block by block without BP
# across blocks. The paper's split (stem, each of the 6 residual blocks, the
# pooled FC: 8 blocks) with its heads: a frozen random linear map of each
# block's flattened output (16x28x28 at most: 125k fixed weights per head).
# Same data, epochs, optimizer, schedule and orthonormality mode (the paper's
# penalty) as configs/enn/resnet18w16_fmnist_penalty.py, now per block.
_base_ = ['../enn/resnet18w16_fmnist_penalty.py']

custom_imports = dict(imports=['enn_mm', 'enn_mm.local'], allow_failed_imports=False)

model = dict(
    _delete_=True,
    type='ENNLocalClassifier',
    model={{_base_.model}},
    cuts='resnet_block',
    input_shape=(1, 28, 28),
    local_head=dict(type='ENNFrozenLinearLocalHead'))

# One AdamW + one warm-up/cosine schedule per block, from the same config.
optim_wrapper = dict(constructor='ENNLocalOptimWrapperConstructor',
                     block_constructor='ENNOptimWrapperConstructor')
