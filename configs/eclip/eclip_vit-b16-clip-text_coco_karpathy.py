# ECLIP on COCO (Karpathy splits): the image tower and both projection
# heads are ENN (W = Q·diag(λ)·Pᵀ, kept orthonormal by the project's default,
# QR retraction every 10th step, as in configs/eclip/*_union.py; the paper's
# penalty: enn=dict(ortho='penalty', gamma=1e-5)); the pretrained text tower
# keeps its dense weights (configs/eclip/*-ennft_union.py converts it too).
# Test: i2t and t2i Recall@1/5/10 (retrieval/i2t/Recall@K, retrieval/t2i/Recall@K).
_base_ = ['./clip_vit-b16-clip-text_coco_karpathy.py']

model = dict(
    _delete_=True,
    type='ENNModel',
    model={{_base_.model}},
    enn=dict(include=['image_encoder.*', 'image_proj', 'text_proj']))

# Same optimizer; the ENN constructor retracts and keeps weight decay off Q and P.
optim_wrapper = dict(constructor='ENNOptimWrapperConstructor')
