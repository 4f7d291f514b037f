# The ENN twin of clip_resnet18w16-minilm_fmnist.py: image tower and both
# projections as W = Q·diag(λ)·Pᵀ with the orthogonality penalty; the frozen
# MiniLM text tower stays dense.
_base_ = ['./clip_resnet18w16-minilm_fmnist.py']

model = dict(
    _delete_=True,
    type='ENNModel',
    model={{_base_.model}},
    enn=dict(ortho='penalty', gamma=1e-5,
             include=['image_encoder.*', 'image_proj', 'text_proj']))

optim_wrapper = dict(constructor='ENNOptimWrapperConstructor')
