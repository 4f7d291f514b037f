# clip_resnet18w16-minilm-ft_union.py (dense image tower, text tower
# fine-tuned) with the pretrained text tower converted to ENN: every Linear of
# all-MiniLM-L6-v2 factored by SVD (the same embeddings at step 0) and
# fine-tuned with its projection, its Q, λ and P at 1/100 of the rate; QR
# retraction every 10th step.
_base_ = ['./clip_resnet18w16-minilm-ft_union.py']

model = dict(
    _delete_=True,
    type='ENNModel',
    model={{_base_.model}},
    enn=dict(include=['text_encoder.*', 'text_proj']))

optim_wrapper = dict(constructor='ENNOptimWrapperConstructor')
