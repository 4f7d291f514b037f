"""Top-k search with faiss: exact by default, bounded memory, fixed ties.

Pure numpy/torch/faiss (no mmengine), so notebooks and scripts can use it
alone. :class:`FaissSearcher` ranks a gallery for each query, best first:

- ``index='Flat'`` (default) is exact: ``faiss.knn`` (the brute-force kernel
  behind ``IndexFlatIP`` / ``IndexFlatL2``) runs on gallery shards of
  bounded size, so a gallery read from a ``.npy`` memmap never has to fit in
  memory, and the per-shard top-k lists are merged.
- Any other ``faiss.index_factory`` string builds that index (trained on
  the gallery if needed): approximate, and reported as such.
- With faiss-gpu and visible GPUs the index is sharded over all of them
  (``index_cpu_to_all_gpus`` with ``shard=True``).

What "exact" means (the rank rule): the ranking is that of the float64
similarity of the embeddings as given (cosine: rows divided by their float64
norms, then the inner product; ``'ip'``: the inner product; ``'l2'``: the
negated squared distance), each computed by :func:`exact_scores` (float64
sums over the dimension, one kernel for every pair), and equal scores rank
by ascending gallery index. faiss searches in float32, where the scores of
near-ties differ from run to run with the CPU's BLAS kernels (AVX2 against
AVX-512); so its candidates are re-scored in float64 and re-ordered, and the
candidate list is deepened until no item left out of it can reach the k-th
place (its float32 score plus the float32 error bound is below the k-th
float64 score). The result is the same on any x86 CPU and on GPUs.
Approximate indexes (and float16 storage) keep faiss's own scores, with
equal scores ranked by index.
"""
import mmap
import warnings
from typing import Callable, Optional, Tuple

import faiss
import numpy as np

__all__ = ['FaissSearcher', 'exact_scores', 'topk_of_scores', 'faiss_has_gpu', 'SIMILARITIES']

SIMILARITIES = ('cosine', 'ip', 'l2')
# faiss-gpu's k-selection handles k <= 2048 (faiss/gpu/utils/DeviceDefs.cuh).
GPU_MAX_K = 2048
# Default shard of the gallery prepared at a time (bytes of float32 rows).
SHARD_BYTES = 256 * 2**20


def faiss_has_gpu() -> bool:
    """Whether this faiss build has GPU support and sees at least one GPU."""
    return hasattr(faiss, 'StandardGpuResources') and faiss.get_num_gpus() > 0


def resolve_device(device: str) -> str:
    """Map ``'auto' | 'cpu' | 'gpu'`` to the device faiss will use.

    ``'gpu'`` without faiss-gpu or without a visible GPU falls back to the
    CPU with a warning (same numbers, slower), so one config runs anywhere.

    Args:
        device (str): ``'auto'`` (the GPU if faiss has a usable one, else the
            CPU, silently), ``'cpu'`` or ``'gpu'``.

    Returns:
        str: ``'gpu'`` or ``'cpu'``.

    Raises:
        ValueError: ``device`` is none of the three.
    """
    if device not in ('auto', 'cpu', 'gpu'):
        raise ValueError(f"device must be 'auto', 'cpu' or 'gpu', got {device!r}")
    if device == 'cpu':
        return 'cpu'
    if faiss_has_gpu():
        return 'gpu'
    if device == 'gpu':
        warnings.warn("device='gpu' but faiss has no usable GPU (faiss-cpu is "
                      'installed or no GPU is visible); searching on the CPU '
                      "instead. Install faiss-gpu or pass device='cpu'.",
                      stacklevel=3)
    return 'cpu'


def to_numpy(x, name: str) -> np.ndarray:
    """numpy view of a numpy array, np.memmap or torch tensor (no copy).

    A torch tensor is detached and moved to the CPU (a copy if it was on a
    GPU; bfloat16 is converted to float32); anything else that is not an
    ndarray goes through ``np.asarray``. A memmap stays a memmap.

    Args:
        x (np.ndarray | np.memmap | torch.Tensor | array-like): The data.
        name (str): What ``x`` is, for the error message.

    Returns:
        np.ndarray: ``x`` as a numpy array.

    Raises:
        TypeError: ``x`` cannot be turned into an array (e.g. a ragged list).
    """
    if hasattr(x, 'detach') and hasattr(x, 'cpu'):  # torch.Tensor
        x = x.detach().cpu()
        if str(x.dtype) == 'torch.bfloat16':
            x = x.float()
        x = x.numpy()
    if not isinstance(x, np.ndarray):
        try:
            x = np.asarray(x)
        except Exception as err:  # ragged lists and the like
            raise TypeError(f'{name} must be an array or tensor: {err}') from None
    return x


def check_features(x, name: str, dim: Optional[int] = None,
                   allow_empty: bool = False, check_finite: bool = True) -> np.ndarray:
    """Validate an (N, dim) embedding matrix; returns it without copying.

    Raises a ``ValueError`` naming the problem for a wrong rank, an empty
    matrix, a dimension that differs from ``dim`` and, with ``check_finite``,
    non-finite values (galleries are checked shard by shard as they are
    prepared instead, see :func:`prepare_rows`). Integer and bool matrices
    are converted to float32 (a copy).

    Args:
        x (np.ndarray | np.memmap | torch.Tensor): The embeddings (converted
            by :func:`to_numpy`).
        name (str): What ``x`` is, for error messages, e.g.
            ``'query embeddings'`` (a name containing ``'gallery'`` changes
            the wording of the empty-matrix error).
        dim (int, optional): Required number of columns. Defaults to None
            (any).
        allow_empty (bool): Accept a matrix with no rows. Defaults to False.
        check_finite (bool): Check for NaN/inf with :func:`assert_finite`
            (never for a memmap). Defaults to True.

    Returns:
        np.ndarray: ``x`` as an ``(N, dim)`` float array.

    Raises:
        ValueError: ``x`` is not 2-D, has no rows (unless ``allow_empty``),
            has dimension 0 or not ``dim``, or holds NaN/inf.
        TypeError: ``x`` is not array-like or its dtype is not numeric (nor
            bool).
    """
    x = to_numpy(x, name)
    if x.ndim != 2:
        raise ValueError(f'{name} must be a 2-D (num_items, dim) matrix, got '
                         f'shape {tuple(x.shape)}')
    if not np.issubdtype(x.dtype, np.floating):
        if np.issubdtype(x.dtype, np.integer) or x.dtype == np.bool_:
            x = x.astype(np.float32)
        else:
            raise TypeError(f'{name} must hold floats, got dtype {x.dtype}')
    if x.shape[0] == 0 and not allow_empty:
        raise ValueError(f'{name} is empty (0 items): nothing to search '
                         f'{"in" if "gallery" in name else "for"}')
    if x.shape[1] == 0:
        raise ValueError(f'{name} has dimension 0')
    if dim is not None and x.shape[1] != dim:
        raise ValueError(f'{name} has dimension {x.shape[1]} but the other '
                         f'side has {dim}: query and gallery embeddings must '
                         'come from the same model output')
    if check_finite and not isinstance(x, np.memmap):
        assert_finite(x, name)
    return x


def squared_norms(x: np.ndarray) -> np.ndarray:
    """Row sums of squares without a full-size temporary.

    Args:
        x (np.ndarray): ``(n, d)`` rows.

    Returns:
        np.ndarray: ``(n, )`` sums of squares, in ``x``'s dtype.
    """
    return np.einsum('ij,ij->i', x, x)


# Rows of (queries x candidates x dim) float64 re-scored at a time (32 MiB).
RESCORE_ENTRIES = 2**22
# Unit roundoff of float32: faiss's scores are float32 sums over the dimension.
FLOAT32_EPS = 2.0**-24


def exact_rows(x, similarity: str) -> np.ndarray:
    """Rows in float64 as the rank rule scores them: divided by their norm
    for ``'cosine'`` (all-zero rows stay zero), as they are otherwise.

    Args:
        x (np.ndarray | array-like): ``(..., d)`` embeddings (any float
            dtype).
        similarity (str): One of :data:`SIMILARITIES`.

    Returns:
        np.ndarray: float64 rows of the same shape.
    """
    x = np.asarray(x, dtype=np.float64)
    if similarity != 'cosine':
        return x
    flat = x.reshape(-1, x.shape[-1])
    norms = np.sqrt(np.einsum('ij,ij->i', flat, flat))
    norms[norms == 0] = 1
    return (flat / norms[:, None]).reshape(x.shape)


def exact_scores(q: np.ndarray, g: np.ndarray, similarity: str) -> np.ndarray:
    """float64 scores of query rows against their candidate rows.

    Args:
        q (np.ndarray): ``(n, d)`` rows from :func:`exact_rows`.
        g (np.ndarray): ``(n, k, d)`` candidate rows from :func:`exact_rows`.
        similarity (str): One of :data:`SIMILARITIES`.

    Returns:
        np.ndarray: ``(n, k)`` float64, larger is more similar (the negated
        squared distance for ``'l2'``).
    """
    if similarity == 'l2':
        diff = g - q[:, None, :]
        return -np.einsum('nkd,nkd->nk', diff, diff)
    return np.einsum('nd,nkd->nk', q, g)


def float32_error_bound(q_sq: np.ndarray, g_sq_max: float, dim: int,
                        similarity: str) -> np.ndarray:
    """Upper bound of ``|faiss float32 score - exact float64 score|`` per query.

    A float32 sum of ``d`` products errs by at most ``d·u·Σ|x_i·y_i|``
    (``u = 2**-24``); normalising in float32 adds about as much again. The
    scale is 1 for cosine, ``|q|·max|g|`` for inner products and
    ``(|q| + max|g|)²`` for squared distances.

    Args:
        q_sq (np.ndarray): ``(n, )`` squared norms of the raw query rows.
        g_sq_max (float): Largest squared norm of a raw gallery row.
        dim (int): Embedding dimension.
        similarity (str): One of :data:`SIMILARITIES`.

    Returns:
        np.ndarray: ``(n, )`` float64 bounds,
        ``(2 * dim + 16) * 2**-24 * scale``.
    """
    q_norm, g_norm = np.sqrt(q_sq.astype(np.float64)), np.sqrt(float(g_sq_max))
    if similarity == 'cosine':
        scale = np.ones_like(q_norm)
    elif similarity == 'ip':
        scale = q_norm * g_norm
    else:
        scale = (q_norm + g_norm) ** 2
    return (2 * dim + 16) * FLOAT32_EPS * scale


def assert_finite(x: np.ndarray, name: str, offset: int = 0,
                  sq: Optional[np.ndarray] = None) -> None:
    """Raise if ``x`` holds NaN or inf, naming the first bad row.

    A row's sum of squares is finite unless the row holds NaN/inf (or
    overflows float32, which the exact re-check below tells apart), so one
    pass over the data with no boolean copy of it suffices.

    Args:
        x (np.ndarray): ``(n, d)`` rows.
        name (str): What the rows are, for the error message.
        offset (int): Index of the first row of ``x``, added to the row
            number reported. Defaults to 0.
        sq (np.ndarray, optional): ``squared_norms(x)``, if already computed.
            Defaults to None (computed here).

    Raises:
        ValueError: A row holds NaN or inf.
    """
    sq = squared_norms(x) if sq is None else sq
    suspect = np.flatnonzero(~np.isfinite(sq))
    if len(suspect):
        rows = suspect[~np.isfinite(x[suspect]).all(axis=1)]
        if len(rows):
            raise ValueError(
                f'{name} has {len(rows)} rows with NaN/inf values (first: row '
                f'{rows[0] + offset}); a diverged model or a broken input gives '
                'meaningless rankings, fix the embeddings first')


def prepare_rows(x: np.ndarray, similarity: str, name: str,
                 offset: int = 0, return_sq_max: bool = False):
    """float32, C-contiguous rows, L2-normalized for cosine similarity.

    Copies only when needed (never modifies the caller's array).

    Args:
        x (np.ndarray): ``(n, d)`` rows (a memmap is copied).
        similarity (str): One of :data:`SIMILARITIES`.
        name (str): What the rows are, for error messages.
        offset (int): Index of the first row, for error messages.
        return_sq_max (bool): Also return the largest squared norm of the
            rows before normalization (the scale of the float32 error).

    Returns:
        np.ndarray | tuple: The rows, and the largest squared norm if asked.
    """
    owned = False  # whether x is our own copy (then normalize in place)
    if isinstance(x, np.memmap):
        owned = True
        mapping = getattr(x, '_mmap', None)
        x = np.array(x, dtype=np.float32)  # a private copy of the shard
        if mapping is not None and hasattr(mapping, 'madvise'):
            # drop the file pages just read from this process's resident set:
            # streaming a gallery larger than memory must not grow RSS
            mapping.madvise(mmap.MADV_DONTNEED)
    elif x.dtype != np.float32 or not x.flags.c_contiguous:
        x = np.ascontiguousarray(x, dtype=np.float32)
        owned = True
    sq = squared_norms(x)
    assert_finite(x, name, offset, sq)
    if similarity == 'cosine':
        norms = np.sqrt(sq.astype(np.float64))[:, None].astype(np.float32)
        zero = norms[:, 0] == 0
        if zero.any():
            warnings.warn(f'{name} has {int(zero.sum())} all-zero embeddings '
                          f'(first: row {np.flatnonzero(zero)[0] + offset}); '
                          'their cosine similarity is 0 to everything',
                          stacklevel=4)
            norms[zero] = 1
        if owned:
            x /= norms
        else:
            x = x / norms
    if return_sq_max:
        return x, float(sq.max()) if len(sq) else 0.0
    return x


def order_rows(scores: np.ndarray, ids: np.ndarray
               ) -> Tuple[np.ndarray, np.ndarray]:
    """Sort each row by descending score, then ascending id (the tie rule).

    Missing results (id -1, returned by approximate indexes) go last.

    Args:
        scores (np.ndarray): ``(n, k)`` scores, larger is better.
        ids (np.ndarray): ``(n, k)`` integer gallery indices, -1 for missing.

    Returns:
        tuple: The reordered ``(scores, ids)``, ``(n, k)`` each; the scores
        of missing results are set to ``-inf``.
    """
    scores = np.where(ids < 0, -np.inf, scores)
    ids_key = np.where(ids < 0, np.iinfo(np.int64).max, ids)
    order = np.lexsort((ids_key, -scores), axis=-1)
    return (np.take_along_axis(scores, order, -1),
            np.take_along_axis(ids, order, -1))


def stable_topk(search: Callable, n_queries: int, k: int,
                n_gallery: int) -> Tuple[np.ndarray, np.ndarray]:
    """Top-``k`` of ``search`` with ties at the k-th place resolved by index.

    Args:
        search (callable): ``search(rows, kk) -> (scores, ids)`` for query
            rows ``rows`` (an index array) with ``kk`` results, larger
            score first.
        n_queries (int): Number of query rows.
        k (int): Results wanted per query (``<= n_gallery``).
        n_gallery (int): Items that can be returned.

    Returns:
        tuple: ``(n_queries, k)`` scores and ids, ordered by
        :func:`order_rows`.
    """
    kk = min(k + 1, n_gallery)
    scores, ids = order_rows(*search(np.arange(n_queries), kk))
    if kk > k:
        # The (k+1)-th result ties the k-th: the heap may have kept any
        # members of that tie, so search those rows deeper until the tie
        # ends inside the list (or the whole gallery is listed).
        # (A tie of missing results, score -inf, needs no deeper search.)
        pending = np.flatnonzero((scores[:, k] == scores[:, k - 1])
                                 & np.isfinite(scores[:, k - 1]))
        while len(pending):
            kk = min(2 * kk, n_gallery)
            s2, i2 = order_rows(*search(pending, kk))
            done = ((s2[:, -1] != s2[:, k - 1]) | (kk == n_gallery)
                    | ~np.isfinite(s2[:, k - 1]))
            scores[pending[done], :k] = s2[done, :k]
            ids[pending[done], :k] = i2[done, :k]
            pending = pending[~done]
    return scores[:, :k], ids[:, :k]


def exact_topk(search: Callable, rescore: Callable, margin: np.ndarray, n_queries: int,
               k: int, n_gallery: int) -> Tuple[np.ndarray, np.ndarray]:
    """Top-``k`` by the rank rule: float32 candidates, float64 order.

    Args:
        search (callable): ``search(rows, kk) -> (scores, ids)``, the float32
            top-``kk`` of query rows ``rows`` (an index array), in any order.
        rescore (callable): ``rescore(rows, ids) -> scores``, the float64
            scores (:func:`exact_scores`) of those queries' candidates.
        margin (np.ndarray): ``(n_queries, )`` bound of the float32 error
            (:func:`float32_error_bound`).
        n_queries (int): Number of query rows.
        k (int): Results wanted per query (``<= n_gallery``).
        n_gallery (int): Items that can be returned.

    Returns:
        tuple: ``(n_queries, k)`` float64 scores and int64 ids, best first.
    """
    out_scores = np.empty((n_queries, k), np.float64)
    out_ids = np.empty((n_queries, k), np.int64)
    pending = np.arange(n_queries)
    kk = min(k + 1, n_gallery)
    while len(pending):
        s32, ids = search(pending, kk)
        scores, ids = order_rows(rescore(pending, ids), ids)
        if kk == n_gallery:  # the whole gallery is listed
            done = np.ones(len(pending), bool)
        else:
            # Whatever faiss left out scores at most the lowest float32 score
            # listed, so at most that plus the margin in float64: done when
            # this is below the k-th float64 score (no tie, no overtaking).
            done = s32.min(axis=1) + margin[pending] < scores[:, k - 1]
        out_scores[pending[done]] = scores[done, :k]
        out_ids[pending[done]] = ids[done, :k]
        pending = pending[~done]
        kk = min(2 * kk, n_gallery)
    return out_scores, out_ids


def topk_of_scores(scores, k: int) -> np.ndarray:
    """Indices of the ``k`` best columns of each row of a score matrix.

    For models that score the whole gallery themselves (MMPretrain's
    ``predict_all``). O(N) per row; the tie rule is the same as the search's.

    Args:
        scores (np.ndarray | torch.Tensor): ``(..., N)`` scores, larger is
            better, compared in float32; leading dimensions are flattened
            into rows.
        k (int): Columns to keep per row, ``1 <= k <= N``.

    Returns:
        np.ndarray: ``(rows, k)`` int64 column indices, best first, equal
        scores by ascending index.

    Raises:
        ValueError: ``k`` is out of range or the scores hold NaN/inf.
    """
    scores = to_numpy(scores, 'pred_score').astype(np.float32, copy=False)
    scores = scores.reshape(-1, scores.shape[-1])
    n = scores.shape[1]
    if not 1 <= k <= n:
        raise ValueError(f'top-{k} asked for but the scores cover {n} items')
    if not np.isfinite(scores).all():
        raise ValueError('pred_score holds NaN/inf values')
    out = np.empty((len(scores), k), np.int64)
    kth = np.partition(scores, n - k, axis=1)[:, n - k]
    for i, row in enumerate(scores):
        cand = np.flatnonzero(row >= kth[i])
        out[i] = cand[np.lexsort((cand, -row[cand]))[:k]]
    return out


def merge_topk(a: Tuple[np.ndarray, np.ndarray],
               b: Tuple[np.ndarray, np.ndarray],
               k: int) -> Tuple[np.ndarray, np.ndarray]:
    """Merge two ranked (scores, ids) lists of the same queries, keep ``k``.

    Args:
        a (Tuple[np.ndarray, np.ndarray]): ``(scores, ids)``, ``(n, ka)``
            each.
        b (Tuple[np.ndarray, np.ndarray]): ``(scores, ids)``, ``(n, kb)``
            each.
        k (int): Results to keep per query.

    Returns:
        tuple: ``(scores, ids)``, ``(n, min(k, ka + kb))`` each, ordered by
        :func:`order_rows`.
    """
    scores, ids = order_rows(np.concatenate([a[0], b[0]], 1),
                             np.concatenate([a[1], b[1]], 1))
    return scores[:, :k], ids[:, :k]


class FaissSearcher:
    """Ranks a gallery for query embeddings with faiss.

    Args:
        gallery (np.ndarray | torch.Tensor | np.memmap): ``(N, d)`` gallery
            embeddings. A memmap (e.g. ``np.load(path, mmap_mode='r')``) is
            read shard by shard, so exact search of galleries larger than
            memory works.
        similarity (str): ``'cosine'`` (inner product of L2-normalized
            vectors, the default), ``'ip'`` (raw inner product) or ``'l2'``
            (Euclidean distance; its score is the negated squared distance).
        index (str): ``'Flat'`` for exact search, or any
            ``faiss.index_factory`` string (approximate). Defaults to 'Flat'.
        device (str): ``'auto'`` (all GPUs with faiss-gpu, else CPU),
            ``'cpu'`` or ``'gpu'`` (falls back to the CPU with a warning).
        float16 (bool): Store the gallery in float16 (``SQfp16`` on the CPU,
            ``useFloat16`` on GPUs): half the memory, scores rounded to
            float16 precision, so reported as not exact.
        shard_rows (int, optional): Gallery rows prepared at a time (copied,
            normalized, searched) by the exact CPU search; bounds its memory.
            Defaults to 256 MiB of float32 rows.
        train_rows (int): Gallery rows used to train an index that needs
            training (IVF, PQ, ...). Defaults to 262144.

    Raises:
        ValueError: An unknown ``similarity`` or ``device``, an empty or
            invalid ``index`` string (or one faiss cannot train), ``float16``
            with a non-Flat ``index``, a non-positive ``shard_rows``, or a
            malformed gallery (see :func:`check_features`).
    """

    def __init__(self,
                 gallery,
                 similarity: str = 'cosine',
                 index: str = 'Flat',
                 device: str = 'auto',
                 float16: bool = False,
                 shard_rows: Optional[int] = None,
                 train_rows: int = 262144):
        if similarity not in SIMILARITIES:
            raise ValueError(f'similarity must be one of {SIMILARITIES}, '
                             f'got {similarity!r}')
        if not isinstance(index, str) or not index.strip():
            raise ValueError(f'index must be a faiss index_factory string such '
                             f"as 'Flat' or 'IVF1024,Flat', got {index!r}")
        # (finiteness is checked shard by shard as the gallery is prepared)
        self.gallery = check_features(gallery, 'gallery embeddings',
                                      check_finite=False)
        self.ntotal, self.dim = self.gallery.shape
        self.similarity = similarity
        self.metric = (faiss.METRIC_L2 if similarity == 'l2' else
                       faiss.METRIC_INNER_PRODUCT)
        self.index_spec = index.strip()
        self.float16 = bool(float16)
        self.device = resolve_device(device)
        self.exact = self.index_spec == 'Flat' and not self.float16
        self.shard_rows = int(shard_rows or max(1024, SHARD_BYTES // (4 * self.dim)))
        if self.shard_rows <= 0:
            raise ValueError(f'shard_rows must be positive, got {shard_rows}')
        self.train_rows = int(train_rows)
        self._cache = None  # the prepared single shard and its largest squared norm
        self._exact_cache = None  # the gallery as exact_rows, where it is small
        self._sq_max = 0.0  # largest squared norm of a gallery row (indexes)
        self._cpu_copy = None
        self.index = None
        if self.device == 'gpu' or not self.exact:
            self.index = self._build_index()
        if not self.exact:
            kind = ('float16 storage' if self.index_spec == 'Flat' else
                    f'approximate index {self.index_spec!r}')
            warnings.warn(f'retrieval search uses {kind}: the metrics are '
                          'approximate, not those of an exact search',
                          stacklevel=2)

    @property
    def description(self) -> str:
        """One line for logs: what kind of search produced the numbers."""
        kind = 'exact' if self.exact else 'APPROXIMATE'
        spec = 'SQfp16' if (self.float16 and self.index_spec == 'Flat'
                            and self.device == 'cpu') else self.index_spec
        return (f'{kind} faiss search ({spec}, {self.similarity}, '
                f'{self.device}, {self.ntotal} x {self.dim} gallery)')

    # ------------------------------------------------------------------ build
    def _shards(self):
        """``(start, rows, largest squared norm of the raw rows)`` per shard."""
        for start in range(0, self.ntotal, self.shard_rows):
            stop = min(start + self.shard_rows, self.ntotal)
            rows, sq_max = prepare_rows(self.gallery[start:stop], self.similarity,
                                        'gallery embeddings', start, return_sq_max=True)
            yield start, rows, sq_max

    def _build_index(self):
        spec = self.index_spec
        if self.float16 and spec == 'Flat' and self.device == 'cpu':
            spec = 'SQfp16'
        elif self.float16 and spec != 'Flat':
            raise ValueError('float16=True applies to the default Flat index; '
                             'with an index-factory string pick its encoding in '
                             "the string instead (e.g. 'IVF1024,SQfp16')")
        try:
            index = faiss.index_factory(self.dim, spec, self.metric)
        except RuntimeError as err:
            msg = str(err).strip().splitlines()[-1]
            raise ValueError(f'faiss rejects the index string {self.index_spec!r} '
                             f'for dimension {self.dim}: {msg}. See faiss\'s '
                             '"The index factory" wiki page; use \'Flat\' for '
                             'exact search') from None
        if not index.is_trained:
            n = min(self.ntotal, self.train_rows)
            train = prepare_rows(self.gallery[:n], self.similarity,
                                 'gallery embeddings')
            try:
                index.train(train)
            except RuntimeError as err:
                raise ValueError(f'faiss could not train {self.index_spec!r} on '
                                 f'{n} gallery vectors: '
                                 f'{str(err).strip().splitlines()[-1]}') from None
        for _, rows, sq_max in self._shards():
            index.add(rows)
            self._sq_max = max(self._sq_max, sq_max)
            del rows
        if self.device == 'gpu':
            options = faiss.GpuMultipleClonerOptions()
            options.shard = True  # each GPU holds 1/n of the gallery
            options.useFloat16 = self.float16
            try:
                index = faiss.index_cpu_to_all_gpus(index, co=options)
            except RuntimeError as err:  # e.g. HNSW has no GPU version
                warnings.warn(f'faiss-gpu cannot hold {self.index_spec!r} '
                              f'({str(err).strip().splitlines()[-1]}); searching '
                              'on the CPU', stacklevel=4)
                self.device = 'cpu'
        return index

    def to_cpu_index(self):
        """A CPU faiss index holding the (prepared) gallery, for saving."""
        if self.index is None:
            index = faiss.IndexFlat(self.dim, self.metric)
            for _, rows, _ in self._shards():
                index.add(rows)
            return index
        if self.device == 'gpu':
            return faiss.index_gpu_to_cpu(self.index)
        return self.index

    # ----------------------------------------------------------------- search
    def search(self, queries, k: int) -> Tuple[np.ndarray, np.ndarray]:
        """Top-``k`` gallery items for each query, best first.

        Args:
            queries (np.ndarray | torch.Tensor): ``(n, d)`` query embeddings.
            k (int): Results per query, ``1 <= k <= gallery size``.

        Returns:
            tuple: ``scores`` (n, k), larger is more similar (the negated
            squared distance for ``'l2'``): float64 by the rank rule for an
            exact search, faiss's float32 scores for an approximate one;
            and ``ids`` (n, k) int64 gallery indices (-1 where an approximate
            index found fewer).

        Raises:
            ValueError: ``k`` is outside ``[1, gallery size]``, or the queries
                are malformed or hold NaN/inf (see :func:`check_features`).
        """
        k = int(k)
        if not 1 <= k <= self.ntotal:
            raise ValueError(f'k={k} is outside [1, gallery size '
                             f'{self.ntotal}]: lower topk or enlarge the gallery')
        raw = check_features(queries, 'query embeddings', self.dim, check_finite=False)
        q = prepare_rows(raw, self.similarity, 'query embeddings')  # checks finite
        if not self.exact:
            return self._search_index(q, k)
        q64 = exact_rows(raw, self.similarity)
        q_sq = squared_norms(np.asarray(raw, np.float64))
        if self.index is not None:  # exact, on GPUs
            margin = float32_error_bound(q_sq, self._sq_max, self.dim, self.similarity)
            return self._search_exact_index(q, q64, margin, k)
        if self.ntotal <= self.shard_rows:
            if self._cache is None:
                self._cache = next(self._shards())[1:]
            rows, sq_max = self._cache
            return self._search_shard(q, q64, q_sq, rows, sq_max, 0, k)
        result = None
        for start, rows, sq_max in self._shards():
            part = self._search_shard(q, q64, q_sq, rows, sq_max, start, min(k, len(rows)))
            del rows  # before the next shard is prepared: one shard at a time
            result = part if result is None else merge_topk(result, part, k)
        return result

    def _exact_gallery(self, ids: np.ndarray) -> np.ndarray:
        """Gallery rows ``ids`` (any shape) as :func:`exact_rows`.

        Only the candidates are read and converted, unless a call asks for
        at least as many rows as the gallery has (``mAP@R`` of large
        classes): then a small in-memory gallery is converted once and kept.
        """
        if self._exact_cache is None and ids.size >= self.ntotal \
                and not isinstance(self.gallery, np.memmap) \
                and self.ntotal * self.dim * 8 <= SHARD_BYTES:
            self._exact_cache = exact_rows(self.gallery, self.similarity)
        if self._exact_cache is not None:
            return self._exact_cache[ids]
        rows = np.asarray(self.gallery[ids.ravel()])
        return exact_rows(rows, self.similarity).reshape(*ids.shape, self.dim)

    def _rescore(self, q64: np.ndarray, ids: np.ndarray) -> np.ndarray:
        """float64 scores of ``ids`` (n, kk) for the query rows ``q64``."""
        out = np.empty(ids.shape, np.float64)
        step = max(1, RESCORE_ENTRIES // max(1, ids.shape[1] * self.dim))
        for a in range(0, len(ids), step):
            out[a:a + step] = exact_scores(q64[a:a + step], self._exact_gallery(ids[a:a + step]),
                                           self.similarity)
        return out

    def _to_scores(self, dist: np.ndarray) -> np.ndarray:
        return dist if self.metric == faiss.METRIC_INNER_PRODUCT else -dist

    def _search_shard(self, q, q64, q_sq, rows, sq_max, start, k):
        def search(sel, kk):
            dist, ids = faiss.knn(q[sel], rows, kk, metric=self.metric)
            return self._to_scores(dist), ids + start

        margin = float32_error_bound(q_sq, sq_max, self.dim, self.similarity)
        return exact_topk(search, lambda sel, ids: self._rescore(q64[sel], ids), margin,
                          len(q), k, len(rows))

    def _search_exact_index(self, q, q64, margin, k):
        return exact_topk(lambda sel, kk: self._index_search(q, sel, kk),
                          lambda sel, ids: self._rescore(q64[sel], ids), margin,
                          len(q), k, self.ntotal)

    def _index_search(self, q, sel, kk):
        """faiss's float32 top-``kk`` of query rows ``sel`` from the index."""
        index = self.index
        if self.device == 'gpu' and kk > GPU_MAX_K:
            # faiss-gpu's k-selection stops at GPU_MAX_K (e.g. mAP@R on
            # large classes): search a CPU copy instead.
            if self._cpu_copy is None:
                warnings.warn(f'k={kk} exceeds what faiss-gpu selects '
                              f'({GPU_MAX_K}); such searches run on a CPU '
                              'copy of the index', stacklevel=5)
                self._cpu_copy = faiss.index_gpu_to_cpu(self.index)
            index = self._cpu_copy
        dist, ids = index.search(q[sel], kk)
        return self._to_scores(dist), ids

    def _search_index(self, q, k):
        """Approximate search: faiss's own scores, ties by index."""
        return stable_topk(lambda sel, kk: self._index_search(q, sel, kk), len(q), k,
                           self.ntotal)
