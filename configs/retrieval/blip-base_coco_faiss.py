# Image<->text retrieval on COCO (Karpathy 5k test split: 5,000 images,
# 25,010 captions) with MMPretrain's BLIP retriever, ranked by its ITC
# embeddings with an exact faiss search (BLIP's `fast_match`, no ITM
# re-ranking). Keys: retrieval/i2t/Recall@{1,5,10}, retrieval/t2i/Recall@{1,5,10}.
#
# Data: data/coco/{train2014,val2014} and the Karpathy annotations linked in
# mmpretrain's configs/_base_/datasets/coco_retrieval.py.
_base_ = ['mmpretrain::blip/blip-base_8xb32_retrieval.py']

custom_imports = dict(
    imports=['enn_mm', 'enn_mm.evaluation'], allow_failed_imports=False)

model = dict(fast_match=True)  # the loop needs image_feat / text_feat only

test_dataloader = dict(
    batch_size=64,
    num_workers=4,
    dataset=dict(
        type='COCORetrieval',
        data_root='data/coco',
        ann_file='annotations/caption_karpathy_test2014.json',
        pipeline={{_base_.test_pipeline}},
        test_mode=True),  # one sample per image with all its captions
    # split over ranks; the metric drops the padding repeats
    sampler=dict(_delete_=True, type='DefaultSampler', shuffle=False),
    persistent_workers=True)
val_dataloader = dict(
    sampler=dict(_delete_=True, type='DefaultSampler', shuffle=False))

image_text_metric = dict(
    type='FaissImageTextRetrievalMetric', topk=(1, 5, 10), index='Flat')
val_evaluator = image_text_metric
test_evaluator = image_text_metric
val_cfg = dict(type='FaissRetrievalValLoop')
test_cfg = dict(type='FaissRetrievalTestLoop')
