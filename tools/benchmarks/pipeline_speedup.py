"""Training throughput of pipelined ENN-ℓ against sequential ENN-ℓ and end-to-end BP.

    python tools/benchmarks/pipeline_speedup.py [--stages 2] [--steps 30]
        [--penalty-interval N | --dense] [--local-head pool_linear|downstream|...]

ResNet-50 (MMPretrain's ``ResNet(depth=50)``, 1000 classes) as ENN with the
orthogonality penalty on every step (the paper's; ``--penalty-interval 10``:
every 10th step; ``--dense``: the plain network), batch 16 at 112 px, SGD
with momentum, synthetic images.
ENN-ℓ uses the paper's split (stem, 16 bottlenecks, head) with ``pool_linear``
(``ENNPoolLinearLocalHead``) heads (``--local-head``: another local head, e.g.
``downstream``: ``ENNDownstreamLocalHead``, the AugLocal copies of the best
per-block recipe, depth 2). Every variant runs in fresh processes, each pinned
to its own cores with its thread count set explicitly:

- ``pipeline``: ``--stages`` K processes × ``--threads`` threads, blocks
  assigned by ``ENNPipelineParallel`` (gloo on CPU, NCCL with ``--device
  cuda``). The pipeline is filled by ``--warmup`` steps, then each stage
  times ``--steps`` steps; the slowest stage's rate is the pipeline's
  (steady state: filling and draining once per epoch is not counted);
- ``sequential``: single-process ENN-ℓ, one worker's threads;
- ``bp_equal_cores``: end-to-end BP in one process with K × ``--threads``
  threads (the same total cores);
- ``bp_ddp``: end-to-end BP data-parallel over K processes × ``--threads``
  threads (``MMDistributedDataParallel``, gloo; each rank ``--batch`` / K
  images, the same global batch), the other way to use the same cores.

Warm-up is even: the pipeline plans its split first (blocks timed alone,
then up to ``--refine`` rounds of trial steps, which also warm its
processes); every other variant then runs warm-up steps for the same
seconds as that planning took, before the ``--warmup`` steps all get.

Every variant counts iterations as the Runner does, so a penalty every n-th
step costs what it costs in training (keep ``--steps`` a multiple of n).

Prints one JSON object: images/s of each, ``vs_sequential`` (pipeline /
sequential), ``vs_bp_equal_cores``, ``vs_bp_ddp`` (with ``--repeats``
R, the median of R paired ratios and their ``_range``), ``stage_busy``
(fraction of its timed window each stage computed rather than waited) and
``stage_step_s`` (each stage's busy seconds per step), ``steady_step_s``
and ``fill_drain_s``: the time an epoch boundary adds (the pipeline drained
for checkpoints and validation, then filled), measured on a few steps
started from an empty pipeline.
With ``--device cuda`` each stage gets its own GPU (``--stages`` at most the
number of GPUs); with one GPU only the sequential and BP variants run.
"""
import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import time

from _common import machine_info, median_range, recipe, status_kb

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

LOCAL_HEADS = {  # --local-head choice -> the local head's config
    'pool_linear': dict(type='ENNPoolLinearLocalHead'),
    'conv_aux': dict(type='ENNConvAuxLocalHead'),
    'aux_net': dict(type='ENNAuxNetLocalHead'),
    'downstream': dict(type='ENNDownstreamLocalHead', depth=2),
}


def recipe_for(args) -> dict:
    """``recipe(args.config)`` with ``--size`` (if given) as the input size."""
    r = recipe(args.config)
    if args.size:
        r['input_shape'] = (r['input_shape'][0], args.size, args.size)
        r['local']['input_shape'] = r['input_shape']
    return r


def build_recipe(args, local: bool, device):
    """The model and optimizer wrapper of ``--config``: ENN-ℓ or end to end."""
    import torch
    from mmengine.optim import build_optim_wrapper
    from mmengine.registry import init_default_scope
    from mmpretrain.registry import MODELS

    import enn_mm.local  # noqa: F401
    init_default_scope('mmpretrain')
    torch.manual_seed(0)
    r = recipe_for(args)
    model = MODELS.build(r['local'] if local else r['bp']).to(device)
    optim = build_optim_wrapper(model, r['local_optim'] if local else r['bp_optim'])
    if not local and hasattr(optim, 'arm'):
        optim.arm(model)
    return model, optim


def build(args, local: bool, device):
    if args.config:
        return build_recipe(args, local, device)
    import torch
    from mmengine.optim import OptimWrapper, build_optim_wrapper
    from mmengine.registry import init_default_scope
    from mmpretrain.registry import MODELS

    import enn_mm.local  # noqa: F401
    from enn_mm.engine import ENNOptimWrapper
    init_default_scope('mmpretrain')
    torch.manual_seed(0)
    depth = {'resnet50': 50, 'resnet18': 18}[args.arch]
    model = dict(type='ImageClassifier', backbone=dict(type='ResNet', depth=depth),
                 neck=dict(type='GlobalAveragePooling'),
                 head=dict(type='LinearClsHead', num_classes=1000,
                           in_channels=2048 if depth == 50 else 512))
    if not args.dense:
        model = dict(type='ENNModel', model=model,
                     enn=dict(ortho='penalty', gamma=1e-5,
                              penalty_interval=args.penalty_interval))
    optimizer = dict(type='SGD', lr=0.01, momentum=0.9, weight_decay=1e-4)
    if not local:
        model = MODELS.build(model).to(device)
        sgd = torch.optim.SGD([p for p in model.parameters() if p.requires_grad],
                              **{k: v for k, v in optimizer.items() if k != 'type'})
        if args.dense:
            return model, OptimWrapper(sgd)
        # the ENN wrapper hands the model its step (the penalty schedule)
        wrapper = ENNOptimWrapper(sgd)
        wrapper.arm(model)
        return model, wrapper
    head = dict(LOCAL_HEADS[args.local_head])
    model = MODELS.build(dict(type='ENNLocalClassifier', model=model, cuts='resnet_block',
                              input_shape=(3, args.size, args.size), local_head=head,
                              max_head_params=2**28)).to(device)
    return model, build_optim_wrapper(
        model, dict(constructor='ENNLocalOptimWrapperConstructor', optimizer=optimizer))


def batch(args, device):
    import torch
    from mmpretrain.structures import DataSample
    g = torch.Generator().manual_seed(0)
    shape, classes = (3, args.size, args.size), 1000
    if args.config:
        r = recipe_for(args)
        shape, classes = r['input_shape'], r['num_classes']
    return dict(inputs=torch.randint(0, 256, (args.batch, *shape), generator=g,
                                     dtype=torch.uint8).to(device),
                data_samples=[DataSample().set_gt_label(i % classes) for i in range(args.batch)])


def counted(model, optim):
    """``train_step`` as the Runner calls it (the optimizer wrappers count
    the steps the penalty schedule follows)."""
    def step(data):
        return model.train_step(data, optim)
    return step


def sync(device):
    import torch
    if device.type == 'cuda':
        torch.cuda.synchronize(device)


def warm_up(step, data, args, device):
    """``--warmup-s`` seconds of steps (the pipeline's planning time), then
    ``--warmup`` steps."""
    start = time.perf_counter()
    while time.perf_counter() - start < args.warmup_s:
        step(data)
    for _ in range(args.warmup):
        step(data)
    sync(device)


def run_single(args) -> dict:
    """Sequential ENN-ℓ or BP in this process."""
    import torch
    device = torch.device(args.device)
    model, optim = build(args, args.worker == 'sequential', device)
    model.train()
    data = batch(args, device)
    step = counted(model, optim)
    warm_up(step, data, args, device)
    times = []
    for _ in range(args.steps):
        t = time.perf_counter()
        step(data)
        sync(device)
        times.append(time.perf_counter() - t)
    return dict(images_per_s=args.batch * args.steps / sum(times), peak_rss_mb=peak_rss_mb(),
                median_step_s=statistics.median(times))


def init_rank(args):
    """Join the process group (RANK / WORLD_SIZE / MASTER_* from the env);
    ``(rank, world size, device)``."""
    import torch
    import torch.distributed as dist
    rank, world = int(os.environ['RANK']), int(os.environ['WORLD_SIZE'])
    cuda = args.device == 'cuda'
    device = torch.device(f'cuda:{rank}' if cuda else 'cpu')
    if cuda:
        torch.cuda.set_device(device)
    dist.init_process_group('nccl' if cuda else 'gloo')
    return rank, world, device


def run_stage(args) -> dict:
    """One rank of the pipeline."""
    import torch.distributed as dist
    _, _, device = init_rank(args)
    from enn_mm.local import ENNPipelineParallel
    model, optim = build(args, True, device)
    pipe = ENNPipelineParallel(model, stages=args.stages, timeout=600, refine=args.refine)
    start = time.perf_counter()
    pipe.plan(args.batch)
    plan_s = time.perf_counter() - start
    pipe.train()
    data = batch(args, device) if pipe.stage == 0 else None
    step = counted(pipe, optim)
    for _ in range(args.warmup):  # fills the pipeline; no flush before timing
        step(data)
    sync(device)
    busy0 = pipe.stats['busy_s']
    start = time.perf_counter()
    for _ in range(args.steps):
        step(data)
    sync(device)
    elapsed = time.perf_counter() - start
    busy = pipe.stats['busy_s'] - busy0
    pipe.flush()
    dist.barrier()
    # What an epoch boundary costs: from an empty pipeline, a few steps,
    # drained, against the same steps at the steady rate.
    cold_steps = args.stages + 2
    start = time.perf_counter()
    for _ in range(cold_steps):
        step(data)
    pipe.flush()
    sync(device)
    dist.barrier()
    cold = time.perf_counter() - start
    result = [None] * dist.get_world_size()
    dist.all_gather_object(result, dict(stage=pipe.stage, busy=busy, elapsed=elapsed,
                                        blocks=pipe.blocks))
    slowest = max(r['elapsed'] for r in result)
    return dict(images_per_s=args.batch * args.steps / slowest, peak_rss_mb=peak_rss_mb(),
                steady_step_s=round(slowest / args.steps, 3),
                fill_drain_s=round(cold - cold_steps * slowest / args.steps, 3),
                stage_busy=[round(r['busy'] / r['elapsed'], 3) for r in result],
                stage_step_s=[round(r['busy'] / args.steps, 3) for r in result],
                assignment=result[0]['blocks'], plan_s=round(plan_s, 2),
                cuts=[model.local_partition.cuts[b[-1]] for b in result[0]['blocks'][:-1]])


def run_ddp(args) -> dict:
    """One rank of data-parallel BP."""
    from mmengine.model import MMDistributedDataParallel
    rank, world, device = init_rank(args)
    model, optim = build(args, False, device)
    ddp = MMDistributedDataParallel(model, device_ids=[rank] if device.type == 'cuda' else None)
    ddp.train()
    data = batch(args, device)
    per_rank = args.batch // world
    data = dict(inputs=data['inputs'][rank * per_rank:(rank + 1) * per_rank],
                data_samples=data['data_samples'][rank * per_rank:(rank + 1) * per_rank])
    slowest = timed_ranks(counted(ddp, optim), data, args, device, world)
    return dict(images_per_s=per_rank * world * args.steps / slowest, peak_rss_mb=peak_rss_mb())


def timed_ranks(step, data, args, device, world: int) -> float:
    """Warm up (``--warmup-s`` seconds, then ``--warmup`` steps) and time
    ``--steps`` steps on every rank; the slowest rank's seconds. The ranks
    agree after each warm-up step whether to go on, so all run as many
    steps (pipeline stages are not in lockstep)."""
    import torch
    import torch.distributed as dist
    start = time.perf_counter()
    while True:
        go = torch.tensor([float(time.perf_counter() - start < args.warmup_s)])
        dist.all_reduce(go, op=dist.ReduceOp.MIN)
        if not go.item():
            break
        step(data)
    for _ in range(args.warmup):
        step(data)
    sync(device)
    dist.barrier()
    start = time.perf_counter()
    for _ in range(args.steps):
        step(data)
    sync(device)
    elapsed = time.perf_counter() - start
    result = [None] * world
    dist.all_gather_object(result, elapsed)
    return max(result)


def run_bp_pipe(args) -> dict:
    """One rank of end-to-end BP pipelined with torch.distributed.pipelining
    over the ENN-ℓ pipeline's stages (cut where it cut)."""
    import torch
    from bp_pipeline import PipelinedBP
    from mmengine.registry import init_default_scope
    from mmpretrain.registry import MODELS
    rank, world, device = init_rank(args)
    init_default_scope('mmpretrain')
    torch.manual_seed(0)
    r = recipe_for(args)
    model = MODELS.build(r['bp'])
    pipe = PipelinedBP(model, args.bp_cuts, r['bp_optim'], args.microbatches, rank, world,
                       device, args.schedule)
    slowest = timed_ranks(pipe.train_step, batch(args, device), args, device, world)
    return dict(images_per_s=args.batch * args.steps / slowest, peak_rss_mb=peak_rss_mb())


def peak_rss_mb() -> float:
    """This process's peak resident memory so far (VmHWM), in MB."""
    return round(status_kb('VmHWM') / 1024, 1)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def _env(threads: int, cores, **extra) -> dict:
    return dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads),
                BENCH_CORES=','.join(map(str, cores)), **extra)


def _cmd(args, worker: str, threads: int, warmup_s: float = 0.0):
    return [sys.executable, __file__, '--worker', worker, '--threads', str(threads),
            '--warmup-s', str(warmup_s),
            '--stages', str(args.stages), '--batch', str(args.batch),
            *(['--size', str(args.size)] if args.size else []),
            '--steps', str(args.steps), '--warmup', str(args.warmup),
            '--device', args.device, '--penalty-interval', str(args.penalty_interval),
            '--local-head', args.local_head, '--arch', args.arch,
            '--refine', str(args.refine), '--microbatches', str(args.microbatches),
            '--schedule', args.schedule, '--bp-cuts', *args.bp_cuts] \
        + (['--dense'] if args.dense else []) + (['--config', args.config] if args.config else [])


def _result(proc_out: str, name: str, returncode: int, err: str) -> dict:
    lines = proc_out.strip().splitlines()
    if returncode != 0:
        # gloo's teardown at exit now and then ends a process with
        # 'terminate called without an active exception' after its result
        # is printed; the measurement is complete then, and is kept.
        if lines and lines[-1].startswith('{') and err.rstrip().endswith(
                'terminate called without an active exception'):
            print(f'{name}: exited {returncode} in process-group teardown after its result; '
                  'result kept', file=sys.stderr)
        else:
            raise RuntimeError(f'{name} failed:\n{err[-3000:]}')
    return json.loads(lines[-1])


def measure_single(args, worker: str, threads: int, cores, warmup_s: float = 0.0) -> dict:
    proc = subprocess.run(_cmd(args, worker, threads, warmup_s), env=_env(threads, cores),
                          capture_output=True, text=True)
    result = _result(proc.stdout, worker, proc.returncode, proc.stderr)
    print(f'{worker} ({threads} threads): {result}', file=sys.stderr)
    return result


def measure_ranks(args, worker: str, warmup_s: float = 0.0) -> dict:
    """The ``--stages`` processes of the pipeline (``stage``) or of DDP BP
    (``ddp``), each pinned to its own cores."""
    port, n = str(_free_port()), args.stages
    ncores = os.cpu_count() or 1
    procs = []
    for rank in range(n):
        cores = [(rank * args.threads + i) % ncores for i in range(args.threads)]
        env = _env(args.threads, cores, RANK=str(rank), WORLD_SIZE=str(n), LOCAL_RANK=str(rank),
                   MASTER_ADDR='127.0.0.1', MASTER_PORT=port)
        procs.append(subprocess.Popen(_cmd(args, worker, args.threads, warmup_s), env=env,
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    outs = [p.communicate() for p in procs]
    results = [_result(o, f'{worker} {r}', p.returncode, e)
               for r, (p, (o, e)) in enumerate(zip(procs, outs))]
    result = dict(results[0], images_per_s=min(r['images_per_s'] for r in results),
                  peak_rss_mb=[r.get('peak_rss_mb') for r in results])
    print(f'{worker} ({n} x {args.threads} threads): {result}', file=sys.stderr)
    return result


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--stages', type=int, default=2)
    parser.add_argument('--arch', default='resnet50', choices=['resnet50', 'resnet18'],
                        help='the network (resnet18: for smoke tests)')
    parser.add_argument('--threads', type=int, default=1, help='threads per worker')
    parser.add_argument('--batch', type=int, default=None, help='default 16 (or the config\'s)')
    parser.add_argument('--size', type=int, default=None,
                        help="input size (default 112, or the config's)")
    parser.add_argument('--steps', type=int, default=30, help='timed steps')
    parser.add_argument('--warmup', type=int, default=4,
                        help='warm-up steps of every variant (after the pipeline planning '
                        'or as many seconds of steps)')
    parser.add_argument('--warmup-s', type=float, default=0.0, help=argparse.SUPPRESS)
    parser.add_argument('--dense', action='store_true', help='the plain ResNet-50, not ENN')
    parser.add_argument('--config', default=None,
                        help='an ENN-ℓ config (e.g. configs/enn_local/resnet18w16_fmnist_fast.py): '
                        'its model, heads, split, optimizer and ortho mode for ENN-ℓ, its '
                        'end-to-end network and optimizer for BP, its input shape; --batch '
                        'defaults to its batch size (--arch, --size, --dense, --local-head and '
                        '--penalty-interval do not apply)')
    parser.add_argument('--local-head', default='pool_linear',
                        choices=list(LOCAL_HEADS),
                        help='local head (pool_linear: ENNPoolLinearLocalHead, conv_aux: '
                        'ENNConvAuxLocalHead, aux_net: ENNAuxNetLocalHead, downstream: '
                        'ENNDownstreamLocalHead with depth 2)')
    parser.add_argument('--penalty-interval', type=int, default=1,
                        help='ENN: orthogonality penalty on every n-th step')
    parser.add_argument('--refine', type=int, default=3,
                        help="ENNPipelineParallel's trial rounds for the split (0: none)")
    parser.add_argument('--repeats', type=int, default=1,
                        help='measure every variant this many times; ratios are medians')
    parser.add_argument('--device', default='cpu', choices=['cpu', 'cuda'])
    parser.add_argument('--worker', choices=['sequential', 'bp', 'stage', 'ddp', 'bp_pipe'],
                        help=argparse.SUPPRESS)
    parser.add_argument('--bp-microbatches', type=int, nargs='+', default=[2, 4, 8],
                        help='with --config: micro-batch counts tried for pipelined BP '
                        '(torch.distributed.pipelining); the fastest is its result')
    parser.add_argument('--schedule', default='1f1b', choices=['1f1b', 'gpipe'],
                        help='pipelined BP schedule')
    parser.add_argument('--microbatches', type=int, default=4, help=argparse.SUPPRESS)
    parser.add_argument('--bp-cuts', nargs='*', default=[], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.batch is None:
        args.batch = recipe(args.config)['batch'] if args.config else 16
    if args.size is None and not args.config:
        args.size = 112
    for name in ('stages', 'threads', 'batch', 'steps', 'repeats', 'penalty_interval'):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")

    if args.worker:
        import torch
        cores = os.environ.get('BENCH_CORES')
        if cores and args.device == 'cpu':
            os.sched_setaffinity(0, {int(c) for c in cores.split(',')})
        torch.set_num_threads(args.threads)
        run = dict(stage=run_stage, ddp=run_ddp, bp_pipe=run_bp_pipe).get(args.worker,
                                                                          run_single)
        print(json.dumps(run(args)), flush=True)
        import torch.distributed as dist
        if dist.is_initialized():  # after the result is out: see _result
            dist.destroy_process_group()
        return

    ncores = os.cpu_count() or 1
    total = args.stages * args.threads
    if args.device == 'cpu' and total > ncores:
        raise SystemExit(f'{args.stages} stages x {args.threads} threads need {total} cores; '
                         f'this machine has {ncores}.')
    if args.batch % args.stages:
        parser.error(f'--batch {args.batch} must be a multiple of --stages {args.stages} '
                     '(data-parallel BP splits it over as many processes)')
    one = list(range(args.threads))
    record = dict(model=args.arch + ('' if args.dense else '-enn'), batch=args.batch,
                  size=args.size, stages=args.stages, threads_per_worker=args.threads,
                  device=args.device, steps=args.steps,
                  penalty_interval=None if args.dense else args.penalty_interval,
                  refine=args.refine, local_head=args.local_head, machine=machine_info())
    if args.config:  # what the config trains, as it resolves
        r = recipe_for(args)
        inner = r['local']['model']
        record.update(model=args.config, size=r['input_shape'][-1], penalty_interval=None,
                      input_shape=list(r['input_shape']), cuts=r['local']['cuts'],
                      local_head=r['local'].get('local_head'),
                      local_objectives=r['local'].get('local_objectives'),
                      enn=inner.get('enn') if inner.get('type') == 'ENNModel' else None,
                      optimizer=r['local_optim'].get('optimizer'))
    gpus = 0
    if args.device == 'cuda':
        import torch
        gpus = torch.cuda.device_count()
    piped = args.device == 'cpu' or gpus >= args.stages
    runs = []
    for r in range(args.repeats):  # each repeat measures every variant afresh
        print(f'repeat {r + 1}/{args.repeats}', file=sys.stderr)
        pipe = measure_ranks(args, 'stage') if piped else None
        warm = pipe['plan_s'] if piped else 0.0  # the others warm up as long as it planned
        seq = measure_single(args, 'sequential', args.threads, one, warm)
        bp_all = measure_single(args, 'bp', total, list(range(total)), warm)
        run = dict(images_per_s=dict(sequential=seq['images_per_s'],
                                     bp_equal_cores=bp_all['images_per_s']))
        if piped:
            ips = run['images_per_s']
            ddp = measure_ranks(args, 'ddp', warm)
            ips['bp_ddp'] = ddp['images_per_s']
            ips['pipeline'] = pipe['images_per_s']
            # whole-process peak resident memory: each stage's process against BP's
            run['peak_rss_mb'] = dict(pipeline=pipe['peak_rss_mb'], bp_ddp=ddp['peak_rss_mb'],
                                      sequential=seq.get('peak_rss_mb'),
                                      bp_equal_cores=bp_all.get('peak_rss_mb'))
            run['stage_rss_over_bp'] = [round(x / bp_all['peak_rss_mb'], 3)
                                        for x in pipe['peak_rss_mb']]
            run.update(vs_sequential=ips['pipeline'] / ips['sequential'],
                       vs_bp_equal_cores=ips['pipeline'] / ips['bp_equal_cores'],
                       vs_bp_ddp=ips['pipeline'] / ips['bp_ddp'])
            if args.config:  # BP pipelined over the same stages, its best micro-batching
                args.bp_cuts = pipe['cuts']
                tried = {}
                for m in args.bp_microbatches:
                    args.microbatches = m
                    tried[m] = measure_ranks(args, 'bp_pipe', warm)['images_per_s']
                best = max(tried, key=tried.get)
                ips['bp_pipelined'] = tried[best]
                run.update(vs_bp_pipelined=ips['pipeline'] / ips['bp_pipelined'],
                           bp_pipelined_microbatches=best,
                           bp_pipelined_tried={str(k): round(v, 2) for k, v in tried.items()})
            run.update({k: pipe[k] for k in ('stage_busy', 'stage_step_s', 'steady_step_s',
                                             'fill_drain_s', 'assignment', 'plan_s')})
        runs.append(run)

    def median_run(key):  # the repeat with the median ratio (its numbers stay paired)
        return sorted(runs, key=lambda r: r[key])[(len(runs) - 1) // 2]

    if piped:
        mid = median_run('vs_bp_equal_cores')
        record.update({k: mid[k] for k in ('stage_busy', 'stage_step_s', 'steady_step_s',
                                           'fill_drain_s', 'assignment', 'plan_s',
                                           'peak_rss_mb', 'stage_rss_over_bp')})
        for key in ('vs_sequential', 'vs_bp_equal_cores', 'vs_bp_ddp', 'vs_bp_pipelined'):
            if key not in runs[0]:
                continue
            # each repeat's ratio is paired (its pipeline and baseline measured together)
            record[key], record[key + '_range'] = median_range([r[key] for r in runs], 3)
    else:
        mid = runs[(len(runs) - 1) // 2]
        record.update(vs_sequential=None, vs_bp_equal_cores=None, stage_busy=None,
                      note=f'{gpus} GPU(s): the pipeline needs one per stage')
    record['repeats'] = len(runs)
    record['images_per_s'] = {k: round(v, 2) for k, v in mid['images_per_s'].items()}
    record['runs'] = [dict(images_per_s={k: round(v, 2) for k, v in r['images_per_s'].items()},
                           **{k: round(r[k], 3) for k in ('vs_sequential', 'vs_bp_equal_cores',
                                                          'vs_bp_ddp', 'vs_bp_pipelined',
                                                          'plan_s') if k in r},
                           **{k: r[k] for k in ('bp_pipelined_microbatches',
                                                'bp_pipelined_tried', 'peak_rss_mb',
                                                'stage_rss_over_bp') if k in r})
                      for r in runs]
    print(json.dumps(record, indent=1))


if __name__ == '__main__':
    main()
