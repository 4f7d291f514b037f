# Local learning on the dense network (ablation) on MNIST: the dense MNIST
# baseline with the lines of resnet18w16_fmnist_dense.py.
_base_ = ['../baseline/resnet18w16_mnist.py']

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
