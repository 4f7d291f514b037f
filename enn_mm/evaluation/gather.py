"""Gather per-rank feature batches without the distributed sampler's padding.

mmengine's ``DefaultSampler`` (``round_up=True``) pads the dataset with
repeats of its first samples so every rank gets the same number of them,
and ``collect_results`` drops the padding by truncating an interleaved list
of *per-sample* results to the dataset size. The retrieval metrics keep one
entry per *batch* (an array of features), so truncation would be wrong;
instead every entry carries the dataset indices of its samples and
:func:`merge_parts` keeps each index once. That is correct for any sampler,
shuffled or not, and checks that no sample is missing.
"""
from typing import List, Optional

import numpy as np
from mmengine.dist import broadcast_object_list, collect_results, is_main_process

# collect_results(size=...) truncates; the entries here are batches, so ask
# for all of them and deduplicate by sample index instead.
_ALL = 2**62


def collect_parts(parts: List[dict], device: str = 'cpu',
                  tmpdir: Optional[str] = None) -> Optional[List[dict]]:
    """All ranks' ``parts`` on the main process (None on the others).

    A collective call: every rank must call it, in the same order.

    Args:
        parts (list): This rank's entries (picklable; the metrics pass dicts
            or ``(tag, dict)`` pairs).
        device (str): ``'cpu'`` (pickled through a shared folder) or
            ``'gpu'``, as for mmengine's ``collect_results``. Defaults to
            'cpu'.
        tmpdir (str, optional): The shared folder for ``'cpu'`` (ignored
            for ``'gpu'``). Defaults to None (mmengine creates one).

    Returns:
        list | None: On the main process, the entries of all ranks,
        interleaved by rank (``collect_results``'s order), none dropped;
        None on the other ranks.
    """
    return collect_results(parts, _ALL, device,
                           **({'tmpdir': tmpdir} if device == 'cpu' else {}))


def merge_parts(parts: List[dict], size: Optional[int] = None,
                name: str = 'query', key: str = 'idx',
                contiguous: bool = True) -> dict:
    """Concatenate batch entries, keep each sample once, sort by index.

    Args:
        parts (list[dict]): Entries ``{key: (B,) ints, field: (B, ...) array
            or list of B objects, ...}`` from any number of ranks, in any order.
        size (int, optional): Expected number of distinct samples (the
            dataset length); a mismatch is an error naming both numbers.
        name (str): What the samples are, for error messages.
        key (str): The field holding each sample's dataset index.
        contiguous (bool): Require the indices to be exactly ``0..size-1`` (so
            position == dataset index, which index-based ground truth needs).

    Returns:
        dict: The same fields, one row per distinct index, sorted by it.
    """
    if not parts:
        raise ValueError(f'no {name} features were collected: the {name} '
                         'dataloader is empty or the model produced nothing')
    idx = np.concatenate([np.asarray(p[key], dtype=np.int64).ravel() for p in parts])
    uniq, first = np.unique(idx, return_index=True)
    if size is not None and len(uniq) != size:
        raise RuntimeError(
            f'gathered {len(uniq)} distinct {name} samples but the dataset has '
            f'{size}; every sample must reach the metric exactly once (a '
            'sampler that drops samples, or missing/duplicate sample indices)')
    if contiguous and len(uniq) and (uniq[0] != 0 or uniq[-1] != len(uniq) - 1):
        raise RuntimeError(f'{name} sample indices are not 0..{len(uniq) - 1}: '
                           f'got {uniq[0]}..{uniq[-1]}')
    out = {key: uniq}
    identity = len(first) == len(idx) and (np.diff(first) == 1).all()
    for field in parts[0]:
        if field == key:
            continue
        values = [p[field] for p in parts]
        if isinstance(values[0], np.ndarray):
            merged = np.concatenate(values)
            out[field] = merged if identity else merged[first]
        else:
            flat = [v for batch in values for v in batch]
            out[field] = [flat[i] for i in first]
    return out


def compute_on_main(compute, prefix: Optional[str] = None) -> dict:
    """Run ``compute()`` on rank 0 only, prefix its keys, broadcast the dict.

    As mmengine's ``BaseMetric.evaluate`` does for ``compute_metrics``; the
    metrics here gather their own parts, so they need the same last step.
    A collective call: every rank must call it.

    Args:
        compute (Callable[[], dict]): Computes the metrics; called on the
            main process only.
        prefix (str, optional): Each key becomes ``'{prefix}/{key}'``.
            Defaults to None (keys unchanged, as for ``''``).

    Returns:
        dict: The (prefixed) metrics, on every rank.
    """
    result = [None]
    if is_main_process():
        metrics = compute()
        if prefix:
            metrics = {f'{prefix}/{k}': v for k, v in metrics.items()}
        result = [metrics]
    broadcast_object_list(result)
    return result[0]
