# Dense CLIP-style baseline on Flickr30k (Karpathy splits): the twin of
# eclip_vit-b16-clip-text_flickr30k_karpathy.py without the ENN lines.
_base_ = ['./_base_/dual_encoder_vit-b16_clip-text.py', './_base_/flickr30k_karpathy.py']

model = dict(data_preprocessor={{_base_.data_preprocessor}})
