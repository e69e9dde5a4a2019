import math

import pytest
import torch

from aes.core.errors import AESError
from aes.finetune.objectives import GradientReversal, GroupDRO, Objective, dann_weight, make_objective, reverse_gradient

PARAMS = {"grl": {"max_weight": 0.3, "adversary_hidden": 8, "adversary_lr": 1e-3}, "dro": {"eta": 0.01, "size_adjustment": 0.0}}


def test_gradient_reversal_is_identity_forward_and_flips_the_gradient():
    x = torch.randn(4, 3, requires_grad=True, dtype=torch.float64)
    w = torch.randn(4, 3, dtype=torch.float64)
    y = reverse_gradient(x, 0.7)
    assert torch.equal(y, x)
    (y * w).sum().backward()
    torch.testing.assert_close(x.grad, -0.7 * w)
    # same as autograd without the layer, negated and scaled
    x2 = x.detach().clone().requires_grad_(True)
    (x2 * w).sum().backward()
    torch.testing.assert_close(x.grad, -0.7 * x2.grad)


def test_grl_adversary_learns_while_the_representation_gets_the_reversed_gradient():
    torch.manual_seed(0)
    obj = GradientReversal([3, 3], fold=0, hidden_size=5, adversary_hidden=4, max_weight=1.0, adversary_lr=1e-3)
    pooled = torch.randn(6, 5, requires_grad=True)
    group = torch.tensor([0, 0, 0, 1, 1, 1])
    zeros = torch.zeros(6)
    loss, logs = obj.loss(zeros, zeros, pooled, group, progress=1.0)
    loss.backward()
    grad_reversed = pooled.grad.clone()
    # the plain gradient of the adversary's cross-entropy w.r.t. the representation
    pooled.grad = None
    ce = torch.nn.functional.cross_entropy(obj.adversary(pooled), group)
    ce.backward()
    torch.testing.assert_close(grad_reversed, -dann_weight(1.0, 1.0) * pooled.grad)
    assert all(p.grad is not None for p in obj.adversary.parameters())
    assert 0.0 <= logs["adversary_acc"] <= 1.0 and obj.param_groups()[0]["lr"] == 1e-3


def test_dann_ramp():
    assert dann_weight(0.0, 0.3) == 0.0
    assert dann_weight(1.0, 0.3) == pytest.approx(0.3 * (2 / (1 + math.exp(-10)) - 1))
    ramp = [dann_weight(p / 10, 0.3) for p in range(11)]
    assert ramp == sorted(ramp) and ramp[-1] < 0.3


def test_dro_weights_move_to_the_group_with_the_highest_loss():
    obj = GroupDRO([4, 4, 4], fold=0, eta=0.5, size_adjustment=0.0)
    group = torch.tensor([0, 0, 1, 1, 2, 2])
    target = torch.zeros(6)
    pred = torch.tensor([0.1, -0.1, 0.5, -0.5, 2.0, -2.0], requires_grad=True)  # group 2 is worst
    for _ in range(5):
        loss, logs = obj.loss(pred, target, None, group, 0.0)
    q = obj.q
    assert int(q.argmax()) == 2 and q[2] > q[1] > q[0]
    assert float(q.sum()) == pytest.approx(1.0)
    group_loss = torch.tensor([0.01, 0.25, 4.0])
    assert float(loss.detach()) == pytest.approx(float((q * group_loss).sum()), rel=1e-5)
    logs = obj.epoch_logs()
    assert logs["dro_worst_group"] == 2 and logs["dro_worst_group_loss"] == pytest.approx(4.0)
    assert logs["dro_max_weight"] == pytest.approx(float(q.max()))


def test_dro_only_updates_groups_present_in_the_batch():
    obj = GroupDRO([4, 4, 4], fold=0, eta=1.0, size_adjustment=0.0)
    obj.loss(torch.tensor([1.0, 1.0]), torch.zeros(2), None, torch.tensor([0, 0]), 0.0)
    q = obj.q
    assert q[0] > q[1] and float(q[1]) == pytest.approx(float(q[2]))


def test_dro_size_adjustment_favours_small_groups():
    obj = GroupDRO([100, 1], fold=0, eta=1.0, size_adjustment=1.0)
    obj.loss(torch.zeros(2), torch.zeros(2), None, torch.tensor([0, 1]), 0.0)  # equal (zero) losses
    assert obj.q[1] > obj.q[0]


def test_erm_is_mean_squared_error():
    loss, _ = Objective([2], fold=0).loss(torch.tensor([1.0, 3.0]), torch.zeros(2), None, torch.tensor([0, 0]), 0.0)
    assert float(loss) == pytest.approx(5.0)


def test_bad_objective_inputs_name_the_problem():
    with pytest.raises(AESError, match="fold 4"):
        make_objective("dro", PARAMS, [3, 0], 8, fold=4)
    with pytest.raises(AESError, match="fold 1"):
        make_objective("grl", PARAMS, [], 8, fold=1)
    with pytest.raises(AESError, match="unknown objective 'mse'"):
        make_objective("mse", PARAMS, [3], 8, fold=0)
