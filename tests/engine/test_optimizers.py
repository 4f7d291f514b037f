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
    # a user key that matches a factor (mmengine's substring rule, longest
    # first) combines with the factor's rule: multipliers multiply
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
        assert rule[id(lam0)] == (7.0, pytest.approx(0.7), 0.05)
        assert rule[id(lam2)] == (3.0, pytest.approx(0.3), 0.05)
        assert all(r[0] is None for i, r in rule.items() if i not in basis | spectrum)
        assert ctor.paramwise_cfg['custom_keys'] == user


def test_user_key_on_a_tower_reaches_its_factors():
    """A prefix key (as fine-tuning configs slow a pretrained tower) scales
    the tower's Q, λ and P like a dense tower's weights; the bases keep no
    weight decay, the rest of the model keeps the base rate."""
    from enn_mm.engine.optimizers import ENNOptimWrapperConstructor
    model = nn.Sequential()
    model.add_module('tower', nn.Sequential(nn.Linear(8, 8), nn.Linear(8, 8)))
    model.add_module('head', nn.Linear(8, 2))
    ENNOptions().apply(model)
    ctor = ENNOptimWrapperConstructor(
        dict(optimizer=dict(type='AdamW', lr=1e-3, weight_decay=0.1)),
        dict(basis_lr_mult=0.5, custom_keys={'tower': dict(lr_mult=0.01)}))
    groups = ctor(model).optimizer.param_groups
    rule = {id(p): (g['lr'], g['weight_decay']) for g in groups for p in g['params']}
    for layer, scale in ((model.tower[0], 0.01), (model.tower[1], 0.01), (model.head, 1.0)):
        Q, lam, P = factors(layer)
        assert rule[id(Q)] == rule[id(P)] == (pytest.approx(1e-3 * scale * 0.5), 0.0)
        assert rule[id(lam)] == (pytest.approx(1e-3 * scale), pytest.approx(0.1))
        assert rule[id(layer.bias)] == (pytest.approx(1e-3 * scale), pytest.approx(0.1))


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


def test_enn_optim_wrapper_owns_retraction_and_the_step():
    """The constructor builds ENNOptimWrapper, armed with the model: its
    optimizer (only it) retracts on schedule, the step count is in its
    state_dict (and an earlier checkpoint's per-parameter count loads), and
    optim_context hands the model its step (the wrapper's inner_count)."""
    from enn_mm.engine import ENNOptimWrapper, ENNOptimWrapperConstructor
    init_default_scope('mmpretrain')
    inner = dict(type='ImageClassifier', backbone=dict(type='LeNet5', num_classes=10),
                 head=dict(type='ClsHead'))
    model = MODELS.build(dict(type='ENNModel', model=inner,
                              enn=dict(ortho='retract', retract_interval=2)))
    ctor = ENNOptimWrapperConstructor(dict(optimizer=dict(type='SGD', lr=0.5)))
    wrapper = ctor(model)
    assert type(wrapper) is ENNOptimWrapper
    x = torch.randn(2, 1, 32, 32)
    from mmpretrain.structures import DataSample
    samples = [DataSample().set_gt_label(1), DataSample().set_gt_label(2)]
    errors, steps = [], []
    for _ in range(4):
        with wrapper.optim_context(model):
            steps.append(model.enn_step)
            loss = sum(v for v in model.loss(x, samples).values())
        wrapper.update_params(loss)
        errors.append(enn_mm_error(model))
    assert steps == [0, 1, 2, 3]
    assert errors[0] > 1e-4 and errors[2] > 1e-4 and errors[1] < 1e-5 and errors[3] < 1e-5
    state = wrapper.state_dict()
    assert state['enn_retraction'] == {'steps': 4}
    fresh = ctor(model)
    fresh.load_state_dict(state)
    assert fresh.retraction.steps == 4
    # an earlier checkpoint kept the count in the first basis's optimizer state
    legacy = {k: v for k, v in state.items() if k != 'enn_retraction'}
    legacy['state'] = {0: {'momentum_buffer': None, 'enn_retract_steps': 6}}
    older = ctor(model)
    older.load_state_dict(legacy)
    assert older.retraction.steps == 6
    # a wrapper type ENN has no version of is refused with the fix
    with pytest.raises(ValueError, match="type='OptimWrapper'"):
        ENNOptimWrapperConstructor(dict(type='ApexOptimWrapper',
                                        optimizer=dict(type='SGD', lr=0.1)))


def enn_mm_error(model):
    from enn_mm import orthogonality_error
    return orthogonality_error(model)
