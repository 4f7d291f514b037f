"""Render the results tables of the docs from the saved benchmark JSON.

    python tools/benchmarks/report.py           # rewrite the rendered sections in place
    python tools/benchmarks/report.py --check   # exit 1 if a page differs from its JSON

Each rendered section of ``README.md``, ``docs/results.md``,
``docs/local_learning.md``, ``docs/retrieval.md`` and ``docs/eclip.md`` sits
between two markers::

    <!-- report:NAME -->
    ...generated text...
    <!-- /report:NAME -->

and is produced by the function of :data:`SECTIONS` called ``NAME`` from the
JSON files in ``docs/results/`` alone, so a figure in a table cannot drift
from its data: ``tests/tools/test_benchmarks.py`` renders every page and compares
it with the committed text. Text outside the markers is left as written.

Rendered prose (sentences with numbers in them, goal verdicts) is written in
``docs/templates/<section>.md.j2`` and filled in from the JSON; the goals
themselves (threshold and what they measure) are data, ``goals.json``.
"""
import argparse
import functools
import glob
import json
import os.path as osp
import re
import statistics
import sys

BENCH = osp.dirname(osp.abspath(__file__))
REPO = osp.dirname(osp.dirname(BENCH))
RESULTS = osp.join(REPO, 'docs', 'results')
PAGES = ('README.md', 'docs/results.md', 'docs/local_learning.md', 'docs/retrieval.md',
         'docs/eclip.md')
MARK = re.compile(r'(<!-- report:([\w-]+) -->\n)(.*?)(<!-- /report:\2 -->)', re.S)


def load(name: str):
    with open(osp.join(RESULTS, name)) as f:
        return json.load(f)


def table(header, rows) -> str:
    lines = ['| ' + ' | '.join(header) + ' |', '|' + '---|' * len(header)]
    lines += ['| ' + ' | '.join(str(c) for c in row) + ' |' for row in rows]
    return '\n'.join(lines) + '\n'


def f2(x) -> str:
    return f'{x:.2f}'


def pm(d) -> str:
    """``mean ± std`` of a ``{'mean', 'std'}`` record."""
    return f"{d['mean']:.2f} ± {d['std']:.2f}"


def rng(r, digits=2) -> str:
    return f'{r[0]:.{digits}f}–{r[1]:.{digits}f}'


def ratio(value, span, digits=2) -> str:
    """A median ratio with its range over the paired repeats."""
    return f'{value:.{digits}f} ({rng(span, digits)})'


# ------------------------------------------------------------- prose and goals
# The sentences of the rendered prose live in docs/templates/<section>.md.j2
# (Jinja2, which torch brings), the goals they judge in goals.json: a goal is
# a threshold ('le' or 'ge', as written in the docs) and what it measures.
TEMPLATES = osp.join(REPO, 'docs', 'templates')
with open(osp.join(BENCH, 'goals.json')) as _f:
    GOALS = json.load(_f)


def goal(name: str) -> str:
    """The threshold of goal ``name`` as the docs write it."""
    return GOALS[name].get('le', GOALS[name].get('ge'))


def verdict(name: str, value: float, emphasis: bool = True) -> str:
    """Whether ``value`` meets goal ``name``: 'met' or 'not met' (bold
    with ``emphasis``)."""
    g = GOALS[name]
    ok = value <= float(g['le']) if 'le' in g else value >= float(g['ge'])
    return 'met' if ok else ('**not met**' if emphasis else 'not met')


@functools.lru_cache(maxsize=None)
def _templates():
    import jinja2
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES), trim_blocks=True,
                             keep_trailing_newline=True, undefined=jinja2.StrictUndefined)
    env.filters.update(f2=f2, pm=pm)
    env.globals.update(goal=goal, verdict=verdict)
    return env


def render(name: str, **context) -> str:
    """Render ``docs/templates/<name>.md.j2`` with ``context``."""
    return _templates().get_template(f'{name}.md.j2').render(**context)


# --------------------------------------------------------------------- sections
SECTIONS = {}


def section(fn):
    SECTIONS[fn.__name__.replace('_', '-')] = fn
    return fn


# ---------------------------------------------- accuracy (accuracy.py, accuracy.json)
ACCURACY_ROWS = [  # method -> what it is
    ('bp_dense', 'dense, end-to-end BP (baseline)'),
    ('bp_enn', 'ENN, penalty γ = 1e-5 (paper)'),
    ('bp_enn_retract', 'ENN, QR retraction every step'),
    ('local_dense', "local learning on the dense network, paper's split"),
    ('local_enn', "ENN-ℓ, paper's split and frozen heads"),
]


def _accuracy_configs():
    from accuracy import CONFIGS  # the configs that reproduce each row today
    return CONFIGS


def _accuracy(dataset: str, best: bool) -> str:
    data, configs = load('accuracy.json')[dataset], _accuracy_configs()[dataset]
    top = max(data[m]['mean'] for m, _ in ACCURACY_ROWS)
    header = ['method', 'config', 'top-1 % (final)'] + (['best epoch'] if best else [])
    rows = []
    for m, what in ACCURACY_ROWS:
        cell = pm(data[m])
        rows.append([what, f'`{configs[m]}`', f'**{cell}**' if data[m]['mean'] == top else cell]
                    + ([pm(data[m]['best_epoch_top1'])] if best else []))
    seeds = '; '.join(f"{short} {' / '.join(f2(v) for v in data[m]['final_top1'])}"
                      for m, short in (('bp_dense', 'dense'), ('bp_enn', 'ENN penalty'),
                                       ('bp_enn_retract', 'ENN retract'),
                                       ('local_dense', 'local dense'), ('local_enn', 'ENN-ℓ')))
    runs = ', '.join(str(s) for s in data['bp_dense']['seeds'])
    return table(header, rows) + f'\nPer seed ({runs}): {seeds}.\n'


@section
def accuracy_fmnist():
    return _accuracy('fmnist', best=False)


@section
def accuracy_mnist():
    return _accuracy('mnist', best=True)


# ------------------------------- ENN-ℓ heads (local_accuracy.py, local_accuracy*.json)
def _local_accuracy(name: str, dataset: str) -> str:
    from local_accuracy import markdown
    return markdown(load(name), dataset)


@section
def local_accuracy_fmnist():
    return _local_accuracy('local_accuracy.json', 'fmnist')


@section
def local_accuracy_mnist():
    return _local_accuracy('local_accuracy_mnist.json', 'mnist')


# ------------------------------------------- image-text (eclip_fmnist.py, eclip_fmnist.json)
@section
def eclip_fmnist():
    """The Fashion-MNIST caption benchmark with its train times (docs/eclip.md)."""
    d = load('eclip_fmnist.json')
    keys = [f'{d_}/Recall@{k}' for d_ in ('i2t', 't2i') for k in (1, 5, 10)]
    rows = []
    for tower, name in (('dense', 'dense (`clip_resnet18w16-minilm_fmnist.py`)'),
                        ('enn', 'ENN (`eclip_resnet18w16-minilm_fmnist.py`)')):
        secs = [r['train_seconds'] for r in d[tower]['runs']]
        rows.append([name] + [pm(d[tower][k]) for k in keys]
                    + [f'{min(secs):.0f}–{max(secs):.0f} s'])
    return table(['image tower'] + [k.replace('/Recall@', ' R@') for k in keys]
                 + ['train time / run'], rows)


# ------------------------------ image-text, 20-class union (eclip_union.py, eclip_union.json)
UNION_MEASURES = [('t2i_r1', 'seen'), ('t2i_r1', 'unseen'), ('i2t_r1', 'seen'),
                  ('i2t_r1', 'unseen')]
TEXT_TOWERS = {'frozen': 'frozen', 'dense_ft': 'fine-tuned, dense', 'enn_ft': 'fine-tuned, ENN'}


def union_row_name(r) -> str:
    """'image tower | text tower' words of an eclip_union row."""
    image = 'dense' if r['image_tower'] == 'dense' else (
        'ENN, penalty' if r['ortho'] == 'penalty' else 'ENN')
    return f"{image} | {TEXT_TOWERS[r['text_tower']]}"


def is_enn_row(r) -> bool:
    """Whether ENN is in any tower of an eclip_union row."""
    return r['image_tower'] == 'enn' or r['text_tower'] == 'enn_ft'


def _mean_std(values):
    return statistics.mean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


@section
def eclip_union():
    d = load('eclip_union.json')
    rows = []
    for r in d['rows']:
        cells = [pm(dict(zip(('mean', 'std'), _mean_std(r[k][s])))) for k, s in UNION_MEASURES]
        cells.append(pm(dict(zip(('mean', 'std'), _mean_std(r['t2i_map_r']['seen'])))))
        step = r.get('step_time_vs_dense')
        cells.append(f"{step['median']:.2f}" if step else '–')
        cells.append(f"{sum(r['converged'])}/{len(r['converged'])}")
        rows.append([f"`{osp.basename(r['config'])}`", union_row_name(r)] + cells)
    header = ['config', 'image tower', 'text tower', 't2i R@1 seen', 't2i R@1 unseen',
              'i2t R@1 seen', 'i2t R@1 unseen', 't2i mAP@R seen', 's/iter vs dense (computed)',
              'settled']
    return table(header, [[row[0], *row[1].split(' | '), *row[2:]] for row in rows])


def union_verdicts(d):
    """Best ENN row against the best all-dense row on each R@1 measure: the
    difference of means and the pooled std of the two rows (computed)."""
    out = []
    for key, split in UNION_MEASURES:
        def best(rows):
            return max(rows, key=lambda r: statistics.mean(r[key][split]))
        enn = best([r for r in d['rows'] if is_enn_row(r)])
        dense = best([r for r in d['rows'] if not is_enn_row(r)])
        (me, se), (md, sd) = _mean_std(enn[key][split]), _mean_std(dense[key][split])
        pooled = ((se ** 2 + sd ** 2) / 2) ** 0.5
        diff = me - md
        out.append(dict(measure=f"{key.split('_')[0]} R@1, {split} classes",
                        enn=union_row_name(enn), dense=union_row_name(dense), enn_mean=me,
                        dense_mean=md, diff=diff, pooled=pooled, ahead=diff > pooled,
                        behind=-diff > pooled))
    return out


@section
def eclip_union_goals():
    d = load('eclip_union.json')
    points = dict(seen=100.0 / d['t2i_queries_seen'], unseen=100.0 / d['t2i_queries_unseen'])
    moved = [m for r in d['rows'] for m in r['seen_r1_moved_last_two']]
    unsettled = [m for m in moved if m >= 0.5]
    return render('eclip-union-goals', d=d, verdicts=union_verdicts(d), points=points,
                  step0=d['enn_text_tower_step0'], settled=len(moved) - len(unsettled),
                  runs=len(moved), moved_min=min(unsettled, default=0.0),
                  moved_max=max(unsettled, default=0.0))


# --------------------------------------- training-step overhead (enn_overhead.py)
OVERHEAD_MODES = [('materialize', 'build every W'), ('enn', "ENN (`compute='auto'`)"),
                  ('penalty', 'penalty every step'),
                  ('penalty_probes1', 'penalty, 1 probe'), ('penalty_probes4', 'penalty, 4 probes'),
                  ('penalty_probes16', 'penalty, 16 probes'),
                  ('retract', 'retract every step'),
                  ('penalty@10', 'penalty every 10'), ('retract@10', 'retract every 10 (default)'),
                  ('torch_orthogonal', 'torch `orthogonal`'), ('geotorch', 'geotorch')]
MODEL_NAMES = {'resnet50': 'ResNet-50', 'vit-s': 'ViT-S (deit-small)', 'vit-b': 'ViT-B',
               'resnet18w16': 'demo ResNet-18 w16'}


def _groups(records):
    """``(model, setting, {mode: record})`` in first-seen order."""
    groups = {}
    for r in records:
        groups.setdefault((r['model'], r['setting']), {})[r['mode']] = r
    return [(model, setting, rec) for (model, setting), rec in groups.items()]


def library_ratio(r) -> str:
    """A library row's ratio, or its lower bound where one step ran past
    ``--step-limit`` (``enn_overhead.py``)."""
    if r['ratio'] is None:
        return f"> {int(r['ratio_at_least'])} (one step > {r['step_over_s']:g} s)"  # floor: a bound
    return ratio(r['ratio'], r['ratio_range'], 0 if r['ratio'] >= 10 else 2)


def _overhead(records) -> str:
    rows = []
    for model, setting, rec in _groups(records):
        any_ = next(iter(rec.values()))
        row = [MODEL_NAMES.get(model, model), f"{setting} ({any_['batch']} × {any_['size']} px)"]
        row += [library_ratio(rec[m]) if m in rec else '–' for m, _ in OVERHEAD_MODES]
        row.append(f"×{rec['exported-inference']['param_ratio']:.2f}")
        rows.append(row)
    return table(['model', 'setting'] + [name for _, name in OVERHEAD_MODES] + ['params'], rows)


def _arithmetic(records) -> str:
    rows = []
    for model, setting, rec in _groups(records):
        row = [MODEL_NAMES.get(model, model), setting]
        for m, _ in OVERHEAD_MODES:
            if m not in rec or 'arithmetic_ratio' not in rec[m]:
                row.append('–')  # not measured, or measured before the count existed
            elif rec[m]['arithmetic_ratio'] is None:
                row.append('n/c')  # a matrix exponential: not counted
            else:
                row.append(f"{rec[m]['arithmetic_ratio']:.2f}")
        rows.append(row)
    return table(['model', 'setting'] + [name for _, name in OVERHEAD_MODES], rows)


OVERHEAD_FILES = ('enn_overhead_small.json', 'enn_overhead_realistic.json',
                  'enn_overhead_realistic_vit-s.json')


def overhead_records(folder: str = RESULTS):
    """The overhead records; a later file's (model, setting, mode) records
    replace the same ones of an earlier file (a re-measurement, or new modes
    measured in a run of their own with its own dense baseline)."""
    records = []
    for name in OVERHEAD_FILES:
        if not osp.exists(osp.join(folder, name)):
            continue
        with open(osp.join(folder, name)) as f:
            new = json.load(f)
        keys = {(r['model'], r['setting'], r['mode']) for r in new}
        kept = [r for r in records if (r['model'], r['setting'], r['mode']) not in keys]
        records = kept + new
    order = {'resnet50': 0, 'vit-s': 1}
    return sorted(records, key=lambda r: (order.get(r['model'], 9), r['setting'] != 'small'))


@section
def overhead():
    return _overhead(overhead_records())


@section
def overhead_arithmetic():
    return _arithmetic(overhead_records())


def _seed_rows(d, names, digits=2, iteration=False):
    """Rows of the variants ``names`` (``[(variant, what)]``) of a
    local_accuracy result: mean ± std, each seed's top-1, each seed's
    orthogonality error and (``iteration``) the iteration over dense's."""
    rows = []
    for n, what in names:
        if n not in d:
            continue
        r = d[n]
        err = r.get('ortho_error')
        row = [what, f"`{n}`", f"{r['mean']:.2f} ± {r['std']:.2f}",
               ' / '.join(f'{v:.2f}' for v in r['final_top1']),
               ' / '.join(f'{e:.{digits}e}' for e in err) if err else '–']
        if iteration:
            row.append(f"{r['vs_bp_dense']['iter_time_median']:.2f}")
        rows.append(row)
    return rows


def _gap(a, b):
    """b's mean − a's, and their pooled std (``mean``, ``std`` each)."""
    return b['mean'] - a['mean'], ((a['std']**2 + b['std']**2) / 2)**0.5


def _versus(a, b) -> str:
    """b's mean − a's against their pooled std, in words (both computed)."""
    diff, pooled = _gap(a, b)
    return (f'{diff:+.2f} points (computed), pooled std {pooled:.2f} (computed): '
            f"{'within' if abs(diff) <= pooled else '**outside**'} one pooled std")


@section
def penalty_probes():
    """The exact penalty against its probe estimates on the demo recipe:
    accuracy per seed, and the orthogonality error of the last checkpoint."""
    d = load('penalty_probes_accuracy.json')['fmnist']
    names = [('bp_enn', 'exact penalty (Gram matrix)'),
             ('bp_enn_probes4', 'penalty from 4 probes per basis'),
             ('bp_enn_probes1', 'penalty from 1 probe per basis'),
             ('bp_dense', 'dense (no bases)')]
    rows = _seed_rows(d, names)
    out = table(['penalty', 'variant', 'top-1 % (3 seeds)', 'per seed', 'orthogonality error '
                 'after training, per seed'], rows)
    exact = d['bp_enn']
    out += '\n'
    for k in (4, 1):
        probe = d.get(f'bp_enn_probes{k}')
        if probe is None:
            continue
        ratio_err = statistics.median(probe['ortho_error']) / statistics.median(
            exact['ortho_error'])
        out += (f'- {k} probe{"s" if k > 1 else ""} − exact: {_versus(exact, probe)}. '
                f'Orthogonality error, median over seeds, over the exact penalty\'s: '
                f"{ratio_err:.2f} (computed; goal ≤ {goal('probes_ortho_error')}: "
                f"{verdict('probes_ortho_error', ratio_err)}).\n")
    return out


@section
def ortho_libraries():
    """Retraction every 10th step (the default) against the bases kept
    orthonormal by a library, on the demo recipe, and the fast ENN-ℓ recipe
    retracting every 10th step (shipped) against every step: accuracy and orthogonality
    error per seed, the training iteration against dense's, and the step
    ratio of the same modes on the demo network (enn_overhead)."""
    d = load('ortho_modes_accuracy.json')['fmnist']
    names = [('bp_enn_retract10', 'QR retraction every 10th step (default)'),
             ('bp_enn_torch_orthogonal', 'torch `orthogonal` (Householder / matrix exponential)'),
             ('bp_enn_geotorch', 'geotorch `orthogonal`'),
             ('bp_dense', 'dense (no bases)'),
             ('fast_retract1', 'ENN-ℓ fast recipe, retraction every step'),
             ('fast_retract10', 'ENN-ℓ fast recipe: retraction every 10th step (shipped)')]
    rows = _seed_rows(d, names, digits=1, iteration=True)
    out = table(['bases kept orthonormal by', 'variant', 'top-1 % (3 seeds)', 'per seed',
                 'orthogonality error after training, per seed',
                 'iteration / dense iteration (median over seeds)'], rows)
    base = d['bp_enn_retract10']
    demo = {r['mode']: r for r in demo_records()}
    out += '\n'
    for n, what in names[1:3]:
        if n not in d:
            continue
        r = d[n]
        mode = n[len('bp_enn_'):]
        step = demo.get(mode)
        cost = (f"; its step on the demo network {step['ratio']:.2f} × dense against "
                f"{demo['retract@10']['ratio']:.2f} for retraction every 10th step "
                f"(`{step['file']}`)" if step and 'retract@10' in demo else '')
        out += (f"- {what.split(' (')[0]} − retraction every 10th step: "
                f"{_versus(base, r)}{cost}.\n")
    if 'fast_retract1' in d and 'fast_retract10' in d:
        a, b = d['fast_retract1'], d['fast_retract10']
        out += (f"- ENN-ℓ fast recipe, retraction every 10th step − every step: {_versus(a, b)}; "
                f"iteration / dense iteration {b['vs_bp_dense']['iter_time_median']:.2f} against "
                f"{a['vs_bp_dense']['iter_time_median']:.2f}.\n")
    return out


DEMO_FILES = ('enn_overhead_demo.json', 'enn_overhead_demo_libraries.json')


def demo_records():
    """The demo network's overhead records, a later file's modes replacing
    the same modes of an earlier one (each run against its own dense step)."""
    records = {}
    for name in DEMO_FILES:
        if osp.exists(osp.join(RESULTS, name)):
            for r in load(name):
                records[r['mode']] = dict(r, file=name)
    order = ['materialize', 'enn', 'penalty', 'penalty_probes4', 'retract', 'torch_orthogonal',
             'geotorch']
    return sorted(records.values(), key=lambda r: (
        order.index(r['mode']) if r['mode'] in order else len(order),
        int(r['mode'].split('@')[1]) if '@' in r['mode'] else 0, r['mode']))


@section
def overhead_demo():
    modes = [r for r in demo_records() if r['mode'] not in ('exported-inference', )]

    def arith(r):
        if 'arithmetic_ratio' not in r:
            return '–'
        return 'n/c' if r['arithmetic_ratio'] is None else f2(r['arithmetic_ratio'])

    return table(['mode', 'ENN step / dense step', 'range', 'ENN s/step', 'dense s/step',
                  'arithmetic ratio', 'run'],
                 [[f"`{r['mode']}`", f2(r['ratio']), rng(r['ratio_range']), f"{r['seconds']:.3f}",
                   f"{r['dense_seconds']:.3f}", arith(r), f"`{r['file']}`"] for r in modes])


@section
def overhead_inference():
    recs = [r for r in overhead_records() if r['mode'] == 'exported-inference']
    return ', '.join(f"{MODEL_NAMES.get(r['model'], r['model'])} {r['setting']} "
                     f"{ratio(r['ratio'], r['ratio_range'])}" for r in recs) + '\n'


# ------------------------------------------------- ENN-ℓ memory (local_memory.py)
def _memory_rows(records):
    rows = []
    for r in records:
        rows.append([{'enn-resnet50': 'ENN ResNet-50', 'resnet50': 'ResNet-50'}[r['model']],
                     r['num_classes'], f"{r['split']} (K = {r['blocks']})", r['local_heads'],
                     ratio(r['memory_ratio'], r['memory_ratio_range']),
                     ratio(r['rss_ratio'], r['rss_ratio_range']),
                     f"{r['peak_rss_mb']:.0f} ({r['bp_peak_rss_mb']:.0f})",
                     ratio(r['saved_activation_ratio'], r['saved_activation_ratio_range']),
                     r['samples']])
    return rows


@section
def memory():
    return table(['model', 'classes', 'split', 'local heads', 'step growth / BP',
                  'whole-process peak / BP', 'peak RSS, MB (BP)', 'saved activations / BP',
                  'samples'], _memory_rows(load('local_memory.json')))


@section
def memory_heads():
    rows = [[f"{r['split']} (K = {r['blocks']})", f"`{r['local_heads']}`", f2(r['memory_ratio']),
             f2(r['rss_ratio']), f"{r['peak_rss_mb']:.0f} ({r['bp_peak_rss_mb']:.0f})",
             f2(r['time_ratio'])] for r in load('local_memory_heads.json')]
    return table(['split', 'local heads', 'step growth / BP', 'whole-process peak / BP',
                  'peak RSS, MB (BP)', 'step time / BP'], rows)


# ------------------------------------------- pipelined ENN-ℓ (pipeline_speedup.py)
PIPELINES = [('pipeline_speedup.json', 'ENN, penalty every step (paper)'),
             ('pipeline_speedup_dense.json', 'dense ResNet-50')]


def pipelines():
    """The pipeline runs measured with even warm-up and the DDP baseline."""
    out = []
    for name, what in PIPELINES:
        if osp.exists(osp.join(RESULTS, name)) and 'vs_bp_ddp' in load(name):
            out.append((name, what))
    return out


@section
def pipeline():
    rows = []
    for name, what in pipelines():
        r = load(name)
        ips = r['images_per_s']
        stages = ', '.join(f'{b[0]}–{b[-1]}' for b in r['assignment'])
        rows.append([what, f2(ips['sequential']), f2(ips['bp_equal_cores']), f2(ips['bp_ddp']),
                     f2(ips['pipeline']), ratio(r['vs_sequential'], r['vs_sequential_range']),
                     ratio(r['vs_bp_equal_cores'], r['vs_bp_equal_cores_range']),
                     ratio(r['vs_bp_ddp'], r['vs_bp_ddp_range']),
                     f"{stages} ({', '.join(f'{t:.2f}' for t in r['stage_step_s'])})",
                     f"{r['plan_s']:.0f}"])
    return table(['model', 'sequential ENN-ℓ', 'BP, 2 threads', 'BP, DDP 2 × 1',
                  'pipeline, 2 × 1', 'vs sequential', 'vs BP, 2 threads', 'vs DDP BP',
                  'stages (s/step)', 'planning, s'], rows)


# ---------------------------------- one ENN-ℓ recipe, both halves (enn_l_headline.py)
SPEED_COLUMNS = [('vs_bp_threads', 'BP, 2 threads'), ('vs_ddp', 'DDP BP, 2 × 1'),
                 ('vs_pipelined_bp', 'pipelined BP (1F1B), 2 × 1'),
                 ('vs_sequential', 'sequential ENN-ℓ')]


@section
def enn_l_headline():
    """What the fast ENN-ℓ recipe gives: accuracy and throughput in one table each."""
    h = load('enn_l_headline.json')
    rows = []
    for dataset, a in h['accuracy'].items():
        c = a['computed']
        rows.append([dataset, pm(dict(mean=a['recipe_mean'], std=a['recipe_std'])),
                     f"{statistics.mean(a['best_bp']):.2f} (`{a['best_bp_variant']}`)",
                     f"{statistics.mean(a['dense_bp']):.2f}", f"{c['recipe_minus_best_bp']:+.2f}",
                     f"{c['recipe_minus_dense_bp']:+.2f}", f"{c['pooled_std_recipe_dense']:.2f}"])
    acc = table(['data set', 'recipe, top-1 % (3 seeds)', 'best BP (3 seeds)', 'dense BP',
                 'recipe − best BP (computed)', 'recipe − dense BP (computed)',
                 'pooled std (computed)'], rows)
    rows = []
    for model, t in h['throughput'].items():
        rows.append([model, f"{t['size']} px, batch {t['batch']}"]
                    + [ratio(t[k], t[k + '_range']) if t.get(k) is not None else '–'
                       for k, _ in SPEED_COLUMNS] + [str(t['repeats'])])
    speed = table(['model', 'input'] + [f'pipeline / {w}' for _, w in SPEED_COLUMNS]
                  + ['repeats'], rows)
    return render('enn-l-headline', h=h, accuracy=acc, speed=speed)


# ------------------------------------------------- retrieval (retrieval_eval.py)
def _size(n: int) -> str:
    return f'{n // 1_000_000}M' if n >= 1_000_000 else f'{n // 1000}k'


@section
def retrieval():
    rows = []
    for r in load('retrieval_eval.json'):
        sec = r['seconds']
        if r.get('streamed_from_disk'):
            rows.append([f"{_size(r['gallery'])}, streamed from disk", '', '', '',
                         f"{sec['ours']:.2f}", '', '', '', ''])
            continue
        theirs = (f"{sec['mmpretrain']:.2f}" if 'mmpretrain' in sec else
                  f"skipped (≈ {r['mmpretrain_estimated_seconds']:.0f} s extrapolated)"
                  if 'mmpretrain_estimated_seconds' in r else 'cannot run (≥ 49 GB)')
        rows.append([_size(r['gallery']), theirs, f"{sec['torch']:.3f}", f"{sec['faiss']:.3f}",
                     f"{sec['ours']:.3f}",
                     ratio(r['ratio_vs_faiss'], r['ratio_vs_faiss_range']),
                     ratio(r['ratio_vs_torch'], r['ratio_vs_torch_range']),
                     f"{r['speedup']:.0f}×" if r.get('speedup') else '',
                     f"{r['max_abs_diff']:.0e}" if r['max_abs_diff'] else '0'])
    return table(['gallery', 'MMPretrain path, s', 'torch chunked, s', 'raw faiss search, s',
                  'ours, s', 'ours / raw faiss', 'ours / torch', 'MMPretrain / ours',
                  'max metric difference'], rows)


@section
def retrieval_end_to_end():
    d = load('retrieval_eval_fmnist.json')
    total = d['embed_seconds'] + d['search_seconds']
    return table(['queries × gallery', 'feature extraction, s', 'search + metrics, s',
                  'share of the time in search (computed)', 'Recall@1', 'mAP@R'],
                 [[f"{d['num_queries']} × {d['gallery_size']}", f"{d['embed_seconds']:.1f}",
                   f"{d['search_seconds']:.2f}", f"{100 * d['search_seconds'] / total:.1f} %",
                   f"{d['metrics']['Recall@1']:.2f}", f"{d['metrics']['mAP@R']:.2f}"]])


# ------------------------------------------------------------ the demo (demo.py)
@section
def demo():
    d = load('demo_summary.json')
    sec = d['seconds']
    return ('```\n'
            f"ENN model top-1           : {d['enn_top1']:.2f} %  ({d['test_images']} images)\n"
            f"dense export top-1        : {d['dense_export_top1']:.2f} %  (vanilla MMPretrain)\n"
            f"same prediction           : {d['prediction_agreement']:.3f} % of images "
            f"(scores differ by at most {d['max_score_difference']:.1e})\n"
            f"orthogonality error       : {d['orthogonality_error']:.3e}  "
            '(max |BᵀB − I| over Q, P)\n'
            f"time (s)                  : {sec}, total {d['total_seconds']}\n"
            '```\n')


# ------------------------------------------------ orthogonality (orthogonality.py)
@section
def orthogonality():
    d = load('orthogonality.json')
    names = {'penalty': "paper's penalty, γ = 1e-5", 'retract@1': 'QR retraction every step',
             'retract@10': 'QR retraction every 10th step (default)'}
    rows = [[names[m], f"`{r['config']}`", f"{r['final_ortho_err_max']:.2e}",
             f"{max(r['ortho_err_max']):.2e}", f"{r['test_top1']:.2f}"] for m, r in d.items()]
    epochs = next(iter(d.values()))['epochs']
    return table(['mode', 'config', 'error at the end', 'largest logged error',
                  f'test top-1 after {epochs} epochs (one seed)'], rows)


# ------------------------------------------------- the claims table (results.md)
@section
def claims():
    acc = load('accuracy.json')
    f, m = acc['fmnist'], acc['mnist']
    lf, lm = load('local_accuracy.json')['fmnist'], load('local_accuracy_mnist.json')['mnist']
    mem = {(r['model'], r['num_classes'], r['split'], r['local_heads']): r
           for r in load('local_memory.json')}
    union = load('eclip_union.json')
    h = load('enn_l_headline.json')
    vs_best = {}  # the recipe against the best BP: the gap and its pooled std
    for ds, a in h['accuracy'].items():
        gap, pooled = _gap(dict(mean=a['best_bp_mean'], std=statistics.stdev(a['best_bp'])),
                           dict(mean=a['recipe_mean'], std=statistics.stdev(a['recipe'])))
        vs_best[ds] = dict(gap=gap, pooled=pooled, beyond=abs(gap) > pooled)
    return render('claims', f=f, m=m, ep=acc['budget']['epochs'], lf=lf, lm=lm, vs_best=vs_best,
                  pipe=load('pipeline_speedup.json'), ortho=load('orthogonality.json'),
                  enn_stage=mem['enn-resnet50', 1000, 'stage', 'pool_linear'],
                  enn_block=mem['enn-resnet50', 1000, 'block', 'pool_linear'],
                  frozen=mem.get(('enn-resnet50', 1000, 'block', 'pool_linear (frozen)')),
                  h=h, union=union, union_v=union_verdicts(union))


# ---------------------------------------------------------- the front page (README.md)
def demo_summaries():
    """The demo's committed summaries, ``(file name, summary)``: the
    reference run first, then one per other CPU measured."""
    names = ['demo_summary.json'] + sorted(
        osp.basename(p) for p in glob.glob(osp.join(RESULTS, 'demo_summary_*.json')))
    return [(name, load(name)) for name in names]


@section
def readme_demo_time():
    rows = []
    for name, s in demo_summaries():
        units = 'AVX-512' if 'avx512f' in s['cpu_flags'] else 'AVX2, no AVX-512'
        rows.append([f"{s['cpu_model']} ({units})", f"{s.get('cpus', 2)}",
                     f"{s['seconds']['train']:.0f} s",
                     f"{s['total_seconds'] / 60:.1f} min", f"{s['enn_top1']:.2f} %",
                     f"{s['prediction_agreement']:.1f} %", f'[{name}](docs/results/{name})'])
    return table(['CPU (`lscpu` model name)', 'cores', 'training', 'whole command',
                  'ENN top-1', 'same prediction after export', 'summary'], rows)


@section
def readme_headline():
    """The front page's results table: one row per part, each from its JSON
    (the sentences live in docs/templates/readme-headline.md.j2)."""
    acc = load('accuracy.json')
    rec = {(r['model'], r['setting'], r['mode']): r['ratio'] for r in overhead_records()}
    big = max((r for r in load('retrieval_eval.json') if r.get('ratio_vs_faiss')),
              key=lambda r: r['gallery'])
    union = {v['measure']: v for v in union_verdicts(load('eclip_union.json'))}
    return render('readme-headline', acc=acc, f=acc['fmnist'], m=acc['mnist'],
                  h=load('enn_l_headline.json'), demo=load('demo_summary.json'),
                  r50={k[2]: v for k, v in rec.items() if k[0] == 'resnet50' and k[1] == 'small'},
                  r50_real={k[2]: v for k, v in rec.items()
                            if k[0] == 'resnet50' and k[1] == 'realistic'},
                  big=big, big_size=_size(big['gallery']), union=union)


# ------------------------------------------------ prose sections (templates)
@section
def overhead_goals():
    rec = {(r['model'], r['setting'], r['mode']): r for r in overhead_records()}
    models = [dict(name=MODEL_NAMES[m], real_penalty=rec[m, 'realistic', 'penalty']['ratio'],
                   real_retract=rec[m, 'realistic', 'retract@10']['ratio'],
                   small_penalty=rec[m, 'small', 'penalty']['ratio'])
              for m in ('resnet50', 'vit-s')]
    small = {m: rec['resnet50', 'small', m]['ratio'] for m in ('enn', 'retract', 'retract@10')}
    demo = {r['mode']: r for r in demo_records()}
    probes = {s_: {k: rec[key]['ratio'] for k in (1, 4, 16)
                   if (key := ('resnet50', s_, f'penalty_probes{k}')) in rec}
              for s_ in ('small', 'realistic')}
    # the realistic probes goal against the arithmetic of the step itself
    real, floor = probes['realistic'], None
    if real and rec.get(('resnet50', 'realistic', 'enn'), {}).get('arithmetic_ratio'):
        k = min(real, key=real.get)
        fastest = rec['resnet50', 'realistic', f'penalty_probes{k}']
        floor = dict(enn=rec['resnet50', 'realistic', 'enn']['arithmetic_ratio'], k=k,
                     arithmetic=fastest['arithmetic_ratio'],
                     over=fastest['ratio'] / fastest['arithmetic_ratio'])
    auto = []
    for m, g in (('resnet50', 'overhead_auto_small_resnet50'),
                 ('vit-s', 'overhead_auto_small_vit')):
        r = rec.get((m, 'small', 'enn'))
        if r is not None and r.get('arithmetic_ratio') is not None:
            limit = max(float(GOALS[g]['le']), 1.1 * r['arithmetic_ratio'])
            auto.append(dict(name=MODEL_NAMES[m], ratio=r['ratio'], goal=g,
                             arithmetic=r['arithmetic_ratio'], limit=limit,
                             met=r['ratio'] <= limit))
    libraries = []
    for where, of in (('ResNet-50 small', lambda m: rec.get(('resnet50', 'small', m))),
                      ('the demo network', demo.get)):
        recs = {m: of(m) for m in ('torch_orthogonal', 'geotorch') if of(m)}
        if recs and of('retract@10'):
            retract = of('retract@10')['ratio']
            libraries.append(dict(where=where, retract=retract,
                                  libs={m: library_ratio(r) for m, r in recs.items()},
                                  ok=retract <= min(r['ratio'] or r['ratio_at_least']
                                                    for r in recs.values())))
    return render('overhead-goals', models=models, small=small, demo=demo, probes=probes,
                  floor=floor, auto=auto, libraries=libraries)


@section
def memory_goals():
    mem = {(r['model'], r['num_classes'], r['split'], r['local_heads']): r
           for r in load('local_memory.json')}
    models = []
    for model, name in (('enn-resnet50', 'ENN ResNet-50'), ('resnet50', 'dense ResNet-50')):
        block = mem[model, 1000, 'block', 'pool_linear']
        frozen = mem.get((model, 1000, 'block', 'pool_linear (frozen)'))
        best = min(block['memory_ratio'], frozen['memory_ratio'] if frozen else float('inf'))
        models.append(dict(
            name=name, stage=mem[model, 1000, 'stage', 'pool_linear'], block=block,
            frozen=frozen, best_block=best,
            frozen_only=bool(frozen) and block['memory_ratio'] > float(goal('memory_block'))
            >= frozen['memory_ratio']))
    return render('memory-goals', models=models)


@section
def pipeline_goals():
    return render('pipeline-goals', runs=[dict(load(name), what=what)
                                          for name, what in pipelines()])


@section
def retrieval_goals():
    recs = {r['gallery']: r for r in load('retrieval_eval.json')
            if not r.get('streamed_from_disk')}
    galleries = [dict(recs[n], size=_size(n),
                      vs_faiss=ratio(recs[n]['ratio_vs_faiss'], recs[n]['ratio_vs_faiss_range']),
                      vs_torch=ratio(recs[n]['ratio_vs_torch'], recs[n]['ratio_vs_torch_range']))
                 for n in (20000, 1000000)]
    return render('retrieval-goals', galleries=galleries,
                  worst=max(r['max_abs_diff'] for r in recs.values()))


def render_page(text: str) -> str:
    """``text`` with every marked section replaced by its rendering."""
    def sub(m):
        name = m.group(2)
        if name not in SECTIONS:
            raise KeyError(f'unknown report section {name!r}; known: {sorted(SECTIONS)}')
        body = SECTIONS[name]()
        return m.group(1) + body + ('' if body.endswith('\n') else '\n') + m.group(4)
    return MARK.sub(sub, text)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--check', action='store_true',
                        help='do not write; exit 1 if a page differs from its rendering')
    args = parser.parse_args(argv)
    stale = []
    for page in PAGES:
        path = osp.join(REPO, page)
        with open(path, encoding='utf-8') as f:
            text = f.read()
        new = render_page(text)
        if new != text:
            stale.append(page)
            if not args.check:
                with open(path, 'w', encoding='utf-8') as f:
                    f.write(new)
    if args.check and stale:
        print('out of date with docs/results/*.json: ' + ', '.join(stale)
              + ' (run python tools/benchmarks/report.py)')
        return 1
    print(('rewrote ' + ', '.join(stale)) if stale else 'every rendered section is up to date')
    return 0


if __name__ == '__main__':
    sys.exit(main())
