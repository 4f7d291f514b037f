"""Benchmark: faiss retrieval metrics vs MMPretrain's retrieval path.

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
- ours: ``enn_mm.retrieval_metrics`` (exact faiss, Recall@1/5/10, mAP@10).

Time is wall time of the evaluation call; memory is its peak resident
memory above the process's level just before the call (inputs included in
neither), read from ``VmHWM`` after resetting it. MMPretrain's path is
skipped where a linear extrapolation from the previous size says it would
exceed ``--max-seconds`` or ``--max-gb``. Prints one JSON document: a list
of records ``{"gallery", "speedup" (their time / ours), "memory_ratio"
(ours / theirs), "max_abs_diff" (over the four metrics), ...}``.
"""
import argparse
import json
import os
import os.path as osp
import subprocess
import sys
import tempfile
import time

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
    with open('/proc/self/status') as f:
        for line in f:
            if line.startswith('VmHWM:'):
                return int(line.split()[1]) * 1024
    raise RuntimeError('no VmHWM in /proc/self/status')


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


def worker(args):
    import numpy as np
    import faiss
    import torch
    torch.set_num_threads(args.threads)
    faiss.omp_set_num_threads(args.threads)
    import enn_mm.evaluation  # noqa: F401  (imports before the baseline)
    import mmpretrain.models  # noqa: F401
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
    if method == 'mmpretrain':
        metrics, per_query = run_mmpretrain(queries, q_labels, gallery, g_labels,
                                            args.batch)
    else:
        metrics, per_query = run_ours(queries, q_labels, gallery, g_labels)
    seconds = time.perf_counter() - start
    peak = peak_rss()
    json.dump(dict(seconds=seconds, peak_bytes=peak, base_bytes=base,
                   extra_bytes=max(peak - base, 0), peak_reset=exact_peak,
                   metrics={k: float(metrics[k]) for k in METRICS},
                   per_query=per_query), sys.stdout)


# -------------------------------------------------------------- the driver
def spawn(args, method, n, gallery_file=None):
    cmd = [sys.executable, osp.abspath(__file__), '--worker', method, str(n),
           '--queries', str(args.queries), '--dim', str(args.dim),
           '--classes', str(args.classes), '--noise', str(args.noise),
           '--batch', str(args.batch), '--threads', str(args.threads)]
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


def main():
    args = parse_args()
    if args.worker:
        return worker(args)
    records = []
    theirs_prev = None
    for n in args.galleries:
        ours = spawn(args, 'ours', n)
        rec = dict(gallery=n, queries=args.queries, dim=args.dim,
                   threads=args.threads, ours_seconds=round(ours['seconds'], 4),
                   ours_extra_gb=gb(ours['extra_bytes']),
                   ours_peak_rss_gb=gb(ours['peak_bytes']),
                   ours_metrics=ours['metrics'])
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
            diffs = [abs(ours['metrics'][k] - theirs['metrics'][k]) for k in METRICS]
            per_diff = [max(abs(a - b) for a, b in zip(ours['per_query'][k],
                                                        theirs['per_query'][k]))
                        for k in METRICS]
            rec.update(
                mmpretrain_seconds=round(theirs['seconds'], 3),
                mmpretrain_extra_gb=gb(theirs['extra_bytes']),
                mmpretrain_peak_rss_gb=gb(theirs['peak_bytes']),
                mmpretrain_metrics=theirs['metrics'],
                speedup=round(theirs['seconds'] / ours['seconds'], 1),
                memory_ratio=round(max(ours['extra_bytes'], 1) /
                                   max(theirs['extra_bytes'], 1), 5),
                max_abs_diff=max(diffs),
                max_abs_diff_per_query=max(per_diff))
        else:
            rec.update(skipped=skip, speedup=None, memory_ratio=None,
                       max_abs_diff=None)
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
            streamed_from_disk=True, ours_seconds=round(ours['seconds'], 3),
            ours_extra_gb=gb(ours['extra_bytes']),
            ours_peak_rss_gb=gb(ours['peak_bytes']), ours_metrics=ours['metrics'],
            skipped='MMPretrain path not run (needs hundreds of GB)',
            speedup=None, memory_ratio=None, max_abs_diff=None))
    json.dump(records, sys.stdout, indent=1)
    print()


if __name__ == '__main__':
    main()
