import math

import pytest
import torch

from brainseg.config import TrainConfig
from brainseg.optim import LRSchedule, WeightAverage, build_optimizer, lr_factor


@pytest.mark.parametrize("kind", ["cosine", "poly", "plateau", "none"])
def test_warmup_rises_linearly_to_the_base_rate(kind):
    factors = [lr_factor(step, 100, 10, kind) for step in range(11)]
    assert factors[:10] == pytest.approx([(s + 1) / 11 for s in range(10)])
    assert factors[10] == pytest.approx(1.0)


def test_decay_shapes():
    total, warmup = 100, 10
    assert lr_factor(55, total, warmup, "cosine") == pytest.approx(0.5)  # half way through the decay
    assert lr_factor(55, total, warmup, "poly") == pytest.approx(0.5 ** 0.9)
    assert lr_factor(99, total, warmup, "cosine") < 0.001
    assert lr_factor(99, total, warmup, "none") == lr_factor(99, total, warmup, "plateau") == 1.0


def test_onecycle_rises_from_a_25th_and_ends_near_zero():
    total, rise = 100, 10
    factors = [lr_factor(step, total, rise, "onecycle") for step in range(total)]
    assert factors[0] == pytest.approx(1 / 25)
    assert max(factors) == pytest.approx(1.0, abs=1e-3) and factors.index(max(factors)) == rise
    assert factors[-1] < 1e-3
    # with no warm-up the rise takes 30% of training
    no_warmup = [lr_factor(step, total, 0, "onecycle") for step in range(total)]
    assert no_warmup.index(max(no_warmup)) == 30


def _schedule(**cfg) -> tuple[LRSchedule, torch.optim.Optimizer]:
    config = TrainConfig(**{"lr": 0.1, "epochs": 10, "warmup_epochs": 0, **cfg})
    optimizer = build_optimizer([torch.nn.Parameter(torch.zeros(1))], config)
    return LRSchedule(optimizer, config, steps_per_epoch=4), optimizer


def test_schedule_sets_the_optimizer_rate_every_step():
    schedule, optimizer = _schedule(scheduler="cosine")
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.1)
    for _ in range(20):
        schedule.step()
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.1 * 0.5 * (1 + math.cos(math.pi * 0.5)))


def test_plateau_cuts_after_patience_and_state_round_trips():
    schedule, optimizer = _schedule(scheduler="plateau", plateau_patience=2, plateau_factor=0.5)
    for score in (0.5, 0.6, 0.6, 0.59):  # best 0.6, then two epochs without gain
        schedule.epoch_end(score)
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.05)
    restored, restored_optimizer = _schedule(scheduler="plateau", plateau_patience=2, plateau_factor=0.5)
    restored.load_state_dict(schedule.state_dict())
    assert restored_optimizer.param_groups[0]["lr"] == pytest.approx(0.05)
    restored.epoch_end(0.61)  # a gain resets the count: no further cut
    restored.epoch_end(0.60)
    assert restored_optimizer.param_groups[0]["lr"] == pytest.approx(0.05)


@pytest.mark.parametrize("name,cls", [("adam", torch.optim.Adam), ("adamw", torch.optim.AdamW), ("sgd", torch.optim.SGD)])
def test_optimizers(name, cls):
    optimizer = build_optimizer([torch.nn.Parameter(torch.zeros(1))], TrainConfig(optimizer=name, weight_decay=0.01))
    assert type(optimizer) is cls
    assert optimizer.param_groups[0]["weight_decay"] == 0.01
    if name == "sgd":
        assert optimizer.param_groups[0]["nesterov"] and optimizer.param_groups[0]["momentum"] == 0.9


def _net_with_batch_norm() -> torch.nn.Module:
    return torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.BatchNorm1d(2))


def _set_weights(net: torch.nn.Module, value: float, batches: int) -> None:
    """Put every floating tensor of `net` at `value` and its batch counter at `batches`."""
    with torch.no_grad():
        for name, tensor in net.state_dict().items():
            tensor.fill_(value if tensor.is_floating_point() else batches)


def test_weight_average_follows_the_warmed_up_recurrence_and_copies_counters():
    net = _net_with_batch_norm()
    _set_weights(net, 0.0, 0)
    average = WeightAverage(net, decay=0.9)
    expected = 0.0
    for n, value in enumerate([1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 10.0, 11.0, 12.0], start=1):
        _set_weights(net, value, n)
        average.update()
        keep = min(0.9, (1 + n) / (10 + n))  # the ramp reaches 0.9 at n = 80
        expected = keep * expected + (1 - keep) * value
        assert average.current_decay() == pytest.approx(keep)
    state = average.module.state_dict()
    for name, tensor in state.items():
        if tensor.is_floating_point():  # weights and batch-norm statistics alike
            torch.testing.assert_close(tensor, torch.full_like(tensor, expected))
        else:
            assert int(tensor) == 12
    assert float(net[0].weight[0, 0]) == 12.0, "the trained network is left as it is"
    assert not any(p.requires_grad for p in average.module.parameters())


def test_weight_average_state_resumes_the_same_average():
    torch.manual_seed(0)
    net = _net_with_batch_norm()
    steps = [torch.randn(4, 2) for _ in range(6)]
    optimizer = torch.optim.SGD(net.parameters(), lr=0.1)
    uninterrupted = WeightAverage(net, decay=0.5)
    resumed = None
    for i, batch in enumerate(steps):
        optimizer.zero_grad()
        net(batch).square().mean().backward()
        optimizer.step()
        uninterrupted.update()
        if resumed:
            resumed.update()
        if i == 2:  # a new run: a fresh copy of the network, the saved average loaded into it
            resumed = WeightAverage(net, decay=0.5)
            resumed.load_state_dict(uninterrupted.state_dict())
    for name, tensor in uninterrupted.module.state_dict().items():
        assert torch.equal(tensor, resumed.module.state_dict()[name]), name
    assert resumed.updates == len(steps)
