# Offline image<->text data: real Fashion-MNIST images with class-description
# captions (ENNFashionMNISTCaptions). CLASS-LEVEL cross-modal retrieval: a
# caption ("a photo of a sneaker.") is relevant to every image of its class;
# this is not caption grounding. Training captions use 6 templates, the test
# split 3 held-out templates (30 captions for the 10,000 test images).
dataset_type = 'ENNFashionMNISTCaptions'
data_root = 'data/fashion_mnist'
data_preprocessor = dict(
    type='MultiModalDataPreprocessor', mean=[72.94], std=[90.02])

train_pipeline = [
    dict(type='RandomCrop', crop_size=28, padding=2),
    dict(type='RandomFlip', prob=0.5, direction='horizontal'),
    dict(type='PackInputs', algorithm_keys=['text'], meta_keys=['image_id']),
]
test_pipeline = [
    dict(type='PackInputs', algorithm_keys=['text', 'gt_text_id', 'gt_image_id'],
         meta_keys=['image_id']),
]

train_dataloader = dict(
    batch_size=128,
    num_workers=1,
    persistent_workers=True,
    drop_last=True,
    collate_fn=dict(type='default_collate'),
    dataset=dict(type=dataset_type, data_root=data_root, split='train',
                 pipeline=train_pipeline),
    sampler=dict(type='DefaultSampler', shuffle=True))
val_dataloader = dict(
    batch_size=500,
    num_workers=1,
    persistent_workers=True,
    collate_fn=dict(type='default_collate'),
    dataset=dict(type=dataset_type, data_root=data_root, split='test',
                 test_mode=True, pipeline=test_pipeline),
    sampler=dict(type='DefaultSampler', shuffle=False))
test_dataloader = val_dataloader

# relevance by class; exact faiss search
val_evaluator = dict(type='ENNClassImageTextRetrievalMetric', topk=(1, 5, 10))
test_evaluator = val_evaluator
val_cfg = dict(type='FaissRetrievalValLoop')
test_cfg = dict(type='FaissRetrievalTestLoop')
