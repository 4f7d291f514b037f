"""``ENNContrastiveRetriever``: a CLIP-style dual encoder for MMPretrain.

Wrap it in ``ENNModel`` to train the ENN version ("ECLIP"): the image tower
and the projection heads become ``W = Q·diag(λ)·Pᵀ`` (``include`` patterns)
while a pretrained text tower stays as it is.
"""
import math
from typing import List, Optional, Sequence, Union

import numpy as np
import torch
import torch.nn.functional as F
from mmengine.model import BaseModel, Sequential
from mmpretrain.registry import MODELS
from mmpretrain.structures import DataSample
from torch import nn

from .contrastive_loss import gather_batch, symmetric_info_nce

__all__ = ['ENNContrastiveRetriever']


def _captions(samples) -> List[List[str]]:
    """The captions of each sample (``text`` is a string or a list)."""
    out = []
    for s in samples:
        text = s.get('text')
        out.append([] if text is None else
                   list(text) if isinstance(text, (list, tuple)) else [text])
    return out


@MODELS.register_module()
class ENNContrastiveRetriever(BaseModel):
    """Image tower + text tower + linear projections + learnable temperature,
    trained with the symmetric InfoNCE loss.

    Works with MMPretrain's retrieval datasets (``COCORetrieval``,
    ``Flickr30kRetrieval``): in training, one image and one caption per
    sample (``text``); in ``test_mode``, one image with all its captions.
    ``'tensor'`` mode returns ``dict(image_feat, text_feat)`` (L2-normalized,
    one text row per caption in sample order), which ``FaissRetrievalTestLoop``
    hands to ``FaissImageTextRetrievalMetric``; ``'predict'`` puts the same
    embeddings into the data samples.

    Args:
        image_encoder (dict | list[dict]): Config(s) of the image tower, run
            in sequence, e.g. ``[backbone, GlobalAveragePooling]``; a tuple
            output's last element is taken and flattened.
        text_encoder (dict): Config of the text tower: a module mapping a
            list of strings to (n, ``embed_dim``) features, e.g.
            ``ENNSentenceTextEncoder`` or ``ENNCLIPTextEncoder`` (frozen or
            trainable by their ``frozen`` flag).
        image_dim (int): Width of the image tower's output.
        embed_dim (int): Width of the joint embedding. Defaults to 256.
        proj_bias (bool): Bias in the projection heads. Defaults to False.
        init_temperature (float): Initial softmax temperature. Defaults to
            0.07 (CLIP).
        learn_temperature (bool): Learn it. Defaults to True.
        max_logit_scale (float): Upper clamp of 1/temperature. Defaults to
            100 (CLIP).
        positive_key (str, optional): Data-sample field (e.g. ``'image_id'``
            or ``'gt_label'``) whose equal values mark extra positive pairs
            in a batch (two captions of one image; one class). None: only
            the sample's own pair is positive.
        text_per_group (bool): In training, embed one caption per
            ``positive_key`` group of the batch (the first sample's, e.g. one
            caption per class) instead of one per sample, and contrast the
            images against those. Class-level data then pays the text tower
            for a few captions per step, which is what makes fine-tuning it
            affordable. Needs ``positive_key``. Defaults to False.
        gather_across_ranks (bool): Under DDP, contrast against the
            embeddings of all ranks (the global batch). Defaults to True.
        data_preprocessor (dict, optional): Defaults to
            ``MultiModalDataPreprocessor`` (needs ``collate_fn=
            dict(type='default_collate')`` in the dataloaders).
        init_cfg (dict, optional): Initialization config.

    Raises:
        TypeError: The text encoder has no integer ``embed_dim``.
        ValueError: ``text_per_group`` without ``positive_key``.
    """

    def __init__(self,
                 image_encoder: Union[dict, Sequence[dict]],
                 text_encoder: dict,
                 image_dim: int,
                 embed_dim: int = 256,
                 proj_bias: bool = False,
                 init_temperature: float = 0.07,
                 learn_temperature: bool = True,
                 max_logit_scale: float = 100.0,
                 positive_key: Optional[str] = None,
                 text_per_group: bool = False,
                 gather_across_ranks: bool = True,
                 data_preprocessor: Optional[dict] = None,
                 init_cfg: Optional[dict] = None):
        if data_preprocessor is None:
            data_preprocessor = dict(type='MultiModalDataPreprocessor')
        if isinstance(data_preprocessor, dict):
            data_preprocessor = MODELS.build(data_preprocessor)
        super().__init__(data_preprocessor=data_preprocessor, init_cfg=init_cfg)
        cfgs = [image_encoder] if isinstance(image_encoder, dict) else list(image_encoder)
        # mmengine's Sequential, so init_weights reaches the backbone's
        # init_cfg (e.g. a Pretrained checkpoint); nn.Sequential would hide it
        self.image_encoder = Sequential(*[MODELS.build(c) for c in cfgs])
        self.text_encoder = MODELS.build(text_encoder)
        text_dim = getattr(self.text_encoder, 'embed_dim', None)
        if not isinstance(text_dim, int):
            raise TypeError(f'{type(self.text_encoder).__name__} must expose an '
                            'integer `embed_dim` (its output width)')
        self.image_proj = nn.Linear(image_dim, embed_dim, bias=proj_bias)
        self.text_proj = nn.Linear(text_dim, embed_dim, bias=proj_bias)
        scale = torch.tensor(math.log(1.0 / init_temperature))
        self.logit_scale = nn.Parameter(scale, requires_grad=learn_temperature)
        self.max_log_scale = math.log(max_logit_scale)
        if text_per_group and positive_key is None:
            raise ValueError("text_per_group embeds one caption per positive_key group: set "
                             "positive_key (e.g. 'gt_label' for class-level captions)")
        self.positive_key = positive_key
        self.text_per_group = text_per_group
        self.gather_across_ranks = gather_across_ranks

    # ------------------------------------------------------------ embeddings
    def _image_features(self, images: torch.Tensor) -> torch.Tensor:
        if images.dim() != 4:
            raise ValueError(f'images must be a (B, C, H, W) batch, got shape '
                             f'{tuple(images.shape)}')
        out = self.image_encoder(images)
        if isinstance(out, (tuple, list)):
            out = out[-1]
        return out.flatten(1)

    def embed_images(self, images: torch.Tensor) -> torch.Tensor:
        """(B, embed_dim) L2-normalized image embeddings.

        Args:
            images (torch.Tensor): ``(B, C, H, W)`` preprocessed images.

        Returns:
            torch.Tensor: The image tower's output (the last element of a
            tuple, flattened), projected by ``image_proj`` and
            L2-normalized.

        Raises:
            ValueError: ``images`` is not 4-D.
        """
        return F.normalize(self.image_proj(self._image_features(images)), dim=-1)

    def embed_texts(self, texts: Sequence[str]) -> torch.Tensor:
        """(n, embed_dim) L2-normalized text embeddings.

        Args:
            texts (Sequence[str]): The texts.

        Returns:
            torch.Tensor: The text tower's output (as float32), projected by
            ``text_proj`` and L2-normalized, one row per text.
        """
        feats = self.text_encoder(list(texts))
        return F.normalize(self.text_proj(feats.float()), dim=-1)

    def extract_feat(self, images: Optional[torch.Tensor] = None,
                     data_samples: Optional[List[DataSample]] = None) -> dict:
        """``dict(image_feat=(B, d))`` for images, plus ``text_feat`` (one row
        per caption of the samples, in order) when the samples carry text.

        Args:
            images (torch.Tensor, optional): ``(B, C, H, W)`` images.
                Defaults to None (no ``image_feat``).
            data_samples (List[DataSample], optional): Samples whose
                captions (``text``, a string or a list) are embedded.
                Defaults to None (no ``text_feat``).

        Returns:
            dict: ``image_feat`` ``(B, embed_dim)`` if ``images`` is given;
            ``text_feat`` ``(n_captions, embed_dim)`` if ``data_samples``
            is given (no rows if they carry no text).
        """
        out = {}
        if images is not None:
            out['image_feat'] = self.embed_images(images)
        if data_samples is not None:
            texts = [t for caps in _captions(data_samples) for t in caps]
            out['text_feat'] = self.embed_texts(texts)
        return out

    @property
    def temperature(self) -> torch.Tensor:
        return 1.0 / self.logit_scale.detach().clamp(max=self.max_log_scale).exp()

    # ------------------------------------------------------------ modes
    def forward(self, images: Optional[torch.Tensor] = None,
                data_samples: Optional[List[DataSample]] = None,
                mode: str = 'tensor', inputs: Optional[torch.Tensor] = None):
        """``mode``: 'tensor' (embeddings), 'loss' or 'predict'. ``inputs``
        is accepted for data preprocessors that name the images so.

        Args:
            images (torch.Tensor, optional): ``(B, C, H, W)`` images.
            data_samples (List[DataSample], optional): The samples, with
                their captions in ``text``.
            mode (str): 'tensor' (:meth:`extract_feat`), 'loss'
                (:meth:`loss`) or 'predict' (:meth:`predict`). Defaults to
                'tensor'.
            inputs (torch.Tensor, optional): The images under another name;
                used when ``images`` is None.

        Returns:
            dict | List[DataSample]: What the chosen mode returns.

        Raises:
            ValueError: The numbers of images and data samples differ.
            RuntimeError: ``mode`` is unknown.
        """
        images = inputs if images is None else images
        if images is not None and data_samples is not None and len(images) != len(data_samples):
            raise ValueError(
                f'{len(images)} images for {len(data_samples)} data samples; with '
                "MultiModalDataPreprocessor set collate_fn=dict(type='default_collate')")
        if mode == 'tensor':
            return self.extract_feat(images, data_samples)
        if mode == 'loss':
            return self.loss(images, data_samples)
        if mode == 'predict':
            return self.predict(images, data_samples)
        raise RuntimeError(f'Invalid mode "{mode}".')

    def _groups(self, data_samples) -> Optional[torch.Tensor]:
        if self.positive_key is None:
            return None
        values = []
        for s in data_samples:
            v = s.get(self.positive_key)
            if v is None:
                raise KeyError(f'positive_key={self.positive_key!r} but a data '
                               'sample lacks it (add it to PackInputs meta_keys '
                               'or algorithm_keys)')
            values.append(int(torch.as_tensor(v).reshape(-1)[0]))
        return torch.tensor(values, dtype=torch.long, device=self.logit_scale.device)

    def loss(self, images: torch.Tensor, data_samples: List[DataSample]) -> dict:
        """Symmetric InfoNCE of the batch (the global batch under DDP).

        Args:
            images (torch.Tensor): ``(B, C, H, W)`` images.
            data_samples (List[DataSample]): One caption (``text``) per
                sample, and ``positive_key`` if it is set (with
                ``text_per_group``, only the first caption of each group is
                embedded).

        Returns:
            dict: ``loss_contrastive`` and ``temperature`` (the current
            clamped temperature, detached, for logging).

        Raises:
            ValueError: A sample does not have exactly one caption.
            KeyError: A sample lacks ``positive_key``.
        """
        captions = _captions(data_samples)
        if any(len(c) != 1 for c in captions):
            raise ValueError('training needs exactly one caption per sample '
                             "('text' a string): build the retrieval dataset "
                             'with test_mode=False')
        image = self.embed_images(images)
        groups = self._groups(data_samples)
        rows, text_groups = range(len(captions)), None
        if self.text_per_group:  # the first sample of each group, in batch order
            rows = sorted(np.unique(groups.cpu().numpy(), return_index=True)[1].tolist())
            text_groups = groups[rows]
        text = self.embed_texts([captions[i][0] for i in rows])
        if self.gather_across_ranks:
            image, groups = gather_batch(image, groups)
            text, text_groups = gather_batch(text, text_groups)
        scale = self.logit_scale.clamp(max=self.max_log_scale).exp()
        loss = symmetric_info_nce(image, text, scale, groups, text_groups)
        return dict(loss_contrastive=loss, temperature=self.temperature)

    def predict_all(self, feats: dict, data_samples: List[DataSample],
                    num_images: Optional[int] = None, num_texts: Optional[int] = None,
                    cal_i2t: bool = True, cal_t2i: bool = True) -> tuple:
        """Full score matrices for MMPretrain's ``RetrievalValLoop`` /
        ``RetrievalTestLoop`` (with ``RetrievalRecall``), as its BLIP does:
        every local image against all texts (``gt_label`` = its
        ``gt_text_id``), every local text against all images (``gt_label`` =
        its image). Like BLIP it keeps the first ``num_images`` /
        ``num_texts`` gathered rows, which is the dataset order for a single
        process or a sequential sampler; ``FaissRetrievalTestLoop`` has no
        such restriction and never forms the score matrices. A collective
        call under DDP (it gathers the embeddings of all ranks).

        Args:
            feats (dict): This rank's ``image_feat`` ``(B, d)`` and
                ``text_feat`` ``(n, d)``, as :meth:`extract_feat` returns.
            data_samples (List[DataSample]): This rank's image samples, with
                ``text``, ``gt_text_id`` and ``gt_image_id``; modified in
                place for i2t.
            num_images (int, optional): Number of gathered images to score
                against (the first rows). Defaults to None (all).
            num_texts (int, optional): Number of gathered texts to score
                against (the first rows). Defaults to None (all).
            cal_i2t (bool): Compute image-to-text scores. Defaults to True.
            cal_t2i (bool): Compute text-to-image scores. Defaults to True.

        Returns:
            tuple: If ``cal_i2t``, ``data_samples`` with ``pred_score`` over
            the texts and ``gt_label`` = ``gt_text_id``; then, if
            ``cal_t2i``, one new ``DataSample`` per caption with
            ``pred_score`` over the images and ``gt_label`` its image.
        """
        image, text = feats['image_feat'], feats['text_feat']
        image_all, text_all = gather_batch(image.detach(), text.detach())
        results = []
        if cal_i2t:
            scores = image @ text_all[:num_texts].t()
            for sample, row in zip(data_samples, scores):
                sample.set_pred_score(row)
                sample.gt_label = sample.gt_text_id
            results.append(data_samples)
        if cal_t2i:
            scores = text @ image_all[:num_images].t()
            owners = [(s, i) for s, caps in zip(data_samples, _captions(data_samples))
                      for i in range(len(caps))]
            results.append([DataSample(gt_label=s.gt_image_id[i]).set_pred_score(row)
                            for (s, i), row in zip(owners, scores)])
        return tuple(results)

    def predict(self, images: torch.Tensor,
                data_samples: Optional[List[DataSample]] = None) -> List[DataSample]:
        """Data samples with ``image_feat`` (d,) and ``text_feat`` (n_i, d).

        Args:
            images (torch.Tensor): ``(B, C, H, W)`` images.
            data_samples (List[DataSample], optional): The samples, with
                their captions in ``text``. Defaults to None (new samples
                without captions).

        Returns:
            List[DataSample]: ``data_samples`` with ``image_feat``
            ``(embed_dim, )`` and ``text_feat`` ``(n_i, embed_dim)``,
            ``n_i`` the sample's number of captions.
        """
        if data_samples is None:
            data_samples = [DataSample() for _ in range(len(images))]
        feats = self.extract_feat(images, data_samples)
        counts = [len(c) for c in _captions(data_samples)]
        for sample, img, txt in zip(data_samples, feats['image_feat'],
                                    feats['text_feat'].split(counts)):
            sample.set_field(img, 'image_feat')
            sample.set_field(txt, 'text_feat')
        return data_samples
