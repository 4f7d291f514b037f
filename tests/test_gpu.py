"""The GPU path: AMP, CUDA compute modes, faiss-gpu, NCCL.

Tests marked ``gpu`` need a CUDA GPU and are skipped elsewhere with the reason
shown (``pytest -rs``); ``tools/gpu_check.sh`` runs them with
``ENN_MM_REQUIRE_GPU=1``, under which a missing GPU or faiss-gpu is an error,
not a skip. The unmarked tests reach the same logic on the CPU (autocast
with bf16), so CI guards most of it.
"""
import copy
import os
import os.path as osp
from contextlib import contextmanager

import numpy as np
import pytest
import torch
from mmengine.optim import AmpOptimWrapper, OptimWrapper
from mmengine.registry import init_default_scope
from mmengine.runner import Runner
from mmpretrain.registry import MODELS
from mmpretrain.structures import DataSample

import enn_mm
from enn_mm.core import factors, set_compute

from helpers import REPO, TINY

CUDA = torch.cuda.is_available()
needs_cuda = pytest.mark.skipif(not CUDA, reason='needs a CUDA GPU: run tools/gpu_check.sh '
                                'on a GPU machine')
gpu = [pytest.mark.gpu, needs_cuda]

RESNET = copy.deepcopy(TINY)  # a width-8 ResNet-18, two stages
RESNET['backbone']['in_channels'] = 3
VIT = dict(type='ImageClassifier',
           backbone=dict(type='VisionTransformer', img_size=32, patch_size=8,
                         arch=dict(embed_dims=64, num_layers=2, num_heads=2,
                                   feedforward_channels=128)),
           neck=None,
           head=dict(type='VisionTransformerClsHead', num_classes=10, in_channels=64))
MODELS_ = {'resnet': RESNET, 'vit': VIT}


def enn_model(arch, device, **enn):
    init_default_scope('mmpretrain')
    torch.manual_seed(0)
    model = MODELS.build(dict(type='ENNModel', model=copy.deepcopy(MODELS_[arch]),
                              enn=dict(ortho='penalty', gamma=1e-3, **enn),
                              data_preprocessor=dict(num_classes=10)))
    model.init_weights()
    return model.to(device).train()


def data(device, n=16):
    g = torch.Generator().manual_seed(0)
    return dict(inputs=(torch.rand(n, 3, 32, 32, generator=g) * 255).to(device),
                data_samples=[DataSample().set_gt_label(i % 10) for i in range(n)])


def step(model, wrapper_cls, **kw):
    """One training step; returns the loss and every factor's gradient."""
    wrapper = wrapper_cls(optimizer=torch.optim.SGD(model.parameters(), lr=0.0), **kw)
    grads = {}
    names = {id(p): n for n, p in model.named_parameters()}

    def keep(optimizer, args, kwargs):
        for group in optimizer.param_groups:
            for p in group['params']:
                if p.grad is not None:
                    grads[names[id(p)]] = p.grad.detach().clone()

    wrapper.optimizer.register_step_pre_hook(keep)
    logs = model.train_step(data(next(model.parameters()).device), wrapper)
    return logs['loss'].detach().float(), grads


class CPUAutocastWrapper(OptimWrapper):
    """What ``AmpOptimWrapper`` does (which mmengine allows on GPUs only):
    the forward under autocast, the backward outside it."""

    def __init__(self, dtype, **kwargs):
        super().__init__(**kwargs)
        self.dtype = dtype

    @contextmanager
    def optim_context(self, model):
        with super().optim_context(model), torch.autocast('cpu', dtype=self.dtype):
            yield


def check_amp_step(arch, device, dtype):
    """An AMP step is finite, close to the fp32 step, and keeps the factors
    (and their gradients) in fp32."""
    model = enn_model(arch, device)
    ref_loss, ref = step(copy.deepcopy(model), OptimWrapper)
    amp = AmpOptimWrapper if device == 'cuda' else CPUAutocastWrapper
    loss, got = step(model, amp, dtype=dtype)
    assert torch.isfinite(loss)
    torch.testing.assert_close(loss, ref_loss, rtol=5e-2, atol=5e-2)
    bases = {id(t) for m in enn_mm.core.enn_modules(model) for t in factors(m[1])}
    names = {n for n, p in model.named_parameters() if id(p) in bases}
    assert names and names <= set(got)
    for n in names:
        p = dict(model.named_parameters())[n]
        assert p.dtype == torch.float32 and got[n].dtype == torch.float32, n
        assert torch.isfinite(got[n]).all(), n
        cos = torch.nn.functional.cosine_similarity(got[n].flatten(), ref[n].flatten(), dim=0)
        assert cos > 0.97 or ref[n].norm() < 1e-6, (n, float(cos))


# ------------------------------------------------------- on the CPU (CI)
@pytest.mark.parametrize('arch', ['resnet', 'vit'])
def test_autocast_bf16_step_on_cpu(arch):
    torch.set_num_threads(1)
    check_amp_step(arch, 'cpu', torch.bfloat16)


@pytest.mark.parametrize('arch', ['resnet', 'vit'])
def test_compute_modes_agree_on_cpu(arch):
    check_compute_modes(arch, 'cpu')


def check_compute_modes(arch, device):
    """'auto' chooses by the cost rule; 'materialize' and 'factored' give
    the same outputs and gradients."""
    model = enn_model(arch, device).eval()
    x = data(device, 4)['inputs'] / 255
    outs = {}
    for mode in ('materialize', 'factored', 'auto'):
        set_compute(model, mode)
        with torch.no_grad():
            outs[mode] = model(x, mode='tensor')
    scale = outs['materialize'].abs().max()
    for mode in ('factored', 'auto'):
        torch.testing.assert_close(outs[mode], outs['materialize'], rtol=0,
                                   atol=1e-4 * float(scale))


# ------------------------------------------------------------ on a GPU
@pytest.mark.parametrize('dtype', [torch.float16, torch.bfloat16], ids=['fp16', 'bf16'])
@pytest.mark.parametrize('arch', ['resnet', 'vit'])
@pytest.mark.gpu
@needs_cuda
def test_amp_step_on_cuda(arch, dtype):
    check_amp_step(arch, 'cuda', dtype)


@pytest.mark.parametrize('arch', ['resnet', 'vit'])
@pytest.mark.gpu
@needs_cuda
def test_compute_modes_agree_on_cuda(arch):
    check_compute_modes(arch, 'cuda')


def _run_cfg(path, root, work_dir, amp=True, **model):
    from mmengine.config import Config
    cfg = Config.fromfile(path)
    cfg.model.update(model)
    for loader in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        cfg[loader].update(batch_size=16, num_workers=0, persistent_workers=False)
        cfg[loader].dataset.data_root = root
    cfg.train_cfg = dict(by_epoch=False, max_iters=20, val_interval=20)
    cfg.param_scheduler = []
    cfg.default_hooks.checkpoint = dict(type='CheckpointHook', interval=20)
    cfg.default_hooks.logger.interval = 5
    cfg.train_dataloader.sampler = dict(type='InfiniteSampler', shuffle=True)
    cfg.custom_hooks = []
    cfg.work_dir = str(work_dir)
    if amp:
        cfg.optim_wrapper.type = 'AmpOptimWrapper'
        cfg.optim_wrapper.dtype = 'bfloat16'
    return cfg


def check_twenty_iterations(config, root, work_dir, cuda):
    cfg = _run_cfg(osp.join(REPO, config), root, work_dir, amp=cuda)
    runner = Runner.from_cfg(cfg)
    assert next(runner.model.parameters()).is_cuda == cuda
    runner.train()
    losses = runner.message_hub.get_scalar('train/loss').data[0]
    assert len(losses) == 20 and np.isfinite(losses).all()
    metrics = runner.val_loop.run()
    # the metric equals the accuracy of the model's own logits on the val set
    model, correct, total = runner.model.eval(), 0, 0
    with torch.no_grad():
        for batch in runner.val_dataloader:
            data = model.data_preprocessor(batch, False)
            logits = model(data['inputs'], mode='tensor')
            labels = torch.cat([s.gt_label for s in data['data_samples']]).to(logits.device)
            correct += (logits.argmax(1) == labels).sum().item()
            total += len(labels)
    assert total == 40
    assert metrics['accuracy/top1'] == pytest.approx(100 * correct / total, abs=1e-3)


@pytest.mark.parametrize('config', ['configs/enn/resnet18w16_fmnist.py',
                                    'configs/enn_local/resnet18w16_fmnist.py'])
def test_twenty_iterations_with_the_runner_on_cpu(fmnist_root, tmp_path, config):
    """What the CUDA run below does, without AMP (mmengine allows it on GPUs only)."""
    torch.set_num_threads(1)
    check_twenty_iterations(config, fmnist_root, tmp_path, cuda=False)


@pytest.mark.parametrize('config', ['configs/enn/resnet18w16_fmnist.py',
                                    'configs/enn_local/resnet18w16_fmnist.py'])
@pytest.mark.gpu
@needs_cuda
def test_twenty_amp_iterations_with_the_runner_on_cuda(fmnist_root, tmp_path, config):
    check_twenty_iterations(config, fmnist_root, tmp_path, cuda=True)


@pytest.mark.gpu
@needs_cuda
def test_faiss_gpu_equals_faiss_cpu():
    from enn_mm.evaluation.search import FaissSearcher, faiss_has_gpu
    assert faiss_has_gpu(), 'faiss-gpu is not installed or sees no GPU'
    rng = np.random.default_rng(0)
    gallery = rng.standard_normal((20000, 64)).astype(np.float32)
    queries = rng.standard_normal((500, 64)).astype(np.float32)
    for similarity in ('cosine', 'ip', 'l2'):
        cpu = FaissSearcher(gallery, similarity, device='cpu').search(queries, 50)
        gpu = FaissSearcher(gallery, similarity, device='gpu').search(queries, 50)
        np.testing.assert_array_equal(gpu[1], cpu[1])
        np.testing.assert_allclose(gpu[0], cpu[0], rtol=1e-4, atol=1e-4)


@pytest.mark.gpu
@needs_cuda
def test_million_gallery_search_on_gpu_matches_bruteforce():
    from enn_mm.evaluation.search import FaissSearcher
    rng = np.random.default_rng(1)
    gallery = rng.standard_normal((1_000_000, 128)).astype(np.float32)
    queries = rng.standard_normal((256, 128)).astype(np.float32)
    scores, ids = FaissSearcher(gallery, 'ip', device='gpu').search(queries, 10)
    g = torch.from_numpy(gallery).cuda()
    ref = torch.from_numpy(queries).cuda() @ g.T
    ref_scores, ref_ids = ref.topk(10, dim=1)
    np.testing.assert_allclose(scores, ref_scores.cpu().numpy(), rtol=1e-4, atol=1e-3)
    # ids may differ only where scores tie to float precision
    same = (ids == ref_ids.cpu().numpy()).mean()
    assert same > 0.999, same


@pytest.mark.gpu
@needs_cuda
def test_nccl_ddp_one_process_and_pipeline_two_processes(fmnist_root, tmp_path):
    """DDP over NCCL with one process trains as a plain run does; the ENN-ℓ
    pipeline with two stages sharing the one GPU equals one process. NCCL
    refuses two ranks on one device, so the pipeline's transport there is
    gloo (activations staged through the host); with one GPU per stage it is
    NCCL."""
    from helpers import LOCAL_CFG, assert_same_checkpoint, launch, load, pipe_cfg, tiny_local_cfg

    def deterministic(cfg):
        cfg.randomness = dict(seed=0, deterministic=True)
        return cfg

    launch(deterministic(tiny_local_cfg(LOCAL_CFG, fmnist_root, tmp_path / 'seq', epochs=2)),
           tmp_path, 1, 'seq')
    pipe = deterministic(pipe_cfg(fmnist_root, tmp_path / 'pipe', 2))
    pipe.env_cfg = dict(dist_cfg=dict(backend='gloo'))
    launch(pipe, tmp_path, 2, 'pipe', env=dict(LOCAL_RANK='0'))  # both ranks on cuda:0
    assert_same_checkpoint(load(tmp_path / 'pipe' / 'epoch_2.pth'),
                           load(tmp_path / 'seq' / 'epoch_2.pth'), atol=1e-5)

    enn = osp.join(REPO, 'configs/enn/resnet18w16_fmnist.py')
    one = deterministic(tiny_local_cfg(enn, fmnist_root, tmp_path / 'one', epochs=2))
    launch(one, tmp_path, 1, 'one')
    ddp = deterministic(tiny_local_cfg(enn, fmnist_root, tmp_path / 'ddp', epochs=2))
    ddp.env_cfg = dict(dist_cfg=dict(backend='nccl'))
    ddp.model_wrapper_cfg = dict(type='MMDistributedDataParallel')
    ddp.log_level = 'INFO'  # the config dump names the backend
    out = launch(ddp, tmp_path, 1, 'ddp', ['--launcher', 'pytorch'])[0]
    assert 'nccl' in out.lower(), 'the run did not report the NCCL backend'
    assert_same_checkpoint(load(tmp_path / 'ddp' / 'epoch_2.pth'),
                           load(tmp_path / 'one' / 'epoch_2.pth'), atol=1e-5)


@pytest.mark.skipif(CUDA, reason='checks the refusal on a machine without a GPU')
def test_required_gpu_missing_is_an_error_not_a_skip():
    import subprocess
    import sys
    env = dict(os.environ, ENN_MM_REQUIRE_GPU='1')
    proc = subprocess.run([sys.executable, '-m', 'pytest', '-m', 'gpu', '-q', '-p',
                           'no:cacheprovider', 'tests/test_gpu.py'], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0
    assert 'ENN_MM_REQUIRE_GPU=1 but torch sees no CUDA GPU' in proc.stdout + proc.stderr


def test_gpu_check_script_is_complete():
    """The script the GPU machine runs: valid bash, and every benchmark
    command in it is accepted by that benchmark's own argument parser (the
    GPU options included), so the run cannot stop at a misspelt flag."""
    import importlib.util
    import re
    import shlex
    import subprocess
    path = osp.join(REPO, 'tools/gpu_check.sh')
    assert subprocess.run(['bash', '-n', path]).returncode == 0
    text = open(path).read().replace('\\\n', ' ')
    calls = re.findall(r'tools/benchmarks/(\w+)\.py ([^>\n]*)', text)
    assert {name for name, _ in calls} == {'enn_overhead', 'retrieval_eval'}
    for name, args in calls:
        spec = importlib.util.spec_from_file_location(
            name, osp.join(REPO, 'tools', 'benchmarks', f'{name}.py'))
        bench = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(bench)
        parsed = bench.parse_args(shlex.split(args))
        if name == 'enn_overhead':
            assert (parsed.device, parsed.amp, parsed.intervals) == ('cuda', 'bf16', [10])
        else:
            assert parsed.galleries == [1000000] and parsed.stream_10m
