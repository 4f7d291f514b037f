# Offline image<->text data with statistical power: Fashion-MNIST and the
# MNIST digits as one 20-class set (ENNUnionCaptions), captions that describe
# classes ("a scan of a sneaker.", "this is a handwritten seven."). Training
# sees 16 caption templates (4 phrasings of each class) and 16 classes; the
# test split uses 20 other templates for all 20 classes: 1,600 held-out
# captions (t2i queries) and 4,000 images (200 per class, both sources
# balanced). The 4 unseen classes
# (two per domain) never appear in training: the metric reports them apart.
# CLASS-LEVEL retrieval: a caption is relevant to every image of its class.
dataset_type = 'ENNUnionCaptions'
data_roots = dict(fashion_mnist='data/fashion_mnist', mnist='data/mnist')
unseen_classes = ['Sandal', 'Shirt', '3 - three', '8 - eight']
# pixel mean / std of the balanced training set (600 images per seen class)
data_preprocessor = dict(type='MultiModalDataPreprocessor', mean=[54.53], std=[87.99])

train_pipeline = [
    dict(type='RandomCrop', crop_size=28, padding=2),
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
    dataset=dict(type=dataset_type, data_roots=data_roots, split='train',
                 unseen_classes=unseen_classes, images_per_class=600,
                 pipeline=train_pipeline),
    sampler=dict(type='DefaultSampler', shuffle=True))
val_dataloader = dict(
    batch_size=500,
    num_workers=1,
    persistent_workers=True,
    collate_fn=dict(type='default_collate'),
    dataset=dict(type=dataset_type, data_roots=data_roots, split='test', test_mode=True,
                 unseen_classes=unseen_classes, images_per_class=200,
                 pipeline=test_pipeline),
    sampler=dict(type='DefaultSampler', shuffle=False))
test_dataloader = val_dataloader

# relevance by class, exact faiss search; every key also for the seen and the
# unseen classes apart (each split searched within its own classes)
val_evaluator = dict(type='ENNClassImageTextRetrievalMetric', topk=(1, 5, 10),
                     metric_names=('Recall', 'mAP@R'), unseen_classes=unseen_classes)
test_evaluator = val_evaluator
val_cfg = dict(type='FaissRetrievalValLoop')
test_cfg = dict(type='FaissRetrievalTestLoop')
