"""Cross-modal image-text retrieval with ENN encoders ("ECLIP").

Registers in MMPretrain's registries:

- ``ENNContrastiveRetriever`` (MODELS): image tower + text tower + linear
  projections + learnable temperature, symmetric InfoNCE; wrap it in
  ``ENNModel`` to make the image tower and projections ENN.
- ``ENNSentenceTextEncoder``, ``ENNCLIPTextEncoder`` (MODELS): text towers
  loaded only from local HuggingFace folders (``transformers`` is imported
  when one is built).
- ``ENNFashionMNISTCaptions`` (DATASETS): Fashion-MNIST with class-description
  captions (class-level retrieval, offline).
- ``ENNUnionCaptions`` (DATASETS): Fashion-MNIST and MNIST digits as one
  20-class set, held-out caption templates and unseen classes.
- ``ENNClassImageTextRetrievalMetric`` (METRICS, with faiss): image<->text
  recall with relevance by class.

COCO / Flickr30k use MMPretrain's ``COCORetrieval`` / ``Flickr30kRetrieval``
with ``FaissImageTextRetrievalMetric`` (``enn_mm.evaluation``).
"""
import importlib.util

from .contrastive_loss import gather_batch, symmetric_info_nce
from .fmnist_captions import ENNFashionMNISTCaptions
from .retriever import ENNContrastiveRetriever
from .text_encoders import ENNCLIPTextEncoder, ENNSentenceTextEncoder, resolve_model_path
from .union_captions import ENNUnionCaptions

__all__ = [
    'ENNContrastiveRetriever', 'ENNSentenceTextEncoder', 'ENNCLIPTextEncoder',
    'ENNFashionMNISTCaptions', 'ENNUnionCaptions', 'symmetric_info_nce', 'gather_batch',
    'resolve_model_path'
]

if importlib.util.find_spec('faiss') is not None:
    from .class_metric import ENNClassImageTextRetrievalMetric  # noqa: E402
    __all__ += ['ENNClassImageTextRetrievalMetric']
