# Image<->text retrieval on Flickr30k (Karpathy 1k test split: 1,000 images,
# 5,000 captions) with MMPretrain's BLIP retriever ranked by its ITC
# embeddings, exact faiss search. Keys as in blip-base_coco_faiss.py.
#
# Data: data/flickr30k/images and annotations/dataset_flickr30k.json (the
# Karpathy split file), as in mmpretrain's flickr30k_retrieval dataset config.
_base_ = ['mmpretrain::blip/blip-base_8xb32_retrieval_flickr30k.py']

custom_imports = dict(
    imports=['enn_mm', 'enn_mm.evaluation'], allow_failed_imports=False)

model = dict(fast_match=True)

val_dataloader = dict(
    sampler=dict(_delete_=True, type='DefaultSampler', shuffle=False))
test_dataloader = dict(
    sampler=dict(_delete_=True, type='DefaultSampler', shuffle=False))

image_text_metric = dict(
    type='FaissImageTextRetrievalMetric', topk=(1, 5, 10), index='Flat')
val_evaluator = image_text_metric
test_evaluator = image_text_metric
val_cfg = dict(type='FaissRetrievalValLoop')
test_cfg = dict(type='FaissRetrievalTestLoop')
