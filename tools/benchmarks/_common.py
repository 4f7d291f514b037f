"""What every benchmark here shares (imported as ``_common`` from the
benchmarks' own folder, which Python puts first on ``sys.path``)."""
import json
import os
import platform
import re
import statistics
import subprocess

__all__ = ['machine_info', 'median_range', 'offline_threads', 'paired_ratio', 'print_and_save',
           'recipe', 'seeded_run_cfg', 'status_kb']

# the instruction sets that change BLAS and conv kernels between our machines
FLAGS = ('avx2', 'avx512f', 'avx512_bf16', 'amx_tile', 'fma')


def machine_info() -> dict:
    """The CPU a benchmark ran on: ``lscpu``'s model name, the kernel-relevant
    flags it has, and the core count (ratios compare only within one run)."""
    info = dict(cpu=platform.processor() or platform.machine(), cpu_flags=[],
                cpus=os.cpu_count())
    try:
        out = subprocess.run(['lscpu'], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return info
    model = re.search(r'^Model name:\s*(.+)$', out, re.M)
    flags = re.search(r'^Flags:\s*(.+)$', out, re.M)
    if model:
        info['cpu'] = model.group(1).strip()
    if flags:
        have = set(flags.group(1).split())
        info['cpu_flags'] = [f for f in FLAGS if f in have]
    return info


def status_kb(field: str) -> int:
    """A memory field of ``/proc/self/status`` (``VmRSS``, ``VmHWM``: the
    peak resident set), in kB.

    Args:
        field (str): The field name.

    Returns:
        int: Its value in kB.

    Raises:
        RuntimeError: The field is not there (not Linux).
    """
    with open('/proc/self/status') as f:
        for line in f:
            if line.startswith(field + ':'):
                return int(line.split()[1])
    raise RuntimeError(f'{field} not in /proc/self/status')


def median_range(values, digits: int = 4):
    """Median of ``values`` and their ``[min, max]``, rounded.

    Args:
        values (Iterable[float]): The repeats of one measurement.
        digits (int): Decimals kept. Defaults to 4.

    Returns:
        tuple: ``(median, [min, max])``.
    """
    values = list(values)
    return (round(statistics.median(values), digits),
            [round(min(values), digits), round(max(values), digits)])


def paired_ratio(values, baselines, digits: int = 3):
    """Median and range of the per-repeat ratios ``values[i] / baselines[i]``
    (each repeat against the baseline measured in the same round, so drift
    of a noisy machine cancels).

    Args:
        values (Sequence[float]): One measurement per repeat.
        baselines (Sequence[float]): The baseline of the same repeats.
        digits (int): Decimals kept. Defaults to 3.

    Returns:
        tuple: ``(median ratio, [min ratio, max ratio])``.
    """
    if len(values) != len(baselines) or not len(values):
        raise ValueError(f'paired ratios need as many values as baselines, got '
                         f'{len(values)} and {len(baselines)}')
    return median_range([v / b for v, b in zip(values, baselines)], digits)


def recipe(config: str) -> dict:
    """What a benchmark takes from an ENN-ℓ config: the ENN-ℓ model, the
    end-to-end network it cuts (the BP variants train it), the optimizer
    wrappers of both, the input shape, batch size and classes.

    Args:
        config (str): Path of a config whose model is an
            ``ENNLocalClassifier``.

    Returns:
        dict: ``local`` and ``bp`` (model configs, the top-level data
        preprocessor in both), ``local_optim`` (the config's optimizer
        wrapper) and ``bp_optim`` (the same optimizer for the whole network;
        with the ENN constructor for an ENN network, so it keeps its ortho
        mode), ``input_shape``, ``batch``, ``num_classes``.

    Raises:
        SystemExit: The config's model is not an ``ENNLocalClassifier``.
    """
    import copy

    from mmengine.config import Config
    cfg = Config.fromfile(config)
    model = cfg.model.to_dict()
    if model.get('type') != 'ENNLocalClassifier':
        raise SystemExit(f"--config {config}: model.type is {model.get('type')!r}; give an "
                         "ENN-ℓ config (model.type='ENNLocalClassifier').")
    if cfg.get('data_preprocessor') is not None:
        model.setdefault('data_preprocessor', cfg.data_preprocessor.to_dict())
    inner = copy.deepcopy(model['model'])
    inner.setdefault('data_preprocessor', model.get('data_preprocessor'))
    optim = cfg.optim_wrapper.to_dict()
    bp_optim = {k: v for k, v in optim.items() if k not in ('constructor', 'block_constructor')}
    if inner.get('type') == 'ENNModel':
        bp_optim['constructor'] = 'ENNOptimWrapperConstructor'
    head = inner.get('model', inner)['head']
    return dict(local=model, bp=inner, local_optim=optim, bp_optim=bp_optim,
                input_shape=tuple(model['input_shape']), batch=cfg.train_dataloader.batch_size,
                num_classes=head['num_classes'])


def print_and_save(result, out=None) -> None:
    """Print ``result`` as JSON (a benchmark's output) and, with ``out``,
    write the same text there, creating its folder.

    Args:
        result: Anything ``json.dumps`` takes.
        out (str, optional): A file to write as well. Defaults to None.
    """
    text = json.dumps(result, indent=1)
    print(text)
    if out:
        os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
        with open(out, 'w') as f:
            f.write(text + '\n')


def offline_threads(threads: int) -> None:
    """Run this process's torch and faiss on ``threads`` threads and keep
    HuggingFace offline (the text towers are local files). Call it before
    importing torch for the OpenMP variables to count.

    Args:
        threads (int): Threads for torch, faiss and the BLAS libraries.
    """
    for var in ('OMP_NUM_THREADS', 'MKL_NUM_THREADS'):
        os.environ.setdefault(var, str(threads))
    os.environ.setdefault('HF_HUB_OFFLINE', '1')
    os.environ.setdefault('TRANSFORMERS_OFFLINE', '1')
    import faiss
    import torch
    torch.set_num_threads(threads)
    faiss.omp_set_num_threads(threads)


def seeded_run_cfg(path: str, seed: int, work_dir: str):
    """The config at ``path`` for one benchmark run in this process: its own
    work dir and experiment name, ``seed``, warnings-only logging, data
    loaded in the process, and no checkpoints.

    Args:
        path (str): The config file.
        seed (int): ``randomness.seed``.
        work_dir (str): The run's work dir.

    Returns:
        Config: The config, to be adjusted further by the benchmark.
    """
    import time

    from mmengine.config import Config
    cfg = Config.fromfile(path)
    cfg.work_dir = work_dir
    cfg.experiment_name = f'{os.path.basename(work_dir)}_{int(time.time() * 1e3)}'
    cfg.randomness = dict(seed=seed)
    cfg.log_level = 'WARNING'
    for loader in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        cfg[loader].update(num_workers=0, persistent_workers=False)
    cfg.default_hooks.checkpoint = dict(type='CheckpointHook', interval=10**6, save_last=False)
    return cfg
