# ENN with BP, Tiny-ImageNet ResNet-50.
# Reproduces: the ENN counterpart of ./resnet50_dense.py (the authors' scripts, ENN-with-BP table,
# row "Tiny-ImageNet ResNet-50/101/152"; Table 4 has no ENN-with-BP row): its recipe
# (batch 64, AdamW lr 1e-3 wd 0.01, cosine T_max 200 per epoch, 1000 epochs) with every
# Conv2d/Linear as W = Q·diag(λ)·Pᵀ and the orthogonality penalty γ = 1e-5.
# Deviations: no weight decay on Q and P (the authors' AdamW decayed them too; λ, norms
# and biases keep 0.01); final-epoch accuracy on the val images reported (best epoch
# kept beside it).
_base_ = ['./resnet50_dense.py']

custom_imports = dict(imports=['enn_mm'], allow_failed_imports=False)

model = dict(
    _delete_=True,
    type='ENNModel',
    model={{_base_.model}},
    enn=dict(ortho='penalty', gamma=1e-5))
optim_wrapper = dict(constructor='ENNOptimWrapperConstructor')

custom_hooks = [dict(type='ENNDiagnosticsHook', interval=500)]
