"""One ENN-ℓ config, both halves of the claim: its accuracy beside the best
end-to-end BP, and its pipelined throughput beside every BP alternative on
the same cores. Assembles ``docs/results/enn_l_headline.json`` from the
measurements (nothing is measured here):

    python tools/benchmarks/enn_l_headline.py \\
        --accuracy fmnist=docs/results/enn_l_accuracy_fmnist.json \\
                   mnist=docs/results/enn_l_accuracy_mnist.json \\
        --bp fmnist=docs/results/local_accuracy.json \\
        --throughput resnet18w16=docs/results/enn_l_speed_resnet18w16.json \\
                     resnet50=docs/results/enn_l_speed_resnet50.json \\
        --scale resnet18w16=docs/results/enn_l_scale_resnet18w16.json \
                resnet50=docs/results/enn_l_scale_resnet50.json \
        --out docs/results/enn_l_headline.json

- ``--accuracy``: ``local_accuracy.py`` runs of the recipe (variant ``fast``,
  3 seeds); ``--bp`` (optional, per data set): another ``local_accuracy.py``
  JSON of the same budget that holds the end-to-end BP rows (``bp_*``, 3
  seeds), when they were not re-run with the recipe. The best BP is the BP
  row with the highest mean; the dense BP is ``bp_dense``.
- ``--throughput``: ``pipeline_speedup.py --config <recipe> --repeats R``
  records; the ratios are their medians of paired repeats.
- ``--memory``: ``pipeline_speedup.py --config`` records (short runs) whose
  processes report their peak resident memory: each stage's over BP's.
- ``--scale``: ``enn_l_scale.py --measured`` outputs (the cost model's
  predictions at K = 2, 4, 8 and its K = 2 check on this machine).

Every derived number (means, differences, goal verdicts) is labelled computed.
"""
import argparse
import json
import statistics


def _pairs(items):
    out = {}
    for item in items or []:
        key, _, path = item.partition('=')
        with open(path) as f:
            out[key] = (path, json.load(f))
    return out


def _row(results: dict, dataset: str, name: str):
    row = results.get(dataset, {}).get(name)
    return row if row and len(row['final_top1']) >= 3 else None


def accuracy(dataset: str, runs, bp_source) -> dict:
    """The recipe, best BP and dense BP (3 seeds each) of one data set."""
    path, results = runs
    recipe = _row(results, dataset, 'fast')
    if recipe is None:
        raise SystemExit(f'{path}: no 3-seed `fast` row for {dataset}')
    sources = [(path, results)] + ([bp_source] if bp_source else [])
    bp = {}
    for src, res in sources:  # the recipe's own run first
        for name, row in res.get(dataset, {}).items():
            if name.startswith('bp_') and name not in bp and _row(res, dataset, name):
                bp[name] = dict(row, source=src)
    best_name = max(bp, key=lambda n: bp[n]['mean'])
    best, dense = bp[best_name], bp['bp_dense']
    pooled = statistics.mean([statistics.stdev(recipe['final_top1']) ** 2,
                              statistics.stdev(dense['final_top1']) ** 2]) ** 0.5
    budget = results['budget']
    return dict(
        recipe=recipe['final_top1'], recipe_mean=recipe['mean'], recipe_std=recipe['std'],
        recipe_config=recipe['config'], recipe_options=recipe.get('options'),
        best_bp=best['final_top1'], best_bp_mean=best['mean'], best_bp_variant=best_name,
        best_bp_config=best['config'], best_bp_source=best['source'],
        dense_bp=dense['final_top1'], dense_bp_mean=dense['mean'], dense_bp_source=dense['source'],
        budget=f"{budget['epochs']} epochs, {budget['per_class'] or 'all'} training images per "
               f"class, test top-1 on the whole test split after the last epoch ({path})",
        computed=dict(
            note='computed from the per-seed values above',
            recipe_minus_best_bp=round(recipe['mean'] - best['mean'], 2),
            recipe_minus_dense_bp=round(recipe['mean'] - dense['mean'], 2),
            pooled_std_recipe_dense=round(pooled, 2),
            goal_within_half_point_of_best_bp=recipe['mean'] >= best['mean'] - 0.5,
            stretch_at_least_best_bp=recipe['mean'] >= best['mean'],
            beats_dense_bp_by_more_than_pooled_std=recipe['mean'] - dense['mean'] > pooled))


def throughput(runs) -> dict:
    """The pipeline's ratios to each alternative, from one benchmark record."""
    path, r = runs
    keys = dict(vs_bp_threads='vs_bp_equal_cores', vs_ddp='vs_bp_ddp',
                vs_pipelined_bp='vs_bp_pipelined', vs_sequential='vs_sequential')
    out = {mine: r.get(theirs) for mine, theirs in keys.items()}
    out.update({mine + '_range': r.get(theirs + '_range') for mine, theirs in keys.items()})
    fastest = min((out[k] for k in ('vs_bp_threads', 'vs_ddp', 'vs_pipelined_bp')
                   if out[k] is not None), default=None)
    out.update(repeats=r['repeats'], images_per_s=r['images_per_s'], source=path,
               config=r.get('config') or r.get('model'), size=r.get('size'),
               batch=r.get('batch'), machine=r.get('machine'),
               stage_step_s=r.get('stage_step_s'), assignment=r.get('assignment'),
               bp_pipelined_microbatches=[x.get('bp_pipelined_microbatches')
                                          for x in r.get('runs', [])],
               computed=dict(note='computed from the medians above',
                             vs_fastest_bp_alternative=fastest,
                             goal_at_least_fastest_bp=fastest is not None and fastest >= 1.0,
                             goal_sequential_1_9=(out['vs_sequential'] or 0) >= 1.9))
    return out


def scale(runs) -> dict:
    """The cost model's check at K = 2 and its predictions at K = 4, 8."""
    path, s = runs
    predicted = {link: {k: {key: (round(v, 1) if isinstance(v, float) else v)
                            for key, v in p.items()} for k, p in by_k.items()}
                 for link, by_k in s['predicted'].items()}
    passes = {link: {k: dict(enn_l_over_ddp=p.get('enn_l_over_ddp'),
                             enn_l_over_pipelined_bp=p.get('enn_l_over_pipelined_bp'),
                             passes_2x_ddp=(p.get('enn_l_over_ddp') or 0) >= 2,
                             passes_2x_pipelined_bp=(p.get('enn_l_over_pipelined_bp') or 0) >= 2)
                      for k, p in by_k.items() if k != '2'}
              for link, by_k in s['predicted'].items()}
    ratio = s.get('k2_predicted_over_measured')
    return dict(source=path, config=s['config'], links=s['links'],
                k2_predicted_over_measured=ratio,
                k2_predicted_over_measured_all=s.get('k2_predicted_over_measured_all'),
                k2_loopback=s.get('k2_loopback'), predicted=predicted,
                computed=dict(note='computed from the predictions above',
                              k2_within_15_percent=ratio is not None and abs(ratio - 1) <= 0.15,
                              at_k=passes))


def memory(runs) -> dict:
    """Whole-process peak resident memory of each pipeline stage's process
    over BP's (one process, the whole network), per paired repeat."""
    path, r = runs
    per_run = [x['stage_rss_over_bp'] for x in r['runs'] if 'stage_rss_over_bp' in x]
    stages = list(zip(*per_run))
    median = [round(statistics.median(s), 3) for s in stages]
    return dict(source=path, config=r.get('config') or r.get('model'), size=r.get('size'),
                batch=r.get('batch'), repeats=len(per_run), stage_rss_over_bp=median,
                stage_rss_over_bp_range=[[min(s), max(s)] for s in stages],
                peak_rss_mb=[x.get('peak_rss_mb') for x in r['runs']],
                computed=dict(note='computed from the paired repeats above',
                              goal_each_stage_at_most_0_9=all(m <= 0.9 for m in median)))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--accuracy', nargs='+', required=True, metavar='DATASET=JSON')
    p.add_argument('--bp', nargs='*', default=[], metavar='DATASET=JSON')
    p.add_argument('--throughput', nargs='*', default=[], metavar='MODEL=JSON')
    p.add_argument('--scale', nargs='*', default=[], metavar='MODEL=JSON')
    p.add_argument('--memory', nargs='*', default=[], metavar='MODEL=JSON',
                   help='pipeline_speedup.py --config records with each process\'s peak memory')
    p.add_argument('--out', required=True)
    args = p.parse_args(argv)
    acc, bp, speed = _pairs(args.accuracy), _pairs(args.bp), _pairs(args.throughput)
    models, mem = _pairs(args.scale), _pairs(args.memory)
    first = next(iter(acc.values()))[1]
    recipe = _row(first, next(iter(acc)), 'fast')['config']
    out = dict(recipe=recipe,
               accuracy={d: accuracy(d, acc[d], bp.get(d)) for d in acc},
               throughput={m: throughput(speed[m]) for m in speed})
    if mem:
        out['memory'] = {m: memory(mem[m]) for m in mem}
    if models:
        per_model = {m: scale(models[m]) for m in models}
        first = per_model[next(iter(models))]  # the recipe's own network first
        out['scale'] = dict(k2_predicted_over_measured=first['k2_predicted_over_measured'],
                            links=first['links'],
                            predicted={m: v['predicted'] for m, v in per_model.items()},
                            per_model=per_model)
    with open(args.out, 'w') as f:
        json.dump(out, f, indent=1, ensure_ascii=False)
        f.write('\n')
    print(json.dumps(out, indent=1, ensure_ascii=False))


if __name__ == '__main__':
    main()
