# ENN twin of clip_resnet18w16-minilm_union.py: image tower and both
# projections as W = Q·diag(λ)·Pᵀ, kept orthonormal by the project's default
# (QR retraction every 10th step); the frozen text tower stays dense.
_base_ = ['./clip_resnet18w16-minilm_union.py']

model = dict(
    _delete_=True,
    type='ENNModel',
    model={{_base_.model}},
    enn=dict(include=['image_encoder.*', 'image_proj', 'text_proj']))

optim_wrapper = dict(constructor='ENNOptimWrapperConstructor')
