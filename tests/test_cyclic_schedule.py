"""The cyclic learning rate matches Smith's definition step by step, and the fit loop steps it per batch."""

from __future__ import annotations

import pytest
import torch
from torch.utils.data import TensorDataset

from training.config import ConfigError, load_config
from training.engine import FitSettings, fit
from training.recipe import build_optimizer, build_scheduler, cyclic_learning_rate, steps_per_batch

BASE, TOP, STEP = 1e-4, 1e-3, 4


def _by_hand(mode: str, iterations: int) -> list[float]:
    """Walk the triangle explicitly: up STEP iterations, down STEP, repeat (halving the height for triangular2)."""
    rates, height = [], TOP - BASE
    for i in range(iterations):
        cycle, within = divmod(i, 2 * STEP)
        if mode == "triangular2":
            height = (TOP - BASE) / 2 ** cycle
        position = within if within <= STEP else 2 * STEP - within  # 0 .. STEP .. 0
        rates.append(BASE + height * position / STEP)
    return rates


@pytest.mark.parametrize("mode", ["triangular", "triangular2"])
def test_the_formula_is_the_triangle(mode):
    expected = _by_hand(mode, 5 * 2 * STEP)
    got = [cyclic_learning_rate(i, BASE, TOP, STEP, mode) for i in range(len(expected))]
    assert got == pytest.approx(expected, rel=1e-12, abs=1e-15)
    assert got[0] == pytest.approx(BASE) and got[STEP] == pytest.approx(TOP) and got[2 * STEP] == pytest.approx(BASE)


@pytest.mark.parametrize("mode", ["triangular", "triangular2"])
def test_the_built_scheduler_agrees_with_the_formula_and_with_torchs_cycliclr(tmp_path, mode):
    path = tmp_path / "cyclic.toml"
    path.write_text(f'[optim]\nname = "sgd"\nlr = {TOP}\nmomentum = 0.0\n[schedule]\nname = "cyclic"\n'
                    f'cyclic_mode = "{mode}"\nbase_lr = {BASE}\ncycle_step_size = {STEP}\n', encoding="utf-8")
    config = load_config(path)
    assert steps_per_batch(config)
    model = torch.nn.Linear(2, 2)
    ours = build_optimizer(config, model)
    scheduler = build_scheduler(config, ours)
    theirs = torch.optim.SGD(torch.nn.Linear(2, 2).parameters(), lr=TOP)
    reference = torch.optim.lr_scheduler.CyclicLR(theirs, BASE, TOP, step_size_up=STEP, mode=mode,
                                                  cycle_momentum=False)
    for iteration in range(6 * STEP):
        lr = ours.param_groups[0]["lr"]
        assert lr == pytest.approx(cyclic_learning_rate(iteration, BASE, TOP, STEP, mode), rel=1e-9)
        assert lr == pytest.approx(reference.get_last_lr()[0], rel=1e-9)
        ours.step()
        scheduler.step()
        theirs.step()
        reference.step()


def test_the_lower_bound_must_lie_below_the_upper(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text('[optim]\nlr = 1e-4\n[schedule]\nname = "cyclic"\nbase_lr = 1e-3\n', encoding="utf-8")
    with pytest.raises(ConfigError, match="schedule.base_lr"):
        load_config(path)


def test_the_fit_loop_steps_a_per_batch_scheduler_after_every_batch(tmp_path):
    x = torch.randn(40, 3)
    data = TensorDataset(x, (x[:, 0] > 0).long())
    model = torch.nn.Linear(3, 2)
    optimizer = torch.optim.SGD(model.parameters(), lr=TOP)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda i: cyclic_learning_rate(i, BASE, TOP, STEP, "triangular") / TOP)
    settings = FitSettings(max_epochs=2, batch_size=8, out_dir=tmp_path, progress=False, channels_last=False,
                           scheduler_per_batch=True)
    fit(model, data, data, optimizer, torch.nn.functional.cross_entropy, settings, scheduler=scheduler)
    assert scheduler.last_epoch == 2 * 5  # 40 images / batch 8 = 5 steps per epoch, 2 epochs
    assert optimizer.param_groups[0]["lr"] == pytest.approx(cyclic_learning_rate(10, BASE, TOP, STEP, "triangular"))
