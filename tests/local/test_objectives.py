"""enn_mm.local.objectives: reconstruction and similarity against hand
computations, per-block weight schedules, bad objectives named."""
import copy

import pytest
import torch
import torch.nn.functional as F
from mmengine.optim import OptimWrapperDict
from mmpretrain.registry import MODELS
from torch import nn

from enn_mm.local import ENNReconstructionObjective, ENNSimilarityObjective
from enn_mm.local.objectives import block_weights, similarity_matrix

from helpers import INFOPRO, LOCAL_CFG, CheckedWrapper, batch, build, local


def test_reconstruction_target_is_the_preprocessed_input_at_decoder_size():
    image = torch.randn(2, 1, 28, 28)
    full = ENNReconstructionObjective((8, 14, 14), 10, (1, 28, 28))
    assert torch.equal(full.target(image), image)
    assert full.decode(torch.randn(2, 8, 14, 14)).shape == (2, 1, 28, 28)
    half = ENNReconstructionObjective((8, 7, 7), 10, (1, 28, 28), size=14)
    torch.testing.assert_close(half.target(image), F.avg_pool2d(image, 2))
    assert half.decode(torch.randn(2, 8, 7, 7)).shape == (2, 1, 14, 14)
    z = torch.randn(2, 8, 7, 7)
    loss = half(z, None, None, image, None)
    torch.testing.assert_close(loss, ((half.decode(z) - F.avg_pool2d(image, 2))**2).mean())
    # through the model: block 0's objective is handed the preprocessed input
    model = build(LOCAL_CFG, cuts='resnet_stage', local_head=dict(type='ENNAuxNetLocalHead'),
                  local_objectives=INFOPRO)
    seen = []
    obj = model.local_objectives.block0[1]
    obj.register_forward_pre_hook(lambda m, args: seen.append(args[3].clone()))
    data = batch(4)
    want = model.data_preprocessor(copy.deepcopy(data), True)['inputs']
    optim = OptimWrapperDict(**{f'block{k}': CheckedWrapper(model, k, {})
                                for k in range(model.num_blocks)})
    model.train_step(data, optim)
    torch.testing.assert_close(seen[0], want)


def test_similarity_loss_matches_a_hand_computed_value():
    # rows [1,2,3] and [3,1,2]: centred [-1,0,1] and [1,-1,0], cosine -1/2; both
    # label 0: label similarity 1 everywhere. MSE = 2 * (1 - (-1/2))^2 / 4 = 1.125
    obj = ENNSimilarityObjective((3, ), 3, (1, 28, 28))
    z = torch.tensor([[1., 2., 3.], [3., 1., 2.]])
    torch.testing.assert_close(similarity_matrix(z), torch.tensor([[1., -.5], [-.5, 1.]]))
    loss = obj(z, torch.tensor([0, 0]), None, None, None)
    torch.testing.assert_close(loss, torch.tensor(1.125))
    # labels 0, 1 of 3 classes: one-hot cosine after centring is also -1/2: zero loss
    assert obj(z, torch.tensor([0, 1]), None, None, None).abs() < 1e-7
    # soft scores are used as they are
    soft = torch.tensor([[1., 0., 0.], [1., 0., 0.]])
    torch.testing.assert_close(obj(z, soft, None, None, None), torch.tensor(1.125))


def test_weight_schedules():
    assert block_weights(0.5, 3, 'x') == [0.5, 0.5, 0.5]
    assert block_weights(dict(start=1.0, end=0.0), 5, 'x') == [1.0, 0.75, 0.5, 0.25, 0.0]
    assert block_weights([1, 2], 2, 'x') == [1.0, 2.0]
    with pytest.raises(ValueError, match='3 weights for 2 local blocks'):
        block_weights([1, 2, 3], 2, 'x')
    with pytest.raises(KeyError, match=r'dict\(start=..., end=...\)'):
        block_weights(dict(start=1), 2, 'x')
    model = local(cuts='resnet_block', local_head=dict(type='ENNAuxNetLocalHead'),
                  local_objectives=INFOPRO)
    assert model.local_objective_names == ['classification', 'reconstruction']
    assert model.local_objective_weights[0] == [0.5, 1.0]
    assert model.local_objective_weights[-1] == [1.0, 0.0]
    # weight 0: no module built, nothing run
    assert isinstance(model.local_objectives.block4[1], nn.Identity)
    assert [n for n, _, _ in model.block_objectives(4)] == ['classification']


@pytest.mark.parametrize('kw, error, match', [
    (dict(local_head=dict(type='mlp')), KeyError, 'unknown local head type'),
    (dict(local_objectives=[dict(type='contrastive')]), KeyError, 'unknown local objective'),
    (dict(local_objectives=dict(type='ENNClassificationObjective')), TypeError,
     'non-empty list of dicts'),
    (dict(local_objectives=[dict(type='ENNSimilarityObjective'),
                            dict(type='ENNSimilarityObjective')]), ValueError,
     "local objective 'ENNSimilarityObjective' is listed twice"),
    (dict(local_objectives=[dict(type='ENNReconstructionObjective', hidden=4, depth=2)]),
     TypeError,
     r"local objective 'ENNReconstructionObjective'.*options are \['size', 'hidden'\]"),
    (dict(local_head=[dict(type='ENNAuxNetLocalHead')] * 3), ValueError,
     r'3 local head configs for 5 cut points \(6 blocks'),
    (dict(local_objectives=[dict(type='ENNReconstructionObjective', weight=[1, 0])]), ValueError,
     '2 weights for 5 local blocks'),
])
def test_bad_head_or_objective_is_named(kw, error, match):
    with pytest.raises(error, match=match):
        local(cuts='resnet_block', **kw)


def test_reconstruction_needs_an_image_and_a_feature_map():
    with pytest.raises(ValueError, match=r'rebuilds an image, but the network input is '
                                         r'\(16,\), not \(C, H, W\); use ENNSimilarityObjective'):
        ENNReconstructionObjective((8, 4, 4), 10, (16, ))
    with pytest.raises(ValueError, match=r'decodes a \(C, H, W\) feature map, got a feature '
                                         r'of shape \(197, 64\)'):
        ENNReconstructionObjective((197, 64), 10, (3, 224, 224))
    with pytest.raises(ValueError, match=r'larger than the input'):
        ENNReconstructionObjective((8, 4, 4), 10, (1, 28, 28), size=56)


def test_one_block_builds_no_objective_but_checks_its_options():
    model = local(cuts=[], local_objectives=INFOPRO)
    assert model.num_blocks == 1 and len(model.local_objectives) == 0
    with pytest.raises(TypeError, match="local objective 'ENNReconstructionObjective'"):
        local(cuts=[], local_objectives=[dict(type='ENNReconstructionObjective', depth=2)])


def test_a_user_objective_logs_by_its_log_name_else_its_registered_name():
    @MODELS.register_module(force=True)
    class TestSharperSimilarity(ENNSimilarityObjective):  # inherits no log_name
        pass

    @MODELS.register_module(force=True)
    class TestOtherSimilarity(ENNSimilarityObjective):
        log_name = 'similarity'

    model = local(cuts='resnet_stage', local_objectives=[
        dict(type='ENNClassificationObjective'), dict(type='TestSharperSimilarity')])
    assert model.local_objective_names == ['classification', 'TestSharperSimilarity']
    with pytest.raises(ValueError, match=r"'ENNSimilarityObjective' and 'TestOtherSimilarity' "
                                         r"both log as 'similarity'"):
        local(cuts='resnet_stage', local_objectives=[dict(type='ENNSimilarityObjective'),
                                                     dict(type='TestOtherSimilarity')])
