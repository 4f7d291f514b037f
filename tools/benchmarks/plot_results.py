"""Plot the benchmark JSON files of ``docs/results`` as PNGs beside them.

    python tools/benchmarks/plot_results.py [--dir docs/results]

Reads what is there (each benchmark's stdout saved as JSON) and writes:

- ``overhead.png`` from the ``enn_overhead*.json`` runs the docs' table
  reads (``report.overhead_records``): ENN / dense
  training-step ratio per model, setting and ortho mode, with the range of
  the paired rounds;
- ``memory.png`` from ``local_memory.json``: training memory of ENN-ℓ per
  split and head relative to end-to-end BP, both ways (step growth and
  whole-process peak), with the range of the paired samples;
- ``pipeline.png`` from ``pipeline_speedup{,_dense}.json``: training
  throughput of sequential ENN-ℓ, BP (one process and data-parallel) and the
  pipeline against BP on the same cores, and each stage's busy time per step;
- ``eclip_union.png`` from ``eclip_union.json``: i2t and t2i Recall@1 of
  every row, seen and unseen classes, mean and the range of the seeds.
"""
import argparse
import json
import os.path as osp

import matplotlib

matplotlib.use('Agg')
import matplotlib.pyplot as plt  # noqa: E402

from report import is_enn_row, overhead_records, union_row_name  # noqa: E402  (this folder is on sys.path)


def load(folder, name):
    path = osp.join(folder, name)
    if not osp.exists(path):
        return None
    with open(path) as f:
        return json.load(f)


def overhead(records, out):
    modes = [m for m in ('materialize', 'enn', 'penalty', 'penalty_probes1', 'penalty_probes4',
                         'retract', 'penalty@10', 'retract@10')
             if any(r['mode'] == m for r in records)]
    groups = sorted({(r['model'], r['setting']) for r in records if r['mode'] in modes},
                    key=lambda g: (g[0], g[1] != 'small'))
    fig, ax = plt.subplots(figsize=(9, 4))
    width = 0.8 / len(modes)
    for i, mode in enumerate(modes):
        found = [next((r for r in records if (r['model'], r['setting']) == g
                       and r['mode'] == mode), None) for g in groups]
        values = [r['ratio'] if r else 0 for r in found]
        err = [[r['ratio'] - r['ratio_range'][0] if r else 0 for r in found],
               [r['ratio_range'][1] - r['ratio'] if r else 0 for r in found]]
        ax.bar([j + i * width for j in range(len(groups))], values, width, label=mode,
               yerr=err, capsize=2, error_kw=dict(lw=0.6))
    ax.axhline(1.0, color='k', lw=0.8)
    ax.set_xticks([j + 0.4 - width / 2 for j in range(len(groups))])
    ax.set_xticklabels([f'{m}\n{s}' for m, s in groups])
    ax.set_ylabel('ENN step / dense step')
    ax.set_title('Training-step overhead of ENN (same run, AdamW)')
    ax.legend(fontsize=8, ncol=3)
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    plt.close(fig)


def memory(records, out):
    labels = [f"{r['model']}\n{r['num_classes']} cls, {r['split']}"
              f"{', frozen' if 'frozen' in r.get('local_heads', '') else ''}" for r in records]
    fig, ax = plt.subplots(figsize=(max(8, 0.7 * len(records)), 4))
    for off, key, color, name in ((-0.2, 'memory_ratio', 'tab:green', 'step growth'),
                                  (0.2, 'rss_ratio', 'tab:blue', 'whole-process peak')):
        values = [r[key] for r in records]
        err = [[r[key] - r[key + '_range'][0] for r in records],
               [r[key + '_range'][1] - r[key] for r in records]]
        ax.bar([i + off for i in range(len(records))], values, 0.4, color=color, label=name,
               yerr=err, capsize=2, error_kw=dict(lw=0.6))
    ax.legend(fontsize=7)
    for goal, name in ((0.45, 'per-stage goal'), (0.30, 'per-block goal')):
        ax.axhline(goal, ls='--', lw=0.8, color='gray')
        ax.text(len(records) - 0.5, goal, name, fontsize=7, va='bottom', ha='right')
    ax.set_xticks(range(len(records)))
    ax.set_xticklabels(labels, fontsize=6, rotation=60, ha='right')
    ax.set_ylabel('ENN-ℓ / BP (median of paired samples)')
    ax.set_title('ENN-ℓ training memory (ResNet-50, batch 16, 112 px)')
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    plt.close(fig)


PIPELINE_RUNS = (('pipeline_speedup.json', 'ENN, penalty every step'),
                 ('pipeline_speedup_dense.json', 'dense'))


def pipeline(records, out):
    """``records``: ``[(label, record), ...]`` of pipeline_speedup.py runs."""
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.8))
    names = ['sequential', 'bp_equal_cores', 'bp_ddp', 'pipeline']
    width = 0.8 / len(names)
    for i, name in enumerate(names):
        ratios = [r['images_per_s'].get(name, 0) / r['images_per_s']['bp_equal_cores']
                  for _, r in records]
        a.bar([j + (i - 1.5) * width for j in range(len(records))], ratios, width, label=name)
    a.axhline(1.07, ls='--', lw=0.8, color='gray')
    a.text(len(records) - 0.6, 1.07, 'goal 1.07', fontsize=7, va='bottom', ha='right')
    a.set_xticks(range(len(records)))
    a.set_xticklabels([label for label, _ in records], fontsize=7)
    a.set_ylabel('images/s ÷ BP on the same 2 cores')
    a.set_title('ResNet-50, batch 16, 112 px, 2 stages × 1 thread', fontsize=9)
    a.legend(fontsize=6)
    for j, (label, r) in enumerate(records):
        steps = r.get('stage_step_s') or []
        for s_, t in enumerate(steps):
            b.bar(j + (s_ - 0.5) * 0.35, t, 0.35, color=('tab:blue', 'tab:orange')[s_ % 2],
                  label=f'stage {s_}' if j == 0 else None)
    b.set_xticks(range(len(records)))
    b.set_xticklabels([label for label, _ in records], fontsize=7)
    b.set_ylabel('busy s per step')
    b.set_title('stage balance (slowest stage sets the pace)', fontsize=9)
    b.legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    plt.close(fig)


def eclip_union(doc, out):
    rows = doc['rows']
    panels = [('t2i_r1', 'seen'), ('t2i_r1', 'unseen'), ('i2t_r1', 'seen'), ('i2t_r1', 'unseen')]
    fig, axes = plt.subplots(1, 4, figsize=(15, 0.45 * len(rows) + 1.6), sharey=True)
    names = [union_row_name(r) for r in rows]
    for ax, (key, split) in zip(axes, panels):
        vals = [r[key][split] for r in rows]
        mean = [sum(v) / len(v) for v in vals]
        err = [[m - min(v) for m, v in zip(mean, vals)], [max(v) - m for m, v in zip(mean, vals)]]
        colors = ['tab:orange' if is_enn_row(r) else 'tab:gray' for r in rows]
        ax.barh(range(len(rows)), mean, xerr=err, color=colors, capsize=3)
        ax.set_xlim(max(0, min(min(v) for v in vals) - 10), 100)
        ax.set_title(f"{key.split('_')[0]} Recall@1, {split} classes")
        ax.grid(axis='x', alpha=0.3)
    axes[0].set_yticks(range(len(rows)), names)
    axes[0].set_ylabel('image tower | text tower')
    axes[0].invert_yaxis()
    fig.suptitle('Image<->text retrieval, Fashion-MNIST + MNIST (20 classes), held-out '
                 'captions; mean and range of 3 seeds (orange: ENN somewhere)', fontsize=10)
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    plt.close(fig)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--dir', default='docs/results')
    args = parser.parse_args()
    done = []
    records = overhead_records(args.dir)  # as the docs' table
    if records:
        overhead(records, osp.join(args.dir, 'overhead.png'))
        done.append('overhead.png')
    data = load(args.dir, 'local_memory.json')
    if data is not None:
        memory(data, osp.join(args.dir, 'memory.png'))
        done.append('memory.png')
    runs = [(label, load(args.dir, name)) for name, label in PIPELINE_RUNS]
    runs = [(label, r) for label, r in runs if r is not None and r.get('stage_step_s')]
    if runs:
        pipeline(runs, osp.join(args.dir, 'pipeline.png'))
        done.append('pipeline.png')
    union = load(args.dir, 'eclip_union.json')
    if union is not None and union.get('rows'):
        eclip_union(union, osp.join(args.dir, 'eclip_union.png'))
        done.append('eclip_union.png')
    print('wrote', ', '.join(done) if done else 'nothing (no JSON found)')


if __name__ == '__main__':
    main()
