"""Bases shared by several ENN layers ("layer-shared" eigenbases).

Layers of equal shape in a group use one Parameter object for P (and/or Q).
A shared basis restricts what the layers can express, so sharing changes the
function: the first layer of a group keeps its exact factorization and gives
its basis to the others, whose weights are projected onto it
(``W ← W·P·Pᵀ`` for a shared P, ``W ← Q·Qᵀ·W`` for a shared Q).
"""
import fnmatch
from typing import Dict, List, Optional, Sequence

import torch
from torch import Tensor, nn

from .eigenbasis import eigenbasis, enn_modules, factors

__all__ = ['share_bases', 'share_groups', 'tie_group']

_INDEX = {'Q': 0, 'P': 2}


def share_groups(model: nn.Module) -> Dict[str, List[nn.Module]]:
    """``{group name: [leader, followers...]}`` of the shared-basis layers.

    Args:
        model (nn.Module): Any module.

    Returns:
        dict: Group name to its ENN layers in module order (the first is
        the one whose basis the others share); empty without shared bases.
    """
    groups: Dict[str, List[nn.Module]] = {}
    for _, module in enn_modules(model):
        share = eigenbasis(module).share
        if share:
            groups.setdefault(share[0], []).append(module)
    return groups


@torch.no_grad()
def tie_group(members: Sequence[nn.Module], which: str,
              dense: Optional[Dict[nn.Module, Tensor]] = None) -> None:
    """Factor ``members[0]`` exactly and project the others onto its basis.

    Args:
        members (Sequence[nn.Module]): ENN layers of equal shape.
        which (str): ``'P'``, ``'Q'`` or ``'PQ'``: the bases to share.
        dense (dict, optional): Dense weights to factor, per module
            (defaults to each layer's current ``W``).
    """
    dense = dense or {}
    weights = [dense.get(m, None) for m in members]
    weights = [m.weight.detach().clone() if w is None else w for m, w in zip(members, weights)]
    leader = members[0]
    eig = leader.parametrizations.weight[0]
    for param, value in zip(factors(leader), eig.right_inverse(weights[0])):
        param.copy_(value)
    Q0, _, P0 = factors(leader)
    for module, weight in zip(members[1:], weights[1:]):
        plist = module.parametrizations.weight
        W = weight.reshape(eig.groups, eig.d_out, eig.d_in).to(Q0.dtype)
        if which == 'PQ':  # λ = diag(Q0ᵀ W P0): the closest spectrum
            lam = torch.einsum('gor,goi,gir->gr', Q0, W, P0)
            plist.original1.copy_(lam)
        elif which == 'P':  # Q·diag(λ) = W·P0, columns normalized
            X = W @ P0
            lam = X.norm(dim=1).clamp_min(1e-12)
            plist.original0.copy_(X / lam.unsqueeze(1))
            plist.original1.copy_(lam)
        else:  # 'Q': P·diag(λ) = Wᵀ·Q0
            X = W.transpose(1, 2) @ Q0
            lam = X.norm(dim=1).clamp_min(1e-12)
            plist.original2.copy_(X / lam.unsqueeze(1))
            plist.original1.copy_(lam)
        for b in which:
            setattr(plist, f'original{_INDEX[b]}', getattr(leader.parametrizations.weight,
                                                          f'original{_INDEX[b]}'))


def share_bases(model: nn.Module, groups: Sequence[dict]) -> nn.Module:
    """Make the ENN layers of each group share their bases, in place.

    Args:
        model (nn.Module): A model with ENN layers.
        groups (Sequence[dict]): Each ``dict(name=str, include=[glob, ...],
            share='P' | 'Q' | 'PQ')``, e.g. ``dict(name='stage1',
            include=['backbone.layer1.*.conv2'], share='P')``. The matched
            layers (in module order) must have equal factor shapes.
            ``name`` defaults to the include patterns joined by ``'/'``,
            ``share`` to ``'P'``.

    Returns:
        nn.Module: ``model`` itself.

    Raises:
        KeyError: A group has unknown keys or no ``include``.
        ValueError: An invalid ``share``, a group matching fewer than two
            ENN layers, layers with different factor shapes, or a layer in
            two groups.
    """
    for group in groups:
        unknown = set(group) - {'name', 'include', 'share'}
        if unknown or 'include' not in group:
            raise KeyError(f'share group {group!r}: keys are name, include, share '
                           f'(unknown: {sorted(unknown)}); include is required.')
        name = group.get('name', '/'.join(group['include']))
        which = group.get('share', 'P')
        if which not in ('P', 'Q', 'PQ'):
            raise ValueError(f"share group {name!r}: share must be 'P', 'Q' or 'PQ', got {which!r}")
        patterns = [group['include']] if isinstance(group['include'], str) else group['include']
        members = [(n, m) for n, m in enn_modules(model)
                   if any(fnmatch.fnmatchcase(n, p) for p in patterns)]
        if len(members) < 2:
            raise ValueError(f'share group {name!r} matches {len(members)} ENN layer(s) '
                             f'({[n for n, _ in members]}); sharing needs at least two.')
        ref_name, ref = members[0]
        for n, m in members[1:]:
            for b in which:
                a, c = factors(ref)[_INDEX[b]], factors(m)[_INDEX[b]]
                if a.shape != c.shape:
                    raise ValueError(
                        f'share group {name!r}: {b} of {n!r} has shape {tuple(c.shape)} but '
                        f'{b} of {ref_name!r} has {tuple(a.shape)}; only layers of equal '
                        'shape can share a basis. Narrow the include patterns.')
            if eigenbasis(m).share:
                raise ValueError(f'layer {n!r} is in two share groups.')
        for _, m in members:
            eigenbasis(m).share = (name, which)
        tie_group([m for _, m in members], which)
    return model
