"""Benchmark: our faiss retrieval evaluator against the alternatives a user would pick.

    OMP_NUM_THREADS=1 python tools/benchmarks/retrieval_eval.py [--threads 1]
        [--galleries 5000 20000 100000 1000000] [--queries 1000] [--dim 128]
        [--stream-10m]

Synthetic class-clustered embeddings (``--classes`` Gaussian clusters; each
query and gallery item is its class centre plus noise), relevance = same
class. For each gallery size, in a fresh subprocess each (so peak memory is
clean):

- MMPretrain: ``ImageToImageRetriever.matching`` (cosine) on query batches
  of ``--batch`` as its predict step does, then ``RetrievalRecall(topk=(1,
  5, 10))`` and ``RetrievalAveragePrecision(topk=10)`` ``process`` /
  ``compute_metrics`` with InShop-style ground truth (the relevant gallery
  indices of each query);
- torch, chunked: what a careful user writes by hand: L2-normalise, then for
  each ``--chunk`` gallery rows a matmul and a top-10, merged into a running
  top-10 (memory bounded by the chunk);
- raw faiss: L2-normalise, ``faiss.IndexFlatIP``, ``add``, ``search(k=10)``:
  the search alone (index building included);
- ours: ``enn_mm.retrieval_metrics`` (exact faiss, input checks, the rank
  rule: candidates re-scored in float64, ties by gallery index;
  Recall@1/5/10 and mAP@10 computed).

The time of the two hand-written paths covers the search only; their metrics
are computed afterwards, untimed, by the same formulas
(:func:`enn_mm.evaluation.functional.rank_metrics`), so that the four paths'
numbers can be compared. Each timing is repeated ``--repeats`` times in
fresh processes, the methods interleaved; the record gives the median and
range of each, and each ratio is the median of the per-repeat ratios, with
their range. Memory is the call's peak resident memory above the process's
level just before it (inputs included in none), read from ``VmHWM`` after
resetting it. MMPretrain's path is skipped where a linear extrapolation from
the previous size says it would exceed ``--max-seconds`` or ``--max-gb``.
Prints one JSON document: a list of records ``{"gallery", "seconds"
{method: median}, "seconds_range", "ratio_vs_faiss" (ours / raw faiss),
"ratio_vs_torch" (ours / torch), "speedup" (MMPretrain / ours),
"memory_ratio" (ours / MMPretrain), "max_abs_diff" (over the four metrics
and every pair of methods), ...}``.
"""
import argparse
import json
import os
import os.path as osp
import statistics
import subprocess
import sys
import tempfile
import time

from _common import machine_info, median_range, paired_ratio, status_kb

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
METRICS = ('Recall@1', 'Recall@5', 'Recall@10', 'mAP@10')


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--galleries', type=int, nargs='+',
                   default=[5000, 20000, 100000, 1000000])
    p.add_argument('--queries', type=int, default=1000)
    p.add_argument('--dim', type=int, default=128)
    p.add_argument('--classes', type=int, default=100)
    p.add_argument('--noise', type=float, default=2.0,
                   help='noise std relative to the class centres (std 1)')
    p.add_argument('--batch', type=int, default=32,
                   help="MMPretrain path: queries per predict batch")
    p.add_argument('--threads', type=int, default=1)
    p.add_argument('--repeats', type=int, default=3,
                   help='fresh-process repeats of every timing (MMPretrain: 1)')
    p.add_argument('--chunk', type=int, default=16384,
                   help='torch path: gallery rows per matmul')
    p.add_argument('--max-seconds', type=float, default=180)
    p.add_argument('--max-gb', type=float, default=6)
    p.add_argument('--mmpretrain-max-gallery', type=int, default=100000,
                   help='never run MMPretrain above this gallery size')
    p.add_argument('--stream-10m', action='store_true',
                   help='also run ours on a 10M gallery streamed from a .npy '
                   'memmap on disk (needs ~5.2 GB of disk at dim 128)')
    p.add_argument('--tmpdir', default=None, help='where the 10M memmap goes')
    p.add_argument('--worker', nargs=2, metavar=('METHOD', 'GALLERY'),
                   help=argparse.SUPPRESS)
    p.add_argument('--gallery-file', help=argparse.SUPPRESS)
    return p.parse_args(argv)


# ------------------------------------------------------------- the worker
def rss_now():
    with open('/proc/self/statm') as f:
        return int(f.read().split()[1]) * os.sysconf('SC_PAGE_SIZE')


def reset_peak():
    """Reset VmHWM (Linux >= 4.0); False where not allowed."""
    try:
        with open('/proc/self/clear_refs', 'w') as f:
            f.write('5')
        return True
    except OSError:
        return False


def peak_rss():
    return status_kb('VmHWM') * 1024


def make_data(args, n_gallery, seed=0):
    """Class-clustered float32 embeddings, generated in place (lean)."""
    import numpy as np
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((args.classes, args.dim), dtype=np.float32)
    q_labels = rng.integers(0, args.classes, args.queries)
    queries = rng.standard_normal((args.queries, args.dim), dtype=np.float32)
    queries *= args.noise
    queries += centres[q_labels]
    g_labels = rng.integers(0, args.classes, n_gallery)
    gallery = np.empty((n_gallery, args.dim), np.float32)
    for s in range(0, n_gallery, 1 << 18):  # chunked: no full-size temporaries
        e = min(s + (1 << 18), n_gallery)
        gallery[s:e] = rng.standard_normal((e - s, args.dim), dtype=np.float32)
        gallery[s:e] *= args.noise
        gallery[s:e] += centres[g_labels[s:e]]
    return queries, q_labels, gallery, g_labels


def run_mmpretrain(queries, q_labels, gallery, g_labels, batch):
    """MMPretrain's path: retriever matching + its two retrieval metrics."""
    import numpy as np
    import torch
    from mmpretrain.evaluation import RetrievalAveragePrecision, RetrievalRecall
    from mmpretrain.models import ImageToImageRetriever
    from mmpretrain.structures import DataSample

    retriever = ImageToImageRetriever(image_encoder=torch.nn.Linear(1, 1),
                                      prototype=torch.from_numpy(gallery))
    retriever.prepare_prototype()
    recall = RetrievalRecall(topk=(1, 5, 10))
    ap = RetrievalAveragePrecision(topk=10)
    order = np.argsort(g_labels, kind='stable')
    gt_of = {c: order[np.searchsorted(g_labels[order], c):
                      np.searchsorted(g_labels[order], c, 'right')].tolist()
             for c in np.unique(q_labels)}
    q = torch.from_numpy(queries)
    with torch.no_grad():
        for s in range(0, len(q), batch):
            result = retriever.matching(q[s:s + batch])
            samples = [DataSample().set_gt_label(gt_of[c])
                       for c in q_labels[s:s + batch]]
            samples = retriever._get_predictions(result, samples)
            samples = [d.to_dict() for d in samples]  # as mmengine's Evaluator
            recall.process(None, samples)
            ap.process(None, samples)
            del result, samples
    out = recall.compute_metrics(recall.results)
    out.update(ap.compute_metrics(ap.results))
    per_query = {
        'Recall@1': [r[0].item() for r in recall.results],
        'Recall@5': [r[1].item() for r in recall.results],
        'Recall@10': [r[2].item() for r in recall.results],
        'mAP@10': [float(a) for a in ap.results],
    }
    return out, per_query


def run_ours(queries, q_labels, gallery, g_labels):
    import enn_mm.evaluation as ev
    out = ev.retrieval_metrics(queries, gallery, q_labels, g_labels,
                               topk=(1, 5, 10), metric_names=('Recall', 'mAP'),
                               return_per_query=True)
    per = out.pop('per_query')
    per_query = {k: (100.0 * per[k]).tolist() for k in METRICS}
    return out, per_query


def labels_metrics(ids, q_labels, g_labels):
    """Recall@1/5/10 and mAP@10 (percent) of rankings ``ids`` by label."""
    import numpy as np

    from enn_mm.evaluation.functional import rank_metrics
    rel = g_labels[ids] == q_labels[:, None]
    num_relevant = np.bincount(g_labels, minlength=q_labels.max() + 1)[q_labels]
    per = rank_metrics(rel, num_relevant, (1, 5, 10), ('Recall', 'mAP'))
    per_query = {k: (100.0 * per[k]).tolist() for k in METRICS}
    return {k: float(np.mean(v)) for k, v in per_query.items()}, per_query


def search_torch(queries, gallery, chunk, k=10):
    """Normalise, then matmul + top-k per gallery chunk, merged as it goes."""
    import torch
    import torch.nn.functional as F
    q = F.normalize(torch.from_numpy(queries), dim=1)
    best_s = best_i = None
    for s in range(0, len(gallery), chunk):
        g = F.normalize(torch.from_numpy(gallery[s:s + chunk]), dim=1)
        scores, ids = (q @ g.T).topk(min(k, len(g)), dim=1)
        ids += s
        if best_s is not None:
            scores, pos = torch.cat([best_s, scores], 1).topk(k, dim=1)
            ids = torch.cat([best_i, ids], 1).gather(1, pos)
        best_s, best_i = scores, ids
    return best_i.numpy()


def search_faiss(queries, gallery, k=10):
    """Normalise, IndexFlatIP, add, search: faiss's exact search alone."""
    import faiss
    q, g = queries.copy(), gallery.copy()
    faiss.normalize_L2(q)
    faiss.normalize_L2(g)
    index = faiss.IndexFlatIP(g.shape[1])
    index.add(g)
    return index.search(q, k)[1]


def worker(args):
    import faiss
    import numpy as np
    import torch
    torch.set_num_threads(args.threads)
    faiss.omp_set_num_threads(args.threads)
    import mmpretrain.models  # noqa: F401

    import enn_mm.evaluation  # noqa: F401  (imports before the baseline)
    method, n = args.worker[0], int(args.worker[1])
    if args.gallery_file:  # streamed: the gallery stays on disk
        queries, q_labels, _, _ = make_data(args, 0)
        gallery = args.gallery_file
        g_labels = np.load(args.gallery_file + '.labels.npy')
    else:
        queries, q_labels, gallery, g_labels = make_data(args, n)
    base = rss_now()
    exact_peak = reset_peak()
    start = time.perf_counter()
    ids = None
    if method == 'mmpretrain':
        metrics, per_query = run_mmpretrain(queries, q_labels, gallery, g_labels,
                                            args.batch)
    elif method == 'torch':
        ids = search_torch(queries, gallery, args.chunk)
    elif method == 'faiss':
        ids = search_faiss(queries, gallery)
    else:
        metrics, per_query = run_ours(queries, q_labels, gallery, g_labels)
    seconds = time.perf_counter() - start
    peak = peak_rss()
    if ids is not None:  # untimed: the same formulas, for comparison
        metrics, per_query = labels_metrics(ids, q_labels, g_labels)
    json.dump(dict(seconds=seconds, peak_bytes=peak, base_bytes=base,
                   extra_bytes=max(peak - base, 0), peak_reset=exact_peak,
                   metrics={k: float(metrics[k]) for k in METRICS},
                   per_query=per_query), sys.stdout)


# -------------------------------------------------------------- the driver
def spawn(args, method, n, gallery_file=None):
    cmd = [sys.executable, osp.abspath(__file__), '--worker', method, str(n),
           '--queries', str(args.queries), '--dim', str(args.dim),
           '--classes', str(args.classes), '--noise', str(args.noise),
           '--batch', str(args.batch), '--threads', str(args.threads),
           '--chunk', str(args.chunk)]
    if gallery_file:
        cmd += ['--gallery-file', gallery_file]
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads),
               MKL_NUM_THREADS=str(args.threads),
               OPENBLAS_NUM_THREADS=str(args.threads),
               PYTHONPATH=REPO + os.pathsep + os.environ.get('PYTHONPATH', ''))
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if proc.returncode:
        raise RuntimeError(f'{method} at {n} failed:\n{proc.stderr[-3000:]}')
    return json.loads(proc.stdout.strip().splitlines()[-1])


def write_stream_gallery(args, n, folder):
    """A 10M gallery as a .npy memmap, written in chunks."""
    import numpy as np
    path = osp.join(folder, f'gallery_{n}.npy')
    mm = np.lib.format.open_memmap(path, 'w+', np.float32, (n, args.dim))
    rng = np.random.default_rng(0)
    centres = rng.standard_normal((args.classes, args.dim), dtype=np.float32)
    labels = np.random.default_rng(1).integers(0, args.classes, n)
    for s in range(0, n, 1 << 20):
        e = min(s + (1 << 20), n)
        block = rng.standard_normal((e - s, args.dim), dtype=np.float32)
        block *= args.noise
        block += centres[labels[s:e]]
        mm[s:e] = block
    mm.flush()
    del mm
    np.save(path + '.labels.npy', labels)
    return path


def gb(x):
    return round(x / 2**30, 3)


def max_diff(a, b):
    """Largest difference between two runs' metrics, averaged and per query."""
    return (max(abs(a['metrics'][k] - b['metrics'][k]) for k in METRICS),
            max(max(abs(x - y) for x, y in zip(a['per_query'][k], b['per_query'][k]))
                for k in METRICS))


def main():
    args = parse_args()
    if args.worker:
        return worker(args)
    machine = machine_info()
    records = []
    theirs_prev = None
    fast = ('faiss', 'torch', 'ours')
    for n in args.galleries:
        runs = {m: [] for m in fast}
        for _ in range(args.repeats):  # interleaved: drift hits all alike
            for m in fast:
                runs[m].append(spawn(args, m, n))
        secs = {m: [r['seconds'] for r in runs[m]] for m in fast}
        rec = dict(gallery=n, queries=args.queries, dim=args.dim, threads=args.threads,
                   repeats=args.repeats, chunk=args.chunk, machine=machine, seconds={},
                   seconds_range={})
        for m in fast:
            rec['seconds'][m], rec['seconds_range'][m] = median_range(secs[m])
        for other in ('faiss', 'torch'):
            ratio, rng = paired_ratio(secs['ours'], secs[other])
            rec[f'ratio_vs_{other}'], rec[f'ratio_vs_{other}_range'] = ratio, rng
        ours = runs['ours'][0]
        rec.update(ours_extra_gb=gb(statistics.median(r['extra_bytes'] for r in runs['ours'])),
                   ours_peak_rss_gb=gb(statistics.median(r['peak_bytes'] for r in runs['ours'])),
                   torch_extra_gb=gb(statistics.median(r['extra_bytes'] for r in runs['torch'])),
                   faiss_extra_gb=gb(statistics.median(r['extra_bytes'] for r in runs['faiss'])),
                   metrics=ours['metrics'])
        compared = [runs['faiss'][0], runs['torch'][0]]
        skip = None
        if n > args.mmpretrain_max_gallery:
            skip = (f'MMPretrain path not run above {args.mmpretrain_max_gallery} '
                    '(needs >= 49 GB at 1M)')
        elif theirs_prev is not None:
            scale = n / theirs_prev[0]
            est_s = theirs_prev[1]['seconds'] * scale
            prev = theirs_prev[1]
            est_gb = (prev['base_bytes'] + prev['extra_bytes'] * scale) / 2**30
            if est_s > args.max_seconds or est_gb > args.max_gb:
                skip = (f'MMPretrain path skipped: linear extrapolation from '
                        f'{theirs_prev[0]} gives ~{est_s:.0f} s and ~{est_gb:.1f} GB '
                        f'(limits {args.max_seconds:.0f} s, {args.max_gb:.0f} GB)')
                rec['mmpretrain_estimated_seconds'] = round(est_s, 1)
                rec['mmpretrain_estimated_peak_gb'] = round(est_gb, 2)
        if skip is None:
            theirs = spawn(args, 'mmpretrain', n)
            theirs_prev = (n, theirs)
            compared.append(theirs)
            rec['seconds']['mmpretrain'] = round(theirs['seconds'], 3)
            rec.update(
                mmpretrain_extra_gb=gb(theirs['extra_bytes']),
                mmpretrain_peak_rss_gb=gb(theirs['peak_bytes']),
                speedup=round(theirs['seconds'] / rec['seconds']['ours'], 1),
                memory_ratio=round(max(ours['extra_bytes'], 1) /
                                   max(theirs['extra_bytes'], 1), 5))
        else:
            rec.update(skipped=skip, speedup=None, memory_ratio=None)
        diffs = [max_diff(ours, other) for other in compared]
        rec['max_abs_diff'] = max(d[0] for d in diffs)
        rec['max_abs_diff_per_query'] = max(d[1] for d in diffs)
        rec['compared'] = ['faiss', 'torch'] + (['mmpretrain'] if skip is None else [])
        records.append(rec)
        print(f'[gallery {n}] {json.dumps(rec)}', file=sys.stderr, flush=True)
    if args.stream_10m:
        n = 10_000_000
        folder = tempfile.mkdtemp(dir=args.tmpdir)
        try:
            path = write_stream_gallery(args, n, folder)
            ours = spawn(args, 'ours', n, gallery_file=path)
        finally:
            for f in os.listdir(folder):
                os.remove(osp.join(folder, f))
            os.rmdir(folder)
        records.append(dict(
            gallery=n, queries=args.queries, dim=args.dim, threads=args.threads,
            machine=machine, streamed_from_disk=True, repeats=1,
            seconds=dict(ours=round(ours['seconds'], 3)),
            ours_extra_gb=gb(ours['extra_bytes']),
            ours_peak_rss_gb=gb(ours['peak_bytes']), metrics=ours['metrics'],
            skipped='MMPretrain path not run (needs hundreds of GB)',
            speedup=None, memory_ratio=None, max_abs_diff=None))
    json.dump(records, sys.stdout, indent=1)
    print()


if __name__ == '__main__':
    main()
