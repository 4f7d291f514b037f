# Ablation: the same block-wise local learning on the dense network (no ENN
# reparameterization, no orthogonality penalty).
_base_ = ['../baseline/resnet18w16_fmnist.py']

custom_imports = dict(imports=['enn_mm', 'enn_mm.local'], allow_failed_imports=False)

model = dict(
    _delete_=True,
    type='ENNLocalClassifier',
    model={{_base_.model}},
    cuts='resnet_block',
    input_shape=(1, 28, 28),
    local_head=dict(type='ENNFrozenLinearLocalHead'))

optim_wrapper = dict(constructor='ENNLocalOptimWrapperConstructor',
                     block_constructor='DefaultOptimWrapperConstructor')
