# Dense CLIP-style baseline on COCO (Karpathy splits): the twin of
# eclip_vit-b16-clip-text_coco_karpathy.py without the ENN lines.
_base_ = ['./_base_/dual_encoder_vit-b16_clip-text.py', './_base_/coco_karpathy.py']

model = dict(data_preprocessor={{_base_.data_preprocessor}})
