"""The benchmark scripts (tools/benchmarks/) and the pages rendered from their JSON.

Each script runs here on a tiny model: the test checks its JSON schema and
recomputes every ratio from the two timings (or sizes) it names, so a ratio
can only come from the measurements beside it.
"""
import importlib.util
import json
import os
import os.path as osp
import statistics
import subprocess
import sys

import pytest
import torch

from helpers import REPO

BENCH = osp.join(REPO, 'tools', 'benchmarks')


def script(name):
    spec = importlib.util.spec_from_file_location(name, osp.join(BENCH, f'{name}.py'))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run_json(name, *args, timeout=600):
    env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get('PYTHONPATH', ''))
    proc = subprocess.run([sys.executable, osp.join(BENCH, f'{name}.py'), *args], cwd=REPO,
                          env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout
    return json.loads(out[min(i for i in (out.find('['), out.find('{')) if i >= 0):])


def median_ratio(pairs):
    return statistics.median(a / b for a, b in pairs)


def test_report_pages_equal_their_json():
    """Every rendered section of README.md, docs/results.md and
    docs/local_learning.md equals the rendering of the committed JSON."""
    report = script('report')
    for page in report.PAGES:
        with open(osp.join(REPO, page), encoding='utf-8') as f:
            text = f.read()
        assert report.MARK.search(text), f'{page} has no rendered section'
        assert report.render_page(text) == text, (
            f'{page} differs from docs/results/*.json: run python tools/benchmarks/report.py')
    used = {m.group(2) for page in report.PAGES
            for m in report.MARK.finditer(open(osp.join(REPO, page), encoding='utf-8').read())}
    assert used == set(report.SECTIONS), set(report.SECTIONS) ^ used


def test_report_renders_from_json_and_flags_drift():
    report = script('report')
    text = '# x\n<!-- report:eclip-fmnist -->\nstale 1.23\n<!-- /report:eclip-fmnist -->\nafter\n'
    out = report.render_page(text)
    d = json.load(open(osp.join(REPO, 'docs/results/eclip_fmnist.json')))
    mean, std = d['enn']['i2t/Recall@1']['mean'], d['enn']['i2t/Recall@1']['std']
    assert f'{mean:.2f} ± {std:.2f}' in out and 'stale' not in out and out.endswith('after\n')
    with pytest.raises(KeyError, match='unknown report section'):
        report.render_page('<!-- report:nope -->\n<!-- /report:nope -->')


def test_enn_overhead_paired_ratios():
    """The demo network (ResNet-18w16) at 32 px, 3 paired rounds, an interval mode measured over its
    period: ratio = median of round-by-round ENN / dense."""
    bench = script('enn_overhead')
    from mmengine.registry import init_default_scope
    init_default_scope('mmpretrain')
    records = bench.measure('resnet18w16', 'tiny', 3, intervals=(2, ), probes=(3, ),
                            libraries=('torch_orthogonal', ))
    modes = {r['mode']: r for r in records}
    assert set(modes) == {'materialize', 'enn', 'penalty', 'retract', 'penalty@2', 'retract@2',
                          'penalty_probes3', 'torch_orthogonal', 'exported-inference'}
    # a matrix exponential (square bases) has no count: no arithmetic ratio
    assert modes['torch_orthogonal']['arithmetic_ratio'] is None
    # the counted arithmetic against closed forms over the bases (g, n, r): the
    # exact penalty adds BᵀB and B(BᵀB − I), 4gnr² flops; 3 probes add BZ,
    # Bᵀ(BZ) and the three products of the gradient, 10gnr·3; a retraction
    # adds one QR, 4nr² − 4r³/3 per matrix; penalty@2 half the penalty
    from enn_mm.core import bases
    shapes = [tuple(B.shape) for B in bases(bench.build('resnet18w16', 32, dict()))]
    assert all(r <= 256 for _, _, r in shapes)  # (the plain Gram, no column blocks)
    enn = modes['enn']['flops']
    assert modes['penalty']['flops'] - enn == sum(4 * g * n * r * r for g, n, r in shapes)
    assert modes['penalty_probes3']['flops'] - enn == sum(30 * g * n * r for g, n, r in shapes)
    qr = sum(g * (4 * n * r * r - 4 * r**3 // 3) for g, n, r in shapes)
    assert modes['retract']['flops'] - enn == qr
    assert modes['penalty@2']['flops'] - enn == sum(2 * g * n * r * r for g, n, r in shapes)
    assert modes['retract']['arithmetic_ratio'] == pytest.approx(
        modes['retract']['flops'] / modes['retract']['dense_flops'], abs=1e-3)
    assert modes['exported-inference']['arithmetic_ratio'] == 1.0
    for mode, r in modes.items():
        if mode == 'exported-inference':
            assert r['param_ratio'] > 1
            continue
        assert len(r['samples']) == len(r['dense_samples']) == 3
        # the samples are saved to the microsecond, the ratios to 3 decimals
        ratios = [a / b for a, b in zip(r['samples'], r['dense_samples'])]
        assert r['ratio'] == pytest.approx(statistics.median(ratios), rel=1e-3, abs=1e-3)
        assert r['ratio_range'] == pytest.approx([min(ratios), max(ratios)], rel=1e-3, abs=1e-3)
        assert r['steps_per_sample'] == (2 if '@' in mode else 1)
        assert r['seconds'] == pytest.approx(statistics.median(r['samples']), abs=1e-4)


@pytest.mark.slow
def test_local_memory_paired_samples():
    records = run_json('local_memory', '--arch', 'resnet18', '--size', '32', '--batch', '2',
                       '--steps', '1', '--num-classes', '10', '--enn-only', '--splits', 'stage',
                       '--repeats', '2')
    (r, ) = records
    assert (r['model'], r['split'], r['local_heads'], r['samples']) == \
        ('enn-resnet18', 'stage', 'pool_linear', 2)
    for name, key in (('memory_ratio', 'step_peak_mb'), ('rss_ratio', 'peak_rss_mb'),
                      ('time_ratio', 'step_s')):
        pairs = r['paired_samples'][key]
        assert len(pairs) == 2
        assert r[name] == pytest.approx(median_ratio(pairs), abs=2e-3)
        lo, hi = r[name + '_range']
        assert lo <= r[name] <= hi
    assert r['rss_ratio'] < 1.5 and r['peak_rss_mb'] > 0


@pytest.mark.slow
def test_pipeline_speedup_even_baselines():
    """Pipeline, sequential ENN-ℓ, BP on 2 threads and 2-process DDP BP, all
    warmed for as long as the pipeline planned."""
    if (os.cpu_count() or 1) < 2:
        pytest.skip('needs 2 cores')
    r = run_json('pipeline_speedup', '--arch', 'resnet18', '--size', '32', '--batch', '4',
                 '--steps', '2', '--warmup', '1', '--refine', '1', '--repeats', '1',
                 '--dense', timeout=900)
    ips = r['images_per_s']
    assert set(ips) == {'sequential', 'bp_equal_cores', 'bp_ddp', 'pipeline'}
    assert r['vs_bp_ddp'] == pytest.approx(ips['pipeline'] / ips['bp_ddp'], rel=0.01)
    assert r['vs_sequential'] == pytest.approx(ips['pipeline'] / ips['sequential'], rel=0.01)
    assert r['plan_s'] > 0 and len(r['assignment']) == 2
    assert r['runs'][0]['vs_bp_ddp'] == pytest.approx(r['vs_bp_ddp'], abs=1e-3)


@pytest.mark.slow
def test_retrieval_benchmark_four_paths_agree():
    records = run_json('retrieval_eval', '--galleries', '3000', '--queries', '40', '--dim', '16',
                       '--classes', '10', '--repeats', '2')
    (r, ) = records
    assert set(r['seconds']) == {'faiss', 'torch', 'ours', 'mmpretrain'}
    assert r['compared'] == ['faiss', 'torch', 'mmpretrain']
    assert r['max_abs_diff'] < 1e-9 and r['max_abs_diff_per_query'] < 1e-9
    assert r['ratio_vs_faiss_range'][0] <= r['ratio_vs_faiss'] <= r['ratio_vs_faiss_range'][1]
    assert r['speedup'] == pytest.approx(r['seconds']['mmpretrain'] / r['seconds']['ours'],
                                         rel=0.05, abs=0.1)


@pytest.mark.slow
def test_retrieval_benchmark_torch_path_matches_brute_force():
    """The hand-written torch baseline (chunked matmul + merged top-k) returns
    what a full argsort of the cosine matrix returns."""
    import numpy as np
    bench = script('retrieval_eval')
    rng = np.random.default_rng(0)
    q = rng.standard_normal((7, 5)).astype(np.float32)
    g = rng.standard_normal((53, 5)).astype(np.float32)
    cos = (q / np.linalg.norm(q, axis=1, keepdims=True)) @ \
        (g / np.linalg.norm(g, axis=1, keepdims=True)).T
    want = np.argsort(-cos, axis=1, kind='stable')[:, :10]
    np.testing.assert_array_equal(bench.search_torch(q, g, chunk=8), want)
    np.testing.assert_array_equal(bench.search_faiss(q, g), want)


def test_accuracy_and_eclip_summaries_recompute_from_runs():
    """The mean ± std the docs print are computed from the per-seed values
    saved beside them."""
    acc = script('accuracy')
    curves = [[70.0, 86.0], [72.0, 85.0], [71.0, 88.0]]
    s = acc.summarize('c.py', [0, 1, 2], curves, [1.0, 2.0, 3.0], [0.1, 0.2, 0.3])
    assert s['final_top1'] == [86.0, 85.0, 88.0]
    assert (s['mean'], s['std']) == (round(statistics.mean([86, 85, 88]), 2),
                                     round(statistics.stdev([86, 85, 88]), 2))
    assert s['best_epoch_top1']['epoch'] == [2, 2, 2]
    eclip = script('eclip_fmnist')
    runs = [{k: float(i + j) for j, k in enumerate(eclip.KEYS)} for i in range(3)]
    out = eclip.summary(runs)
    for k in eclip.KEYS:
        values = [r[k] for r in runs]
        assert out[k] == dict(mean=round(statistics.mean(values), 2),
                              std=round(statistics.stdev(values), 2))
    # the committed JSON holds what summary() gives for its own runs
    saved = json.load(open(osp.join(REPO, 'docs/results/eclip_fmnist.json')))
    for tower in ('dense', 'enn'):
        again = eclip.summary(saved[tower]['runs'])
        assert all(again[k] == saved[tower][k] for k in eclip.KEYS)


def test_eclip_union_rows_merge_and_step_ratios():
    """Per-row means and stds, rows merged by name (later wins, the
    benchmark's order), step-time ratios seed by seed, and the report's
    ENN-vs-dense verdict from the difference and the pooled std."""
    bench = script('eclip_union')
    keys = [f'{bench.short(k)}/{s}' for k in bench.METRICS for s in bench.SPLITS]

    def run(seed, level, spi):
        r = {k: level + seed + i for i, k in enumerate(keys)}
        r.update(seed=seed, seconds_per_iter=spi, train_seconds=1.0, test_seconds=1.0,
                 iterations=600, converged=True, seen_r1_moved_last_two=0.1,
                 temperature=0.07, val_history=[])
        return r

    dense = bench.row_record('dense_frozen', [run(s, 50.0, 0.2 + 0.1 * s) for s in (0, 1, 2)])
    enn = bench.row_record('enn_enn_ft', [run(s, 60.0, 0.6) for s in (0, 1, 2)])
    first, values = keys[0], [60.0, 61.0, 62.0]  # i2t_r1/all of seeds 0, 1, 2
    assert enn['mean'][first] == round(statistics.mean(values), 2)
    assert enn['std'][first] == round(statistics.stdev(values), 2)
    old = bench.row_record('enn_enn_ft', [run(0, 0.0, 9.0)])
    doc = bench.merge([dict(rows=[old], a=1), dict(rows=[enn, dense], a=2)])
    assert [r['name'] for r in doc['rows']] == ['dense_frozen', 'enn_enn_ft'] and doc['a'] == 2
    ratios = [0.6 / 0.2, 0.6 / 0.3, 0.6 / 0.4]
    assert doc['rows'][1]['step_time_vs_dense']['median'] == round(statistics.median(ratios), 2)
    report = script('report')
    verdicts = {v['measure']: v for v in report.union_verdicts(doc)}
    v = verdicts['t2i R@1, seen classes']
    a, b = enn['t2i_r1']['seen'], dense['t2i_r1']['seen']
    pooled = ((statistics.stdev(a) ** 2 + statistics.stdev(b) ** 2) / 2) ** 0.5
    assert v['diff'] == pytest.approx(statistics.mean(a) - statistics.mean(b))
    assert v['pooled'] == pytest.approx(pooled) and v['ahead'] and not v['behind']


def test_orthogonality_reads_the_diagnostics_log(tmp_path):
    bench = script('orthogonality')
    run = tmp_path / 'mode' / '20260101_000000' / 'vis_data'
    run.mkdir(parents=True)
    rows = [{'enn/ortho_err_max': 0.5 * i, 'enn/ortho_err_mean': 0.1 * i, 'step': 97 * i}
            for i in (1, 2, 3)] + [{'loss': 1.0, 'step': 300}, {'accuracy/top1': 81.5, 'step': 2}]
    (run / 'scalars.json').write_text('\n'.join(json.dumps(r) for r in rows) + '\n')
    out = bench.parse('c.py', str(tmp_path / 'mode'), 2)
    assert out['iters'] == [97, 194, 291] and out['log_interval'] == 97
    assert out['ortho_err_max'] == [0.5, 1.0, 1.5] and out['final_ortho_err_max'] == 1.5
    assert out['test_top1'] == 81.5
    (run / 'scalars.json').write_text(json.dumps(rows[0]) + '\n')
    with pytest.raises(FileNotFoundError, match='did not finish'):
        bench.parse('c.py', str(tmp_path / 'mode'), 2)


@pytest.mark.slow
def test_plot_results_draws_the_committed_json(tmp_path):
    import shutil
    for name in (*script('report').OVERHEAD_FILES, 'local_memory.json', 'pipeline_speedup.json',
                 'pipeline_speedup_dense.json', 'eclip_union.json'):
        shutil.copy(osp.join(REPO, 'docs/results', name), tmp_path / name)
    proc = subprocess.run([sys.executable, osp.join(BENCH, 'plot_results.py'), '--dir',
                           str(tmp_path)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    for png in ('overhead.png', 'memory.png', 'pipeline.png', 'eclip_union.png'):
        assert (tmp_path / png).stat().st_size > 10_000


def test_enn_l_headline_assembles_and_computes_from_the_runs(tmp_path):
    """The headline JSON holds the runs it was given; every derived number is
    recomputed here from them."""
    headline = script('enn_l_headline')

    def row(values, config='c.py'):
        return dict(config=config, final_top1=values, mean=round(statistics.mean(values), 2),
                    std=round(statistics.stdev(values), 2))

    budget = dict(epochs=12, per_class=600)
    acc = {'fmnist': {'fast': row([85.0, 85.2, 84.9]), 'bp_dense': row([81.0, 82.0, 82.5])},
           'budget': budget}
    bp = {'fmnist': {'bp_enn_retract': row([85.2, 85.3, 85.2]), 'bp_enn': row([83.0, 83.1, 83.3]),
                     'bp_dense': row([1.0, 2.0, 3.0]), 'block_x': row([99.0, 99.0, 99.0])},
          'budget': budget}
    speed = dict(vs_bp_equal_cores=1.1, vs_bp_equal_cores_range=[1.0, 1.2], vs_bp_ddp=0.8,
                 vs_bp_ddp_range=[0.7, 0.9], vs_bp_pipelined=1.3, vs_bp_pipelined_range=[1.2, 1.4],
                 vs_sequential=1.6, vs_sequential_range=[1.5, 1.7], repeats=3,
                 images_per_s={'pipeline': 1.0}, size=28, batch=128,
                 runs=[dict(bp_pipelined_microbatches=4)] * 3)
    mem = dict(size=112, batch=32, runs=[dict(stage_rss_over_bp=[0.7, 0.95]),
                                         dict(stage_rss_over_bp=[0.8, 0.85]),
                                         dict(stage_rss_over_bp=[0.75, 0.99])])
    paths = {}
    for name, data in (('acc', acc), ('bp', bp), ('speed', speed), ('mem', mem)):
        paths[name] = tmp_path / f'{name}.json'
        paths[name].write_text(json.dumps(data))
    out = tmp_path / 'h.json'
    headline.main(['--accuracy', f"fmnist={paths['acc']}", '--bp', f"fmnist={paths['bp']}",
                   '--throughput', f"r18={paths['speed']}", '--memory', f"r50={paths['mem']}",
                   '--out', str(out)])
    h = json.loads(out.read_text())
    a = h['accuracy']['fmnist']
    assert a['recipe'] == [85.0, 85.2, 84.9] and a['best_bp_variant'] == 'bp_enn_retract'
    assert a['dense_bp'] == [81.0, 82.0, 82.5]  # the recipe's own run wins over --bp
    c = a['computed']
    assert c['recipe_minus_best_bp'] == round(statistics.mean([85.0, 85.2, 84.9])
                                              - statistics.mean([85.2, 85.3, 85.2]), 2)
    pooled = statistics.mean([statistics.stdev([85.0, 85.2, 84.9]) ** 2,
                              statistics.stdev([81.0, 82.0, 82.5]) ** 2]) ** 0.5
    assert c['pooled_std_recipe_dense'] == round(pooled, 2)
    assert c['goal_within_half_point_of_best_bp'] and not c['stretch_at_least_best_bp']
    assert c['beats_dense_bp_by_more_than_pooled_std']
    t = h['throughput']['r18']
    assert (t['vs_ddp'], t['vs_pipelined_bp'], t['computed']['vs_fastest_bp_alternative']) == \
        (0.8, 1.3, 0.8)
    assert not t['computed']['goal_at_least_fastest_bp']
    assert not t['computed']['goal_sequential_1_9']
    m = h['memory']['r50']  # per stage: the median over the repeats, and their range
    assert m['stage_rss_over_bp'] == [0.75, 0.95]
    assert m['stage_rss_over_bp_range'] == [[0.7, 0.8], [0.85, 0.99]]
    assert not m['computed']['goal_each_stage_at_most_0_9']


def test_scale_model_split_and_closed_forms():
    """enn_l_scale: the stage split is the best contiguous one (brute force),
    and the three predictions equal their formulas on made-up units."""
    import itertools
    scale = script('enn_l_scale')
    w = [3.0, 1.0, 4.0, 1.0, 5.0, 9.0, 2.0]
    cost = lambda a, b, last: sum(w[a:b])  # noqa: E731
    for k in (1, 2, 3, 4):
        best = min(max(sum(w[a:b]) for a, b in zip((0, *cuts), (*cuts, len(w))))
                   for cuts in itertools.combinations(range(1, len(w)), k - 1))
        assert scale._splits(cost, len(w), k)[0] == best
    units = [dict(unit=f'u{i}', compute_s={'8': 0.8, '4': 0.4, '2': 0.2, '1': 0.1},
                  param_s=0.05, out_bytes_per_image=1000, param_bytes=4000, head_s=0.1)
             for i in range(4)]
    m = dict(batch=8, units=units)
    p = scale.predict(m, 2, bw=1e6)
    # ENN-ℓ: 2 units per stage, the first with a head and a send of 8 images
    assert p['enn_l'] == pytest.approx(8 / (2 * (0.8 + 0.05) + 0.1 + 8 * 1000 / 1e6))
    # DDP: 4 units at 4 images, every parameter step, a ring all-reduce
    assert p['ddp'] == pytest.approx(8 / (4 * (0.4 + 0.05) + 2 * 1 / 2 * 16000 / 1e6))
    # 1F1B: the best of 2, 4, 8 micro-batches
    want = max(8 / ((mb + 1) * (2 * units[0]['compute_s'][str(8 // mb)]
                                + 2 * 1000 * (8 // mb) / 1e6) + 2 * 0.05) for mb in (2, 4, 8))
    assert p['pipelined_bp'] == pytest.approx(want)


def test_library_bases_start_from_the_enn_bases_and_stay_orthonormal():
    """--libraries: torch's orthogonal parametrization registered on every Q
    and P of an ENN model leaves its outputs unchanged (same bases) and keeps
    the bases orthonormal through optimizer steps."""
    bench = script('enn_overhead')
    from mmengine.registry import init_default_scope

    from enn_mm.core import enn_modules, orthogonality_error
    init_default_scope('mmpretrain')
    plain = bench.build('resnet18w16', 32, dict(ortho='none'))
    kept = bench.build('resnet18w16', 32, dict(ortho='none'))
    swapped = bench.keep_orthonormal(kept, 'torch_orthogonal')
    assert len(swapped) == 2 * len(list(enn_modules(kept)))
    assert set(map(id, swapped.values())) <= set(map(id, kept.parameters()))
    x = torch.randn(2, 1, 32, 32)
    torch.testing.assert_close(kept(x, mode='tensor'), plain(x, mode='tensor'), rtol=1e-4,
                               atol=1e-5)
    step = bench.step_fn(kept, 2, 32, in_channels=1)
    for _ in range(3):
        step()
    assert orthogonality_error(kept) < 1e-5
    assert all(hasattr(m.parametrizations.weight, 'parametrizations')
               for _, m in enn_modules(kept))


def test_library_hook_trains_the_library_bases_and_saves_enn_checkpoints(fmnist_root, tmp_path):
    """local_accuracy's library variants: the hook puts the library's
    Parameters in the optimizer where Q and P were, the bases move and stay
    orthonormal, and the checkpoint holds them under ENN's keys: it loads
    strictly into the ENN config it was trained with."""
    from mmengine.runner import Runner

    from enn_mm.core import enn_modules, factors, orthogonality_error
    from enn_mm.models.loading import build_model, load_model_checkpoint

    import library_ortho  # noqa: F401  (registers the hook, as the variant's config does)
    from helpers import ENN_CFG, tiny_enn_cfg
    cfg = tiny_enn_cfg(ENN_CFG, fmnist_root, tmp_path, epochs=1, ortho='none')
    cfg.custom_hooks = [dict(type='ENNLibraryOrthonormalHook', library='torch_orthogonal')]
    runner = Runner.from_cfg(cfg)
    runner.train()
    model = runner.model
    optimizer = runner.optim_wrapper.optimizer
    trained = {id(p) for g in optimizer.param_groups for p in g['params']}
    for _, module in enn_modules(model):
        plist = module.parametrizations.weight
        for key in ('original0', 'original2'):
            library = plist.parametrizations[key].original
            assert id(library) in trained and optimizer.state[library]['exp_avg'].any()
        assert id(plist.original1) in trained
    assert orthogonality_error(model) < 1e-5
    cfg.custom_hooks = []
    fresh = build_model(cfg)
    load_model_checkpoint(fresh, str(tmp_path / 'epoch_1.pth'))
    for (_, a), (_, b) in zip(enn_modules(fresh), enn_modules(model)):
        for x, y in zip(factors(a), factors(b)):
            torch.testing.assert_close(x, y.detach())
    with pytest.raises(ValueError, match="library 'scipy' is not one of"):
        library_ortho.keep_orthonormal(fresh, 'scipy')


def test_step_limit_gives_a_lower_bound_not_a_timing():
    """--step-limit: a first step past the limit (run in a child process) is
    reported as None, so the library gets a lower bound instead of rounds."""
    import time
    bench = script('enn_overhead')
    assert bench.first_step_within(lambda: time.sleep(5) or 5.0, 0.5) is None
    assert bench.first_step_within(lambda: 0.25, 30) == 0.25


def test_scale_model_param_step_spans_a_retraction_interval(monkeypatch):
    """enn_l_scale.measure: with retraction every n-th step, each timed
    parameter-step sample is n consecutive steps (so it holds one QR) and
    param_s is per step."""
    scale = script('enn_l_scale')
    from enn_mm.core import Retraction
    steps = []
    real_after = Retraction._after_step
    monkeypatch.setattr(Retraction, '_after_step',
                        lambda self, *a: (real_after(self, *a), steps.append(self.steps))[0])
    calls = []

    def once(fn, repeats=3):  # run each timed function once; 1 s a sample
        before = len(steps)
        fn()
        calls.append(len(steps) - before)
        return 1.0
    monkeypatch.setattr(scale, '_timed', once)
    m = scale.measure(f'{REPO}/configs/enn_local/resnet18w16_fmnist_fast.py', 16, 4, ks=(2,))
    params = {u['unit']: u['param_s'] for u in m['units']}
    assert params['backbone.layer1.0'] == pytest.approx(1 / 10)  # retract_interval=10
    assert 10 in calls and max(steps) >= 10  # the sample reached a retraction step
