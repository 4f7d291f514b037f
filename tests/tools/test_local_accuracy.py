"""tools/benchmarks/local_accuracy.py: its generated configs and summary."""


def test_local_accuracy_benchmark_configs(tmp_path):
    """The benchmark's generated configs: the variant's model overrides and
    the stratified subset on top of the shipped config, nothing else."""
    import importlib.util
    import os.path as osp

    from mmengine.config import Config

    from helpers import REPO
    spec = importlib.util.spec_from_file_location(
        'local_accuracy', osp.join(REPO, 'tools/benchmarks/local_accuracy.py'))
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    for dataset in ('fmnist', 'mnist'):
        for name in bench.VARIANTS:
            config, _ = bench.variant_config(name, dataset)
            assert osp.exists(osp.join(REPO, config)), (name, dataset, config)
            assert (dataset == 'mnist') == ('mnist' in config and 'fmnist' not in config)
    path = bench.write_config('block_aux_net_recon', 'mnist', 50, str(tmp_path))
    cfg = Config.fromfile(path)
    shipped = Config.fromfile(osp.join(REPO, 'configs/enn_local/resnet18w16_mnist.py'))
    assert cfg.model.local_head == dict(type='ENNAuxNetLocalHead')
    assert cfg.model.local_objectives == bench.INFOPRO
    assert cfg.train_dataloader.dataset.type == 'ENNClassSubset'
    assert cfg.train_dataloader.dataset.per_class == 50
    assert cfg.train_dataloader.dataset.dataset == shipped.train_dataloader.dataset
    for key in ('optim_wrapper', 'param_scheduler', 'train_cfg', 'val_dataloader'):
        assert cfg[key] == shipped[key], key
    assert {k: v for k, v in cfg.model.items() if k not in ('local_head', 'local_objectives')} \
        == {k: v for k, v in shipped.model.items() if k != 'local_head'}


def test_local_accuracy_summary_ratios_and_table():
    """The benchmark's summary: ratios are the quotients of the two runs named,
    the table is rendered from the saved JSON."""
    import importlib.util
    import os.path as osp

    from helpers import REPO
    spec = importlib.util.spec_from_file_location(
        'local_accuracy', osp.join(REPO, 'tools/benchmarks/local_accuracy.py'))
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)

    def run(name, seed, top1, iter_s, rss):
        return dict(variant=name, dataset='fmnist', seed=seed, wall_s=1.0, epochs=[1, 2],
                    top1=top1, iter_s=iter_s, peak_rss_mb=rss)

    base = {0: run('bp_dense', 0, [50.0, 80.0], 0.2, 1000.0),
            1: run('bp_dense', 1, [52.0, 82.0], 0.25, 1100.0)}
    local_runs = [run('block_downstream', 0, [40.0, 79.0], 0.5, 900.0),
                  run('block_downstream', 1, [41.0, 80.0], 0.6, 1000.0)]
    summary = bench.summarize('block_downstream', 'fmnist', local_runs, base)
    assert summary['mean'] == 79.5 and summary['final_top1'] == [79.0, 80.0]
    assert summary['vs_bp_dense']['iter_time'] == [2.5, 2.4]
    assert summary['vs_bp_dense']['peak_rss'] == [0.9, round(1000 / 1100, 3)]
    assert summary['vs_bp_dense']['iter_time_median'] == 2.45
    results = {'fmnist': {'bp_dense': bench.summarize('bp_dense', 'fmnist', list(base.values()),
                                                      base),
                          'block_downstream': summary}}
    for r in results['fmnist'].values():
        r['vs_best_bp'] = dict(points_behind=round(81.0 - r['mean'], 2))
    table = bench.markdown(results, 'fmnist')
    assert '| `block_downstream` |' in table and '| 79.50 ± 0.71 | 79.00 / 80.00 | 1.50 |' in table
    assert '(best BP: `bp_dense`, 81.00)' in table
