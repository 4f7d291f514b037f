# ENN with BP, ImageNet ViT-B/16.
# Reproduces: the ENN counterpart of ./vit-b16_dense.py (the authors' scripts, ENN-with-BP table, row
# "ImageNet ViT-B/16"): its recipe (batch 450, AdamW lr 1e-3 wd 0.01, cosine T_max 500
# per iteration, 1000 epochs nominal, dropout 0.1, the authors' augmentation) with every
# Conv2d/Linear (patch embedding, qkv, projections, MLPs, head) as W = Q·diag(λ)·Pᵀ and
# the orthogonality penalty γ = 5e-5; norms, cls token and position embeddings stay dense.
# Deviations: no weight decay on Q and P (the authors' AdamW decayed them too; λ and the
# other parameters keep 0.01); final-epoch val accuracy reported (best epoch kept beside
# it).
_base_ = ['./vit-b16_dense.py']

custom_imports = dict(imports=['enn_mm'], allow_failed_imports=False)

model = dict(
    _delete_=True,
    type='ENNModel',
    model={{_base_.model}},
    enn=dict(ortho='penalty', gamma=5e-5))
optim_wrapper = dict(constructor='ENNOptimWrapperConstructor')

custom_hooks = [dict(type='ENNDiagnosticsHook', interval=500)]
