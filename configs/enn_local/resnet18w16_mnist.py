# ENN-ℓ on MNIST: the ENN MNIST config (paper's penalty) with the ENN-ℓ lines
# of resnet18w16_fmnist.py.
_base_ = ['../enn/resnet18w16_mnist_penalty.py']

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
