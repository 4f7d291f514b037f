"""Val/test loops that feed embeddings to the faiss retrieval metrics.

MMPretrain's ``ValLoop``/``TestLoop`` hand metrics the model's predictions;
retrieval needs embeddings of the queries and of a gallery. These loops run
``extract_feat`` on the evaluation dataloader (the queries) and put the
result into each data sample (``image_feat``, and ``text_feat`` for
image-text models), after embedding, once per evaluation, every gallery
dataloader a metric asks for. Hooks see the same calls as in mmengine's
loops, so EMA weights, logging and checkpoint selection (``save_best``) work.
"""
from typing import Dict, Optional, Sequence

import torch
from mmengine.dist import is_main_process
from mmengine.model import is_model_wrapper
from mmengine.runner import TestLoop, ValLoop, autocast
from mmengine.utils import ProgressBar
from mmpretrain.registry import LOOPS


def _unwrap(model):
    return model.module if is_model_wrapper(model) else model


def _as_feature_dict(out) -> Dict[str, torch.Tensor]:
    """Model output -> {'image_feat': (B, d), ...}."""
    if isinstance(out, dict):
        return out
    if isinstance(out, (tuple, list)):  # backbone/neck stages: the last one
        out = out[-1]
    if not isinstance(out, torch.Tensor):
        raise TypeError(f'extract_feat returned {type(out).__name__}; expected a '
                        'tensor, a tuple of tensors or a dict of them')
    return {'image_feat': out.flatten(1) if out.dim() > 2 else out}


@torch.no_grad()
def embed_batch(model, data_batch: dict, with_texts: bool = False,
                extract_kwargs: Optional[dict] = None, fp16: bool = False,
                keys: Optional[set] = None) -> list:
    """Embed one batch; returns its data samples with the embeddings set.

    Image models: ``model.extract_feat(inputs, **extract_kwargs)`` (for
    MMPretrain classifiers the neck output; ``stage='pre_logits'`` etc. via
    ``extract_kwargs``); the last stage of a tuple, flattened, becomes
    ``image_feat``. Image-text models (``with_texts``): the model's
    ``'tensor'`` mode with the data samples (as MMPretrain's
    ``RetrievalTestLoop``); ``text_feat`` rows are split over the samples by
    their number of captions. Only the fields in ``keys`` (all if None)
    are kept, so large extras (e.g. BLIP's token embeddings) are dropped.
    Fields that are not tensors, 0-dim, or (other than captions) whose
    first dimension is not the batch size are skipped too.

    Args:
        model (nn.Module): The model, possibly in a wrapper such as DDP; its
            ``data_preprocessor`` runs first (``training=False``).
        data_batch (dict): One batch of the dataloader.
        with_texts (bool): Image-text mode (see above). Defaults to False.
        extract_kwargs (dict, optional): Keyword arguments of
            ``extract_feat`` (image models only). Defaults to None.
        fp16 (bool): Run the model under ``autocast``. Defaults to False.
        keys (set, optional): Output fields to keep. Defaults to None (all).

    Returns:
        list: The preprocessed batch's data samples, each with the kept
        embeddings set as detached float32 CPU tensors (a row per sample,
        the sample's caption rows for ``text_feat*`` in image-text mode).

    Raises:
        TypeError: The model output is not a tensor, a tuple/list ending in
            a tensor, or a dict.
        ValueError: The batch has no data samples, or the ``text_feat`` rows
            do not match the number of captions.
    """
    net = _unwrap(model)
    data = net.data_preprocessor(data_batch, False)
    samples = data.get('data_samples')
    with autocast(enabled=fp16):
        if with_texts:
            # what BaseModel's val/test step does with a preprocessed batch
            out = net(**data, mode='tensor') if isinstance(data, dict) else \
                net(*data, mode='tensor')
        else:
            # ClsDataPreprocessor gives 'inputs', MultiModalDataPreprocessor 'images'
            inputs = data['inputs'] if 'inputs' in data else data['images']
            out = net.extract_feat(inputs, **(extract_kwargs or {}))
    feats = _as_feature_dict(out)
    if samples is None:
        raise ValueError('the batch has no data samples: retrieval needs '
                         'PackInputs (labels, sample_idx)')
    n = len(samples)
    for key, value in feats.items():
        if keys is not None and key not in keys:
            continue
        if not isinstance(value, torch.Tensor) or value.dim() == 0:
            continue
        value = value.detach().float().cpu()
        # captions first: their row count can equal the sample count by chance
        if with_texts and key.startswith('text_feat'):
            counts = [len(s.text) if isinstance(s.get('text'), (list, tuple))
                      else 1 for s in samples]
            if sum(counts) != value.shape[0]:
                raise ValueError(f'{key} has {value.shape[0]} rows for '
                                 f'{sum(counts)} captions in the batch')
            for sample, rows in zip(samples, value.split(counts)):
                sample.set_field(rows, key)
        elif value.shape[0] == n:
            for sample, row in zip(samples, value):
                sample.set_field(row, key)
    return samples


class _RetrievalLoopMixin:
    """Everything of the two loops but mmengine's base (``ValLoop`` or
    ``TestLoop``, next in the MRO) and the hook names, ``before_{_phase}``
    etc.: the constructor, gallery embedding, ``run`` and the per-batch
    step."""
    _phase = 'val'

    def __init__(self, runner, dataloader, evaluator, fp16: bool = False,
                 extract_kwargs: Optional[dict] = None, progress: bool = True):
        super().__init__(runner, dataloader, evaluator, fp16)
        self.extract_kwargs = extract_kwargs or {}
        self.progress = progress
        self.with_texts = any(getattr(m, 'needs_texts', False)
                              for m in self.evaluator.metrics)
        self.feat_keys = {getattr(m, attr) for m in self.evaluator.metrics
                          for attr in ('feat_key', 'image_key', 'text_key')
                          if isinstance(getattr(m, attr, None), str)} or None
        self._gallery_loaders = {}
        dataset = self.dataloader.dataset
        for metric in self.evaluator.metrics:
            if hasattr(metric, 'text_size'):
                metric.text_size = getattr(dataset, 'text_size', None)

    def _embed_galleries(self) -> None:
        for metric in self.evaluator.metrics:
            cfg = getattr(metric, 'gallery_dataloader', None)
            if cfg is None:
                continue
            key = id(metric)
            if key not in self._gallery_loaders:
                self._gallery_loaders[key] = self.runner.build_dataloader(
                    cfg, seed=self.runner.seed)
            loader = self._gallery_loaders[key]
            metric.reset_gallery(len(loader.dataset))
            bar = ProgressBar(len(loader)) if (self.progress and is_main_process()) else None
            for data_batch in loader:
                metric.add_gallery(embed_batch(self.runner.model, data_batch, False,
                                               self.extract_kwargs, self.fp16,
                                               self.feat_keys))
                if bar is not None:
                    bar.update()
            if bar is not None:
                print()

    def run(self) -> dict:
        """Embed galleries and queries, then evaluate."""
        self.runner.call_hook(f'before_{self._phase}')
        self.runner.call_hook(f'before_{self._phase}_epoch')
        self.runner.model.eval()
        self._embed_galleries()
        for idx, data_batch in enumerate(self.dataloader):
            self.run_iter(idx, data_batch)
        metrics = self.evaluator.evaluate(len(self.dataloader.dataset))
        self.runner.call_hook(f'after_{self._phase}_epoch', metrics=metrics)
        self.runner.call_hook(f'after_{self._phase}')
        return metrics

    @torch.no_grad()
    def run_iter(self, idx, data_batch: Sequence[dict]) -> None:
        """Embed one query batch and hand it to the evaluator.

        Args:
            idx (int): Index of the batch, passed to the hooks.
            data_batch (Sequence[dict]): One batch of the query dataloader.
        """
        self.runner.call_hook(f'before_{self._phase}_iter', batch_idx=idx,
                              data_batch=data_batch)
        outputs = embed_batch(self.runner.model, data_batch, self.with_texts,
                              self.extract_kwargs, self.fp16, self.feat_keys)
        self.evaluator.process(data_samples=outputs, data_batch=data_batch)
        self.runner.call_hook(f'after_{self._phase}_iter', batch_idx=idx,
                              data_batch=data_batch, outputs=outputs)


@LOOPS.register_module()
class FaissRetrievalValLoop(_RetrievalLoopMixin, ValLoop):
    """Validation loop for ``FaissRetrievalMetric`` /
    ``FaissImageTextRetrievalMetric``.

    Args:
        runner (Runner): The runner.
        dataloader (DataLoader | dict): The query dataloader.
        evaluator (Evaluator | dict | list): The metrics.
        fp16 (bool): Embed under autocast. Defaults to False.
        extract_kwargs (dict, optional): Passed to ``extract_feat``, e.g.
            ``dict(stage='pre_logits')``. Defaults to None.
        progress (bool): Show a progress bar (main process) while embedding
            a gallery. Defaults to True.
    """
    _phase = 'val'


@LOOPS.register_module()
class FaissRetrievalTestLoop(_RetrievalLoopMixin, TestLoop):
    """Test loop for ``FaissRetrievalMetric`` /
    ``FaissImageTextRetrievalMetric``; arguments as
    :class:`FaissRetrievalValLoop`."""
    _phase = 'test'
