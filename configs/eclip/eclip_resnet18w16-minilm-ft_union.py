# eclip_resnet18w16-minilm_union.py (ENN image tower) with the pretrained
# text tower fine-tuned dense, at 1/100 of the rate.
_base_ = ['./eclip_resnet18w16-minilm_union.py']

model = dict(model=dict(text_encoder=dict(frozen=False)))
