"""enn_mm.engine.optimizers: ENNOptimWrapperConstructor's rules for the
factors, directly and through the registry."""
import pytest
import torch
from mmengine.registry import init_default_scope
from mmpretrain.registry import MODELS
from torch import nn

from enn_mm.core import ENNOptions, factors


def test_constructor_rules_reach_exactly_the_factors():
    from enn_mm.core.eigenbasis import factor_names
    from enn_mm.engine.optimizers import ENNOptimWrapperConstructor
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(16, 16), nn.BatchNorm1d(16), nn.Linear(16, 16),
                          nn.Linear(16, 4))
    ENNOptions(share=[dict(include=['0', '2'], share='P')], exclude=['3']).apply(model)
    Q0, lam0, P0 = factors(model[0])
    Q2, lam2, P2 = factors(model[2])
    assert P0 is P2
    basis, spectrum = {id(Q0), id(Q2), id(P0)}, {id(lam0), id(lam2)}
    # the factors' names, found by identity: the shared P under both layers
    assert factor_names(model) == dict(
        basis={f'{i}.parametrizations.weight.original{j}' for i in (0, 2) for j in (0, 2)},
        spectrum={f'{i}.parametrizations.weight.original1' for i in (0, 2)})
    assert factor_names(model, suffix=True) == dict(
        basis={'.weight.original0', '.weight.original2'}, spectrum={'.weight.original1'})
    # a user key longer than the factor keys wins on its parameter, a shorter one does not
    user = {'2.parametrizations.weight.original1': dict(lr_mult=3.0),
            'weight.original1': dict(lr_mult=7.0)}
    ctor = ENNOptimWrapperConstructor(
        dict(optimizer=dict(type='SGD', lr=0.1, weight_decay=0.05)),
        dict(basis_lr_mult=0.5, custom_keys=user))
    for _ in range(2):  # the constructor serves a second model alike
        groups = ctor(model).optimizer.param_groups
        seen = [id(p) for g in groups for p in g['params']]
        assert sorted(seen) == sorted({id(p) for p in model.parameters()})  # each once
        rule = {id(p): (g.get('lr_mult'), g['lr'], g['weight_decay'])
                for g in groups for p in g['params']}
        assert {i for i, r in rule.items() if r[0] == 0.5} == basis
        assert all(rule[i] == (0.5, 0.05, 0.0) for i in basis)
        assert rule[id(lam0)] == (1.0, 0.1, 0.05)
        assert rule[id(lam2)] == (3.0, pytest.approx(0.3), 0.05)
        assert all(r[0] is None for i, r in rule.items() if i not in basis | spectrum)
        assert ctor.paramwise_cfg['custom_keys'] == user


def test_enn_constructor_without_weight_decay():
    """An optimizer config with no weight_decay: every parameter is in a
    group, and every group's decay is the optimizer's default (0), the
    factors' included (the rules multiply a base that is not there)."""
    init_default_scope('mmpretrain')
    inner = dict(type='ImageClassifier', backbone=dict(type='LeNet5', num_classes=10))
    model = MODELS.build(dict(type='ENNModel', model=inner))
    from mmpretrain.registry import OPTIM_WRAPPER_CONSTRUCTORS
    ctor = OPTIM_WRAPPER_CONSTRUCTORS.build(dict(
        type='ENNOptimWrapperConstructor',
        optim_wrapper_cfg=dict(type='OptimWrapper', optimizer=dict(type='SGD', lr=0.1))))
    groups = ctor(model).optimizer.param_groups  # (the wrapper's adds a placeholder)
    assert sorted(id(p) for g in groups for p in g['params']) == \
        sorted(id(p) for p in model.parameters())
    assert {g['weight_decay'] for g in groups} == {0}
    assert {g['lr'] for g in groups} == {0.1}


def test_decay_and_lr_multipliers_of_bases_and_spectra():
    """basis_decay_mult, spectrum_decay_mult and spectrum_lr_mult act on
    exactly the bases / spectra, other parameters keep the base values."""
    from enn_mm.core.eigenbasis import factor_names
    from enn_mm.engine.optimizers import ENNOptimWrapperConstructor
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 8), nn.BatchNorm1d(8), nn.Linear(8, 3))
    ENNOptions().apply(model)
    names = factor_names(model)
    ctor = ENNOptimWrapperConstructor(
        dict(optimizer=dict(type='SGD', lr=0.2, weight_decay=0.1)),
        dict(basis_decay_mult=0.5, spectrum_decay_mult=3.0, spectrum_lr_mult=0.25))
    groups = ctor(model).optimizer.param_groups
    by_id = {id(p): g for g in groups for p in g['params']}
    for name, p in model.named_parameters():
        g = by_id[id(p)]
        if name in names['basis']:
            assert (g['lr'], g['weight_decay']) == (0.2, pytest.approx(0.05)), name
        elif name in names['spectrum']:
            assert (g['lr'], g['weight_decay']) == (pytest.approx(0.05),
                                                    pytest.approx(0.3)), name
        else:
            assert (g['lr'], g['weight_decay']) == (0.2, 0.1), name
