"""Every usage line of README.md, run as a user runs it.

Each command is taken from the README's own text (a test fails when the line
it runs is no longer there), its placeholders (CONFIG, CKPT, ...) filled in
with shipped configs, and started in a new bash that has activated nothing
and follows the README: ``source .venv/bin/activate``, then the line. Only
tiny data is appended (``--cfg-options`` with the Fashion-MNIST fixture and
one epoch); the configs are the shipped files, as written.

Commands covered elsewhere are listed in ``ELSEWHERE`` with what covers
them: the benchmark scripts run shrunk in tests/tools/test_benchmarks.py,
except the two multi-hour training runs, whose summary code alone is tested;
``test_every_readme_command_is_run`` keeps the two lists complete.
"""
import json
import os
import os.path as osp
import re
import subprocess
import sys

import pytest

from helpers import REPO, free_port

README = osp.join(REPO, 'README.md')
VENV = osp.join(REPO, '.venv')
ENN = 'configs/enn/resnet18w16_fmnist.py'
PIPELINE = 'configs/enn_local/resnet18w16_fmnist_pipeline.py'
RETRIEVAL = 'configs/retrieval/resnet18w16_fmnist_retrieval.py'

# README commands covered by other tests, and how.
SHRUNK = 'tests/tools/test_benchmarks.py runs it with tiny arguments'
ELSEWHERE = {
    'bash tools/run_tests.sh': '.ci/run (this suite)',
    'bash tools/gpu_check.sh': 'tests/test_gpu.py (its commands parsed here; run on a GPU)',
    'python tools/benchmarks/pipeline_speedup.py': SHRUNK,
    'python tools/benchmarks/local_memory.py': SHRUNK,
    'python tools/benchmarks/retrieval_eval.py': SHRUNK,
    'OMP_NUM_THREADS=1 python tools/benchmarks/retrieval_eval.py': SHRUNK,
    'python tools/benchmarks/enn_overhead.py': 'test_benchmarks.py calls its measure() in process',
    # hours of training: only their summaries are tested
    'python tools/benchmarks/accuracy.py': 'test_benchmarks.py: summaries only',
    'python tools/benchmarks/eclip_fmnist.py': 'test_benchmarks.py: summaries only',
}
# The commands this module runs (a README line starting with one of these).
RUN_HERE = ('bash tools/demo.sh', 'python tools/train.py CONFIG', 'python tools/test.py CONFIG',
            'bash tools/dist_train.sh CONFIG ', 'python tools/export_dense.py CONFIG',
            f'bash tools/dist_train.sh {PIPELINE} 2', 'python tools/retrieval_eval.py CONFIG')


def readme_commands():
    """Shell commands of the README: bash blocks, and inline code that
    starts with ``python tools/`` or ``bash tools/`` (comments dropped)."""
    text = open(README).read()
    found = []
    for block in re.findall(r'```bash\n(.*?)```', text, re.S):
        found += [line.split('  #')[0].strip() for line in block.splitlines() if line.strip()]
    found += re.findall(r'`((?:[A-Z_]+=\S+ )*(?:python|bash) tools/[^`]+)`', text)
    return sorted(set(found))


def readme_line(prefix: str) -> str:
    """The README's command that starts with ``prefix`` (exactly one)."""
    lines = {c for c in readme_commands() if c.startswith(prefix)}
    assert len(lines) == 1, f'README has {len(lines)} commands starting with {prefix!r}'
    return lines.pop()


def fill(line: str, **subs) -> str:
    """``line`` with its placeholders replaced (each must be in it)."""
    for key, value in subs.items():
        assert key in line, (key, line)
        line = line.replace(key, value)
    return line


def user_shell(command: str, timeout=600, env=None):
    """Run ``command`` as the README says, in a shell that activated nothing."""
    if not osp.exists(osp.join(VENV, 'bin', 'activate')):
        pytest.fail(f'{VENV} is missing: run bash tools/setup_env.sh (the README set-up)')
    path = os.pathsep.join(p for p in os.environ.get('PATH', '').split(os.pathsep)
                           if not p.startswith(VENV) and p != osp.dirname(sys.executable))
    clean = {k: v for k, v in os.environ.items()
             if k not in ('VIRTUAL_ENV', 'PYTHONPATH', 'PYTHONHOME', 'CONDA_PREFIX')}
    clean.update(PATH=path, OMP_NUM_THREADS='1', **(env or {}))
    proc = subprocess.run(['bash', '-c', f'source .venv/bin/activate && {command}'], cwd=REPO,
                          env=clean, capture_output=True, text=True, timeout=timeout)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, f'$ {command}\n{out[-5000:]}'
    return out


def tiny_data(root: str, epochs: int = 1) -> str:
    """--cfg-options: the Fashion-MNIST fixture and one short epoch."""
    keys = [f'{loader}.dataset.data_root={root}'
            for loader in ('train_dataloader', 'val_dataloader', 'test_dataloader')]
    return ' '.join(['--cfg-options', *keys, f'train_cfg.max_epochs={epochs}'])


def test_every_readme_command_is_run():
    for command in readme_commands():
        assert command.startswith(RUN_HERE) or command.startswith(tuple(ELSEWHERE)), (
            f'README command {command!r} has no test: add it to RUN_HERE or ELSEWHERE')


@pytest.mark.slow
def test_demo_command(fmnist_root, tmp_path):
    """README command 1, with the fixture data and one epoch appended."""
    out = user_shell(f"{readme_line('bash tools/demo.sh')} --work-dir {tmp_path} "
                     f'{tiny_data(fmnist_root)}')
    assert 'same prediction           : 100.000 %' in out
    summary = json.loads((tmp_path / 'summary.json').read_text())
    assert summary['test_images'] == 40 and summary['enn_top1'] == summary['dense_export_top1']
    assert summary['cpu_model']  # the demo's time depends on it


@pytest.mark.slow
def test_train_test_export_and_retrieval_commands(fmnist_root, tmp_path):
    """train -> test -> export -> retrieval_eval on the ENN config and on its
    export (same embeddings: same metrics), equal to the Runner's
    FaissRetrievalTestLoop (tools/test.py with the retrieval config), and the
    ENN checkpoint with the dense config refused."""
    data = tiny_data(fmnist_root)
    work = tmp_path / 'x'
    train = readme_line('python tools/train.py CONFIG')
    user_shell(fill(train, CONFIG=ENN, **{'work_dirs/x': str(work)}) + f' {data}')
    ckpt = str(work / 'epoch_1.pth')
    assert osp.exists(ckpt)

    test = readme_line('python tools/test.py CONFIG')
    out = user_shell(fill(test, CONFIG=ENN, **{'work_dirs/x/epoch_N.pth': ckpt}) + f' {data}')
    assert 'accuracy/top1' in out

    export = readme_line('python tools/export_dense.py CONFIG')
    dense = str(tmp_path / 'out.pth')
    out = user_shell(fill(export.replace(' out.pth', f' {dense}'), CONFIG=ENN, CKPT=ckpt)
                     + f' {data}')
    assert 'max relative output difference' in out and osp.exists(tmp_path / 'out.py')

    retrieval = readme_line('python tools/retrieval_eval.py CONFIG')
    metrics = {}
    for name, cfg, weights in (('enn', ENN, ckpt), ('dense', str(tmp_path / 'out.py'), dense)):
        user_shell(fill(retrieval, CONFIG=cfg, CHECKPOINT=weights)
                   + f' --work-dir {tmp_path / name} {data}')
        metrics[name] = json.loads((tmp_path / name / 'metrics.json').read_text())['metrics']
    assert metrics['enn'] == pytest.approx(metrics['dense'], abs=1e-9)
    # the Runner's retrieval loop on the dense export: the same numbers
    out = user_shell(fill(test, CONFIG=RETRIEVAL, **{'work_dirs/x/epoch_N.pth': dense})
                     + f" {data} 'test_evaluator.topk=(1,5,10)'")
    for key in ('Recall@1', 'Recall@5', 'Precision@10', 'mAP@R'):
        runner = float(re.search(rf'retrieval/{key}: ([0-9.]+)', out).group(1))
        assert runner == pytest.approx(metrics['dense'][key], abs=1e-4), key
    proc = subprocess.run(
        ['bash', '-c', 'source .venv/bin/activate && '
         + fill(retrieval, CONFIG=RETRIEVAL, CHECKPOINT=ckpt) + f' {data}'],
        cwd=REPO, capture_output=True, text=True, timeout=600)
    assert proc.returncode != 0
    assert 'is an ENN checkpoint' in proc.stderr and 'Traceback' not in proc.stderr


@pytest.mark.slow
def test_dist_train_command(fmnist_root, tmp_path):
    """`bash tools/dist_train.sh CONFIG NUM_PROCS`: 2 processes, gloo on CPU."""
    line = fill(readme_line('bash tools/dist_train.sh CONFIG NUM_PROCS'),
                CONFIG=ENN, NUM_PROCS='2')
    out = user_shell(f'{line} --work-dir {tmp_path} {tiny_data(fmnist_root)}',
                     env=dict(PORT=str(free_port())))
    assert osp.exists(tmp_path / 'epoch_1.pth'), out[-3000:]


@pytest.mark.slow
def test_pipeline_command_as_shipped(fmnist_root, tmp_path):
    """The pipelined ENN-ℓ config, exactly as shipped, on 2 processes."""
    line = readme_line(f'bash tools/dist_train.sh {PIPELINE} 2')
    out = user_shell(f'{line} --work-dir {tmp_path} {tiny_data(fmnist_root)}',
                     env=dict(PORT=str(free_port())))
    assert osp.exists(tmp_path / 'epoch_1.pth'), out[-3000:]
    assert 'Only one of' not in out
