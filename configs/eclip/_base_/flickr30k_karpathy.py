# Flickr30k image<->text retrieval, Karpathy splits: train 29k images
# (145k captions, one sample per caption), val and test 1,000 images each
# (5,000 captions, one sample per image with its 5 captions). Both
# directions, Recall@1/5/10, exact faiss search.
#
# Data (MMPretrain's layout): data/flickr30k/images/*.jpg and
# data/flickr30k/annotations/dataset_flickr30k.json (the Karpathy split file).
_base_ = ['./coco_karpathy.py']

dataset_type = 'Flickr30kRetrieval'
data_root = 'data/flickr30k'
flickr = dict(type=dataset_type, data_root=data_root, data_prefix='images',
              ann_file='annotations/dataset_flickr30k.json')

train_dataloader = dict(
    dataset=dict(_delete_=True, split='train',
                 pipeline={{_base_.train_pipeline}}, **flickr))
val_dataloader = dict(
    dataset=dict(_delete_=True, split='val', test_mode=True,
                 pipeline={{_base_.test_pipeline}}, **flickr))
test_dataloader = dict(
    dataset=dict(_delete_=True, split='test', test_mode=True,
                 pipeline={{_base_.test_pipeline}}, **flickr))
