# eclip_resnet18w16-minilm_union.py with the pretrained text tower converted
# to ENN too (every Linear of all-MiniLM-L6-v2 factored by SVD, so it embeds
# exactly as before at step 0) and fine-tuned, its Q, λ and P at 1/100 of the
# rate like a dense fine-tuned tower's weights.
_base_ = ['./eclip_resnet18w16-minilm_union.py']

model = dict(
    model=dict(text_encoder=dict(frozen=False)),
    enn=dict(include=['image_encoder.*', 'image_proj', 'text_proj', 'text_encoder.*']))
