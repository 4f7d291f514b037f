"""Retrieval evaluation with faiss (exact by default, DDP-correct).

``functional`` and ``search`` need only numpy/torch/faiss; the other modules
register the mmengine/MMPretrain pieces: the metrics ``FaissRetrievalMetric``
and ``FaissImageTextRetrievalMetric``, the loops ``FaissRetrievalValLoop`` /
``FaissRetrievalTestLoop`` and the dataset wrapper ``ENNClassSubset``.
"""
from .functional import image_text_retrieval_metrics, retrieval_metrics
from .search import FaissSearcher

__all__ = ['retrieval_metrics', 'image_text_retrieval_metrics', 'FaissSearcher']

try:
    import mmpretrain  # noqa: F401
except ImportError:  # the numerical part works without MMPretrain
    pass
else:
    from .class_subset import ENNClassSubset
    from .image_text_metric import FaissImageTextRetrievalMetric
    from .retrieval_loop import (FaissRetrievalTestLoop, FaissRetrievalValLoop,
                                 embed_batch)
    from .retrieval_metric import FaissRetrievalMetric
    __all__ += [
        'FaissRetrievalMetric', 'FaissImageTextRetrievalMetric',
        'FaissRetrievalValLoop', 'FaissRetrievalTestLoop', 'ENNClassSubset',
        'embed_batch'
    ]
