"""ENN-ℓ, DDP BP and 1F1B-pipelined BP at K = 2, 4, 8 workers, on paper: a cost
model fed with per-unit times and activation sizes measured here.

    python tools/benchmarks/enn_l_scale.py configs/enn_local/resnet18w16_fmnist_fast.py \\
        [--size 112] [--batch N] [--measured docs/results/enn_l_speed_resnet18w16.json]

In one process with one thread, on random images, it measures for every unit
of the network (the stem, each residual block, the neck and head; the units
of ``bp_pipeline.resnet_units``): the forward + backward seconds at the batch
and at the batch / K and / m sizes the models need, the seconds of the
optimizer step of its parameters (with retraction every n-th step: the mean
over n consecutive steps, one of them retracting), its output bytes, and the
forward + backward seconds of the recipe's local head on a cut after it.
From these, for K workers joined by a link of bandwidth ``bw`` (bytes/s):

- ENN-ℓ pipeline: the units split into K contiguous stages so that the
  slowest is fastest; a stage costs its units' compute and parameter steps,
  the head on its last unit (every stage but the last) and sending its
  output forward (no gradient comes back); throughput = B / slowest stage;
- DDP BP: each worker computes B / K images through every unit, steps every
  parameter (replicated) and all-reduces the gradients (ring:
  2 (K − 1) / K · parameter bytes / bw); throughput = B / that;
- 1F1B BP: the same split by BP costs, m micro-batches (the best of K, 2K,
  4K): (m + K − 1) slots of the slowest stage's micro-batch compute plus its
  activation and gradient transfers, then its parameter step.

Compute is not overlapped with transfers (a pessimistic choice for all
three). The K = 2 prediction on this machine's loopback (``--loopback-bw``)
is checked against ``--measured`` (a ``pipeline_speedup.py --config`` record
of the same recipe; ENN-ℓ split where that pipeline split): the JSON gives
predicted / measured for each method. ``--from-json`` recomputes the
predictions from the measurements of an earlier output.
"""
import argparse
import copy
import json
import statistics
import time

import torch

LINKS = {'nvlink': 300e9, 'pcie4_x16': 25e9, 'ethernet_100g': 12.5e9}


def _timed(fn, repeats=3):
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def measure(config: str, size, batch, ks=(2, 4, 8)) -> dict:
    """Per-unit costs of the recipe's network (see the module docstring)."""
    from bp_pipeline import resnet_units
    from mmengine.logging import MMLogger
    from mmengine.optim import build_optim_wrapper
    from mmengine.registry import init_default_scope
    from mmpretrain.registry import MODELS

    import enn_mm.local  # noqa: F401
    from enn_mm.core import enn_modules
    from enn_mm.core.eigenbasis import eigenbasis

    from _common import recipe
    MMLogger.get_instance('enn_l_scale', log_level='WARNING')  # stdout is the JSON
    init_default_scope('mmpretrain')
    r = recipe(config)
    shape = (r['input_shape'][0], size or r['input_shape'][1], size or r['input_shape'][2])
    batch = batch or r['batch']
    torch.manual_seed(0)
    model = MODELS.build(r['bp']).train()
    units = resnet_units(model)
    sizes = sorted({batch} | {max(1, batch // k) for k in ks}
                   | {max(1, batch // (f * k)) for k in ks for f in (1, 2, 4)})
    x = {b: torch.randn(b, *shape) for b in sizes}
    out = []
    for name, unit in units:
        compute = {}
        for b in sizes:
            inp = x[b].detach().requires_grad_(name != units[0][0])

            def step(u=unit, i=inp):
                y = u(i)
                y = y if torch.is_tensor(y) else y[0]
                y.backward(torch.ones_like(y))
            compute[b] = _timed(step)
            with torch.no_grad():
                y = unit(x[b])
                x[b] = y if torch.is_tensor(y) else y[0]
        params = [p for p in unit.parameters() if p.requires_grad]
        optim = build_optim_wrapper(unit, r['bp_optim']) if params else None
        for p in params:
            p.grad = torch.zeros_like(p)
        # a sample spans one retraction interval, so each holds one QR
        n = max((eigenbasis(m).retract_interval for _, m in enn_modules(unit)), default=0) or 1
        param_s = _timed(lambda: [optim.step() for _ in range(n)]) / n if optim else 0.0
        out.append(dict(unit=name, compute_s={str(b): compute[b] for b in sizes},
                        param_s=param_s, out_bytes_per_image=x[batch][0].numel() * 4,
                        param_bytes=sum(p.numel() * 4 for p in params)))
        model.zero_grad(set_to_none=True)
    # the recipe's head on a cut after each unit but the last (an AugLocal
    # head copies fewer units where fewer run after the cut)
    local_cfg = copy.deepcopy(r['local'])
    head_cfg = dict(local_cfg.get('local_head') or {})
    for u in out[:-1]:
        local = None
        for depth in (head_cfg.get('depth'), 1, 0):
            cfg = dict(local_cfg, cuts=[u['unit']], input_shape=shape,
                       local_head=dict(head_cfg, **({} if depth is None else dict(depth=depth))))
            try:
                local = MODELS.build(copy.deepcopy(cfg)).train()
                break
            except ValueError:
                if depth is None:
                    break
        if local is None:
            u['head_s'] = None
            continue
        u['head_cfg'] = cfg['local_head']
        head = local.local_heads.block0
        z = torch.randn(batch, *local.local_partition.shapes[0], requires_grad=True)
        target = torch.arange(batch) % r['num_classes']
        loss_fn = local.local_loss_module

        def head_step(h=head, z=z, t=target, f=loss_fn):
            f(h(z), t).backward()
        u['head_s'] = _timed(head_step)
    return dict(batch=batch, input_shape=list(shape), units=out)


def _splits(costs, n: int, k: int):
    """The contiguous split of ``n`` units into ``k`` stages whose slowest
    stage (``costs(start, end, last)`` seconds) is fastest: exact DP.
    Returns ``(seconds of the slowest, stage ends)``."""
    best = {(0, 0): (0.0, [])}
    for j in range(1, k + 1):
        for end in range(j, n + 1):
            cands = []
            for start in range(j - 1, end):
                if (j - 1, start) in best:
                    prev, cuts = best[j - 1, start]
                    cands.append((max(prev, costs(start, end, j == k)), cuts + [end]))
            if cands:
                best[j, end] = min(cands)
    return best[k, n]


def predict(m: dict, k: int, bw: float, cuts=None) -> dict:
    """Images/s of the three methods at ``k`` workers and link ``bw``; with
    ``cuts`` (unit names) ENN-ℓ's stages end there instead of where the
    model would put them (the measured pipeline's own split)."""
    units, b = m['units'], m['batch']

    def c(u, n):
        return u['compute_s'][str(max(1, n))]

    def enn_stage(start, end, last):
        t = sum(c(u, b) + u['param_s'] for u in units[start:end])
        if not last:
            head = units[end - 1].get('head_s')
            t += (head if head is not None else float('inf')) \
                + units[end - 1]['out_bytes_per_image'] * b / bw
        return t

    if cuts:
        names = [u['unit'] for u in units]
        ends = [names.index(c) + 1 for c in cuts] + [len(units)]
        enn = max(enn_stage(a, e, e == len(units)) for a, e in zip([0, *ends[:-1]], ends))
        cuts = ends
    else:
        enn, cuts = _splits(enn_stage, len(units), k)
    params = sum(u['param_bytes'] for u in units)
    ddp = sum(c(u, b // k) + u['param_s'] for u in units) + 2 * (k - 1) / k * params / bw
    best_pipe = None
    for mb in (k, 2 * k, 4 * k):
        if b % mb:
            continue
        n = b // mb

        def bp_stage(start, end, last, n=n, mb=mb):
            compute = sum(c(u, n) for u in units[start:end])
            send = 0 if last else 2 * units[end - 1]['out_bytes_per_image'] * n / bw
            return (mb + k - 1) * (compute + send) + sum(u['param_s'] for u in units[start:end])
        t, _ = _splits(bp_stage, len(units), k)
        if best_pipe is None or t < best_pipe[0]:
            best_pipe = (t, mb)
    return dict(enn_l=b / enn, ddp=b / ddp, pipelined_bp=b / best_pipe[0] if best_pipe else None,
                pipelined_bp_microbatches=best_pipe[1] if best_pipe else None,
                enn_l_cuts=[units[i - 1]['unit'] for i in cuts[:-1]])


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('config')
    p.add_argument('--size', type=int, default=None)
    p.add_argument('--batch', type=int, default=None)
    p.add_argument('--measured', default=None,
                   help='pipeline_speedup.py --config record of the same recipe (K = 2 check)')
    p.add_argument('--loopback-bw', type=float, default=5e9,
                   help='bytes/s between two processes of this machine (gloo over loopback)')
    p.add_argument('--from-json', default=None,
                   help='recompute the predictions from the measurements of an earlier output')
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    from _common import machine_info
    if args.from_json:
        with open(args.from_json) as f:
            earlier = json.load(f)
        m, machine = earlier['measured_units'], earlier['machine']
    else:
        m, machine = measure(args.config, args.size, args.batch), machine_info()
    out = dict(config=args.config, machine=machine, measured_units=m,
               links={k: f'{v / 1e9:g} GB/s' for k, v in LINKS.items()},
               predicted={name: {str(k): predict(m, k, bw) for k in (2, 4, 8)}
                          for name, bw in LINKS.items()})
    rec = None
    if args.measured:
        with open(args.measured) as f:
            rec = json.load(f)
    # the check at K = 2 uses the measured pipeline's own split
    local = predict(m, 2, args.loopback_bw, cuts=rec.get('cuts') if rec else None)
    out['k2_loopback'] = dict(bandwidth=f'{args.loopback_bw / 1e9:g} GB/s', predicted=local)
    if rec:
        ips = rec['images_per_s']
        out['k2_loopback']['measured'] = dict(enn_l=ips['pipeline'], ddp=ips['bp_ddp'],
                                              pipelined_bp=ips.get('bp_pipelined'))
        out['k2_predicted_over_measured'] = round(local['enn_l'] / ips['pipeline'], 3)
        out['k2_predicted_over_measured_all'] = {
            k: round(local[k] / v, 3) for k, v in out['k2_loopback']['measured'].items() if v}
    for name in LINKS:
        for k in ('4', '8'):
            pr = out['predicted'][name][k]
            pr['enn_l_over_ddp'] = round(pr['enn_l'] / pr['ddp'], 3)
            if pr['pipelined_bp']:
                pr['enn_l_over_pipelined_bp'] = round(pr['enn_l'] / pr['pipelined_bp'], 3)
    print(json.dumps(out, indent=1))


if __name__ == '__main__':
    main()
