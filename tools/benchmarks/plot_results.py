"""Plot the benchmark JSON files of ``docs/results`` as PNGs beside them.

    python tools/benchmarks/plot_results.py [--dir docs/results]

Reads what is there (each benchmark's stdout saved as JSON) and writes:

- ``overhead.png`` from ``enn_overhead.json``: ENN / dense training-step
  ratio per model, setting and ortho mode;
- ``memory.png`` from ``local_memory.json``: peak training memory of ENN-ℓ
  per split and head, relative to end-to-end BP;
- ``pipeline.png`` from ``pipeline_speedup.json``: training throughput of
  sequential ENN-ℓ, BP and the pipeline, and each stage's busy fraction.
"""
import argparse
import json
import os.path as osp

import matplotlib

matplotlib.use('Agg')
import matplotlib.pyplot as plt  # noqa: E402


def load(folder, name):
    path = osp.join(folder, name)
    if not osp.exists(path):
        return None
    with open(path) as f:
        return json.load(f)


def overhead(records, out):
    modes = [m for m in ('materialize', 'enn', 'penalty', 'retract', 'penalty@10', 'retract@10')
             if any(r['mode'] == m for r in records)]
    groups = sorted({(r['model'], r['setting']) for r in records if r['mode'] in modes},
                    key=lambda g: (g[0], g[1] != 'small'))
    fig, ax = plt.subplots(figsize=(9, 4))
    width = 0.8 / len(modes)
    for i, mode in enumerate(modes):
        values = [next((r['ratio'] for r in records if (r['model'], r['setting']) == g
                        and r['mode'] == mode), 0) for g in groups]
        ax.bar([j + i * width for j in range(len(groups))], values, width, label=mode)
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
    ax.bar(range(len(records)), [r['memory_ratio'] for r in records], color='tab:green')
    for goal, name in ((0.45, 'per-stage goal'), (0.30, 'per-block goal')):
        ax.axhline(goal, ls='--', lw=0.8, color='gray')
        ax.text(len(records) - 0.5, goal, name, fontsize=7, va='bottom', ha='right')
    ax.set_xticks(range(len(records)))
    ax.set_xticklabels(labels, fontsize=6, rotation=60, ha='right')
    ax.set_ylabel('peak step memory, ENN-ℓ / BP')
    ax.set_title('ENN-ℓ training memory (ResNet-50, batch 16, 112 px)')
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    plt.close(fig)


def pipeline(record, out):
    fig, (a, b) = plt.subplots(1, 2, figsize=(9, 3.5))
    ips = record['images_per_s']
    names = list(ips)
    a.bar(names, [ips[n] for n in names], color='tab:blue')
    a.set_ylabel('images / s')
    a.set_title(f"{record['model']}, {record['stages']} stages × "
                f"{record['threads_per_worker']} thread(s)", fontsize=9)
    a.tick_params(axis='x', labelsize=7)
    busy = record.get('stage_busy') or []
    b.bar([f'stage {i}' for i in range(len(busy))], busy, color='tab:orange')
    b.set_ylim(0, 1)
    b.set_title('busy fraction per stage', fontsize=9)
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    plt.close(fig)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--dir', default='docs/results')
    args = parser.parse_args()
    done = []
    for name, fn, png in (('enn_overhead.json', overhead, 'overhead.png'),
                          ('local_memory.json', memory, 'memory.png'),
                          ('pipeline_speedup.json', pipeline, 'pipeline.png')):
        data = load(args.dir, name)
        if data is not None:
            fn(data, osp.join(args.dir, png))
            done.append(png)
    print('wrote', ', '.join(done) if done else 'nothing (no JSON found)')


if __name__ == '__main__':
    main()
