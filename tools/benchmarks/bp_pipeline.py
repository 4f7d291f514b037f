"""End-to-end BP pipelined over processes with ``torch.distributed.pipelining``:
the model-parallel baseline ENN-ℓ's pipeline is compared with.

An MMPretrain ResNet classifier (``ResNet`` or ``ResNet_CIFAR``, plain or
ENN) is flattened into its units — the stem, every residual block, then the
neck and the linear head — and cut into consecutive stages after the unit a
cut point names (the same names as ENN-ℓ's cut points, e.g.
``'backbone.layer1'`` or ``'backbone.layer2.1'``). Each process holds one
stage and its own optimizer wrapper (the recipe's, built on the stage's
parameters, so an ENN stage retracts its own bases); a batch is split into
micro-batches run by a ``Schedule1F1B`` (or ``ScheduleGPipe``) schedule, whose
gradients are averaged over the micro-batches (``scale_grads``): the
arithmetic of one BP step with gradient accumulation over the micro-batches.

Run on its own (2 processes, gloo on CPU), it trains the end-to-end network
of an ENN-ℓ config for a few steps on random images and saves each stage's
weights (what tests/tools/test_bp_pipeline.py compares with one process)::

    torchrun --nproc_per_node 2 tools/benchmarks/bp_pipeline.py CONFIG \
        --cuts backbone.layer2 [--microbatches 4] [--batch 16] [--steps 2] [--save DIR]
"""
import argparse
import os
from typing import List, Sequence

import torch
from torch import nn

__all__ = ['resnet_units', 'split_units', 'PipelinedBP']


class _Stem(nn.Module):
    """conv1 - norm1 - ReLU (- max pool for ``ResNet``; ``ResNet_CIFAR`` has none)."""

    def __init__(self, backbone):
        super().__init__()
        from mmpretrain.models.backbones import ResNet_CIFAR
        if getattr(backbone, 'deep_stem', False):
            raise ValueError('bp_pipeline: deep-stem ResNets are not supported.')
        self.conv1, self.norm1, self.relu = backbone.conv1, backbone.norm1, backbone.relu
        self.maxpool = None if isinstance(backbone, ResNet_CIFAR) else backbone.maxpool

    def forward(self, x):
        x = self.relu(self.norm1(self.conv1(x)))
        return x if self.maxpool is None else self.maxpool(x)


class _Head(nn.Module):
    """Neck, then the classification head's logits."""

    def __init__(self, neck, head):
        super().__init__()
        self.neck, self.head = neck, head

    def forward(self, x):
        feats = (x, ) if self.neck is None else self.neck((x, ))
        return self.head(feats)


def resnet_units(model) -> List[tuple]:
    """``(cut name, module)`` of each unit of an MMPretrain ResNet classifier
    in forward order; the cut name of a unit ends it (the stem's is
    ``'backbone.relu'``, a block's ``'backbone.layerL.j'``).

    Args:
        model (ImageClassifier): A classifier with a ResNet backbone.

    Returns:
        list[tuple]: ``(name, nn.Module)`` pairs, the last being the neck and
        head (named ``'head'``).
    """
    backbone = model.backbone
    units = [('backbone.relu', _Stem(backbone))]
    for layer in backbone.res_layers:
        for j, block in enumerate(getattr(backbone, layer)):
            units.append((f'backbone.{layer}.{j}', block))
    units.append(('head', _Head(model.neck, model.head)))
    return units


def split_units(model, cuts: Sequence[str]) -> List[nn.Sequential]:
    """The stages of ``model`` cut after each of ``cuts``.

    Args:
        model (ImageClassifier): A classifier with a ResNet backbone.
        cuts (Sequence[str]): Cut points in forward order: a unit's name
            (``'backbone.layer2.1'``), a residual stage (``'backbone.layer2'``,
            after its last block) or the stem (``'backbone.relu'``).

    Returns:
        list[nn.Sequential]: ``len(cuts) + 1`` stages.

    Raises:
        ValueError: A cut names no unit, or the cuts are not in forward
            order.
    """
    units = resnet_units(model)
    ends = {}
    for i, (name, _) in enumerate(units):
        ends[name] = i
        ends[name.rsplit('.', 1)[0]] = i  # 'backbone.layerL' -> its last block
    ends.pop('backbone', None)
    at = []
    for cut in cuts:
        if cut not in ends:
            raise ValueError(f'bp_pipeline: cut {cut!r} is not a unit of the network; use one '
                             f'of {sorted(ends)}.')
        at.append(ends[cut] + 1)
    if at != sorted(at) or len(set(at)) != len(at) or at[-1] >= len(units):
        raise ValueError(f'bp_pipeline: cuts {list(cuts)} must be distinct, in forward order '
                         'and before the head.')
    bounds = [0, *at, len(units)]
    return [nn.Sequential(*(m for _, m in units[a:b])) for a, b in zip(bounds, bounds[1:])]


class PipelinedBP:
    """One rank of end-to-end BP pipelined over ``world_size`` processes.

    Args:
        model (ImageClassifier): The whole classifier (every rank builds it
            alike; each keeps its stage).
        cuts (Sequence[str]): ``world_size - 1`` cut points.
        optim_cfg (dict): ``build_optim_wrapper`` config, built on this
            rank's stage.
        n_microbatches (int): Micro-batches per batch; must divide it.
        rank (int): This process's rank (= its stage).
        world_size (int): Number of processes (= stages).
        device (torch.device): The stage's device.
        schedule (str): ``'1f1b'`` or ``'gpipe'``. Defaults to ``'1f1b'``.

    Raises:
        ValueError: The number of cuts is not ``world_size - 1``, or the
            schedule is unknown.
    """

    def __init__(self, model, cuts: Sequence[str], optim_cfg: dict, n_microbatches: int,
                 rank: int, world_size: int, device, schedule: str = '1f1b'):
        from mmengine.optim import build_optim_wrapper
        from torch.distributed.pipelining import PipelineStage, Schedule1F1B, ScheduleGPipe
        if len(cuts) != world_size - 1:
            raise ValueError(f'bp_pipeline: {len(cuts)} cuts for {world_size} stages; give '
                             f'{world_size - 1}.')
        options = getattr(model, 'enn_options', None)
        if options is not None and options.gamma > 0:
            raise ValueError('bp_pipeline: the pipelined BP baseline adds no orthonormality '
                             "penalty to its loss; use a recipe with ortho='retract' (or 'none').")
        kinds = {'1f1b': Schedule1F1B, 'gpipe': ScheduleGPipe}
        if schedule not in kinds:
            raise ValueError(f'bp_pipeline: schedule {schedule!r} is not one of {list(kinds)}.')
        self.rank, self.world_size, self.n = rank, world_size, n_microbatches
        self.preprocessor = model.data_preprocessor
        self.loss_module = model.head.loss_module
        self.module = split_units(model, cuts)[rank].to(device)
        self.optim = build_optim_wrapper(self.module, optim_cfg)
        self.stage = PipelineStage(self.module, rank, world_size, device)
        self.schedule = kinds[schedule](self.stage, n_microbatches, loss_fn=self._loss)

    def _loss(self, logits, target):
        return self.loss_module(logits, target)

    def train_step(self, data) -> None:
        """One optimizer step of every stage on the batch ``data`` (a
        dataloader batch; every rank passes the same one).

        Args:
            data (dict): ``inputs`` and ``data_samples``.

        Raises:
            ValueError: The batch size is not a multiple of the number of
                micro-batches.
        """
        batch = len(data['data_samples'])
        if batch % self.n:
            raise ValueError(f'bp_pipeline: {self.n} micro-batches do not divide the batch of '
                             f'{batch}; choose a divisor of it.')
        self.module.train()
        with self.optim.optim_context(self.module):
            if self.rank == 0:
                inputs = self.preprocessor(data, True)['inputs']
                self.schedule.step(inputs)
            elif self.rank == self.world_size - 1:
                target = torch.cat([s.gt_label for s in data['data_samples']]).to(
                    next(self.module.parameters()).device)
                self.schedule.step(target=target)
            else:
                self.schedule.step()
        self.optim.step()
        self.optim.zero_grad()


def random_batch(input_shape, batch: int, num_classes: int, seed: int) -> dict:
    """A dataloader-like batch of random uint8 images and labels.

    Args:
        input_shape (Sequence[int]): ``(C, H, W)``.
        batch (int): Images.
        num_classes (int): Labels are drawn below it.
        seed (int): Seed of its own generator.

    Returns:
        dict: ``inputs`` (uint8) and ``data_samples``.
    """
    from mmpretrain.structures import DataSample
    g = torch.Generator().manual_seed(seed)
    inputs = torch.randint(0, 256, (batch, *input_shape), generator=g, dtype=torch.uint8)
    labels = torch.randint(0, num_classes, (batch, ), generator=g)
    return dict(inputs=inputs, data_samples=[DataSample().set_gt_label(int(t)) for t in labels])


def stage_state(model, module: nn.Module) -> dict:
    """The entries of ``model.state_dict()`` held by ``module`` (one stage).

    Args:
        model (nn.Module): The whole classifier.
        module (nn.Module): A stage built from its units.

    Returns:
        dict: ``{name in model: tensor}``.
    """
    mine = {t.data_ptr() for t in (*module.parameters(), *module.buffers())}
    return {k: v.detach().clone() for k, v in model.state_dict(keep_vars=True).items()
            if v.data_ptr() in mine}


def main(argv=None):
    """The command line (see the module docstring)."""
    import torch.distributed as dist
    from mmengine.registry import init_default_scope
    from mmpretrain.registry import MODELS

    import enn_mm  # noqa: F401

    from _common import recipe
    p = argparse.ArgumentParser(description='pipelined end-to-end BP of an ENN-ℓ config')
    p.add_argument('config')
    p.add_argument('--cuts', nargs='+', required=True)
    p.add_argument('--microbatches', type=int, default=4)
    p.add_argument('--schedule', default='1f1b', choices=['1f1b', 'gpipe'])
    p.add_argument('--batch', type=int, default=None, help="default: the config's")
    p.add_argument('--steps', type=int, default=2)
    p.add_argument('--save', default=None, help='directory for each stage\'s weights')
    args = p.parse_args(argv)
    rank, world = int(os.environ['RANK']), int(os.environ['WORLD_SIZE'])
    dist.init_process_group('gloo')
    init_default_scope('mmpretrain')
    r = recipe(args.config)
    torch.manual_seed(0)
    model = MODELS.build(r['bp'])
    pipe = PipelinedBP(model, args.cuts, r['bp_optim'], args.microbatches, rank, world,
                       torch.device('cpu'), args.schedule)
    for step in range(args.steps):
        pipe.train_step(random_batch(r['input_shape'], args.batch or r['batch'],
                                     r['num_classes'], seed=step))
    if args.save:
        os.makedirs(args.save, exist_ok=True)
        torch.save(stage_state(model, pipe.module), os.path.join(args.save, f'stage{rank}.pth'))
    dist.barrier()
    dist.destroy_process_group()


if __name__ == '__main__':
    main()
