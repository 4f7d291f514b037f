# In-shop Clothes Retrieval (DeepFashion) with MMPretrain's ArcFace ResNet-50
# recipe, evaluated with the exact faiss metric instead of
# ImageToImageRetriever's broadcast matching.
#
# Data (MMPretrain's InShop format, see mmpretrain/datasets/inshop.py):
#   data/inshop/Eval/list_eval_partition.txt and data/inshop/Img/img/...
# Queries: the 14,218 `query` images; gallery: the 12,612 `gallery` images,
# embedded by the loop with the same model. A query's gt_label lists the
# gallery indices of its item, so relevance is by those indices.
_base_ = ['mmpretrain::arcface/resnet50-arcface_8xb32_inshop.py']

custom_imports = dict(
    imports=['enn_mm', 'enn_mm.evaluation'], allow_failed_imports=False)

retrieval_metric = dict(
    _delete_=True,  # replaces the base's list of MMPretrain metrics
    type='FaissRetrievalMetric',
    gallery={{_base_.gallery_dataloader}},
    relevance='index',
    topk=(1, 5, 10, 20),
    metric_names=('Recall', 'Precision', 'mAP', 'AP', 'mAP@R'))
val_evaluator = retrieval_metric
test_evaluator = retrieval_metric
val_cfg = dict(type='FaissRetrievalValLoop')
test_cfg = dict(type='FaissRetrievalTestLoop')

# The loop embeds the gallery itself on every evaluation, so MMPretrain's
# prototype hook (which embeds it into the model) is not needed.
custom_hooks = [dict(type='SyncBuffersHook')]
default_hooks = dict(
    checkpoint=dict(save_best='retrieval/Recall@1', rule='greater'))
