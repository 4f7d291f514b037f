# clip_resnet18w16-minilm_union.py with the pretrained text tower fine-tuned
# (dense, at 1/100 of the rate; dropout on in training).
_base_ = ['./clip_resnet18w16-minilm_union.py']

model = dict(text_encoder=dict(frozen=False))
