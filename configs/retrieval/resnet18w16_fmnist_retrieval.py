# Image retrieval on Fashion-MNIST, dense model.
#
# Train the shared classification recipe on all 10 classes, then evaluate by
# retrieval: every one of the 10k test images queries the other 9,999 (its
# own item excluded); relevant = same class. Embeddings are the model's
# `extract_feat` output (the 64-d global-average-pooled neck); search is an
# exact faiss inner product on L2-normalized embeddings (cosine).
#
#   python tools/train.py configs/retrieval/resnet18w16_fmnist_retrieval.py
#   python tools/retrieval_eval.py configs/retrieval/resnet18w16_fmnist_retrieval.py CKPT
_base_ = ['../baseline/resnet18w16_fmnist.py']

custom_imports = dict(
    imports=['enn_mm', 'enn_mm.evaluation'], allow_failed_imports=False)

retrieval_metric = dict(
    type='FaissRetrievalMetric',
    gallery=None,  # the queries are the gallery, self-matches excluded
    topk=(1, 5, 10, 100),
    metric_names=('Recall', 'Precision', 'mAP', 'AP', 'mAP@R'),
    similarity='cosine',
    index='Flat')  # exact; any faiss index-factory string is approximate
val_evaluator = retrieval_metric
test_evaluator = retrieval_metric
val_cfg = dict(type='FaissRetrievalValLoop')
test_cfg = dict(type='FaissRetrievalTestLoop')

# keep the checkpoint that retrieves best
default_hooks = dict(
    checkpoint=dict(save_best='retrieval/mAP@R', rule='greater'))
