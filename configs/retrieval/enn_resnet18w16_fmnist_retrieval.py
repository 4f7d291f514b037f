# Image retrieval on Fashion-MNIST, ENN model: the dense retrieval config
# with every Conv2d/Linear as W = Q·diag(λ)·Pᵀ (same lines as configs/enn).
_base_ = ['./resnet18w16_fmnist_retrieval.py']

model = dict(
    _delete_=True,
    type='ENNModel',
    model={{_base_.model}},
    enn=dict(ortho='penalty', gamma=1e-5))

optim_wrapper = dict(constructor='ENNOptimWrapperConstructor')
