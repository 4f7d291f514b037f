# ENN with BP, ImageNet ResNet-101.
# Reproduces: the ENN counterpart of ./resnet101_dense.py (the authors' scripts, ENN-with-BP table,
# row "ImageNet ResNet-101 / 152"; Table 4 has no ENN-with-BP row): its recipe (batch
# 300, AdamW lr 1e-3 wd 0.01, cosine T_max 500 per iteration, 1000 epochs nominal, the
# authors' Resize/CenterCrop/flip augmentation) with every Conv2d/Linear as
# W = Q·diag(λ)·Pᵀ and the orthogonality penalty γ = 5e-5.
# Deviations: MMPretrain's ImageNet stem (see ./resnet101_dense.py); no weight decay on
# Q and P (the authors' AdamW decayed them too; λ, norms and biases keep 0.01);
# final-epoch val accuracy reported (best epoch kept beside it).
_base_ = ['./resnet101_dense.py']

custom_imports = dict(imports=['enn_mm'], allow_failed_imports=False)

model = dict(
    _delete_=True,
    type='ENNModel',
    model={{_base_.model}},
    enn=dict(ortho='penalty', gamma=5e-5))
optim_wrapper = dict(constructor='ENNOptimWrapperConstructor')

custom_hooks = [dict(type='ENNDiagnosticsHook', interval=500)]
