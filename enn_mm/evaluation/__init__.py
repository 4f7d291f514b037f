"""Retrieval evaluation with faiss (exact by default, DDP-correct).

``functional`` and ``search`` need only numpy/torch/faiss; the other modules
register the mmengine/MMPretrain pieces: the metrics ``FaissRetrievalMetric``
and ``FaissImageTextRetrievalMetric``, the loops ``FaissRetrievalValLoop`` /
``FaissRetrievalTestLoop`` and the dataset wrapper ``ENNClassSubset``.
"""
import importlib.util

try:
    import faiss  # noqa: F401
except ImportError as err:
    raise ImportError("enn_mm.evaluation needs faiss: pip install -e '.[cpu]' "
                      "(faiss-cpu) or -e '.[gpu]' (faiss-gpu)") from err

from .functional import image_text_retrieval_metrics, retrieval_metrics  # noqa: E402
from .search import FaissSearcher  # noqa: E402

__all__ = ['retrieval_metrics', 'image_text_retrieval_metrics', 'FaissSearcher']

if importlib.util.find_spec('mmpretrain') is not None:
    # the numerical part above works without MMPretrain; this fills its registries
    from .class_subset import ENNClassSubset
    from .evaluate import evaluate_checkpoint, retrieval_metric_cfg
    from .image_text_metric import FaissImageTextRetrievalMetric
    from .retrieval_loop import FaissRetrievalTestLoop, FaissRetrievalValLoop, embed_batch
    from .retrieval_metric import FaissRetrievalMetric
    __all__ += [
        'FaissRetrievalMetric', 'FaissImageTextRetrievalMetric',
        'FaissRetrievalValLoop', 'FaissRetrievalTestLoop', 'ENNClassSubset',
        'embed_batch', 'evaluate_checkpoint', 'retrieval_metric_cfg'
    ]
