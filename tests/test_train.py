"""Training: every registered model trains and samples; resume equals an uninterrupted run; guards."""
import os
import signal

import numpy as np
import pytest
import torch

from medsyn.errors import DivergenceError, RunError
from medsyn.models import MODELS
from medsyn.sample import load_generator, synthesize, write_samples
from medsyn.train.run import execute_run, prepare_run

TINY = {"width": 0.0625, "batch": 4, "log_every": 1, "ckpt_every": 2, "grid_every": 2, "device": "cpu"}


def _train(run_dir, data, **overrides):
    from medsyn.train.run import DataOptions
    prepared = prepare_run(run_dir, [{**TINY, **overrides}], DataOptions(data) if data else None, resume=data is None)
    return prepared, execute_run(prepared)


def _states_equal(a: dict, b: dict) -> bool:
    return all(torch.equal(a[k], b[k]) for k in a) and a.keys() == b.keys()


@pytest.mark.parametrize("name", [n for n in MODELS if MODELS.get(n).role == "generator"])
@pytest.mark.parametrize("size,channels", [(28, 1), (40, 3)])
def test_every_model_trains_and_samples(tmp_path, make_npz, name, size, channels):
    data = make_npz(size=size, channels=channels)
    prepared, result = _train(tmp_path / "run", data, model=name, steps=2)
    assert result.step == 2 and np.isfinite(list(result.last_stats.values())).all()
    run = tmp_path / "run"
    for produced in ("checkpoint.pt", "config.yaml", "data.json", "grid_latest.png"):
        assert (run / produced).is_file(), produced
    out = write_samples(run, tmp_path / "samples", n_per_class=2, seed=1, device="cpu")
    lines = (out / "manifest.csv").read_text().splitlines()
    assert lines[0].startswith("path,label,class_name,model,checkpoint_sha256,step,seed,index")
    assert len(lines) == 1 + 3 * 2
    assert sorted(p.name for p in out.glob("grid_*.png")) == ["grid_class_0.png", "grid_class_1.png", "grid_class_2.png"]


@pytest.mark.parametrize("name,overrides", [("dcgan", {"per_class": False}), ("dcgan", {}), ("wgan-gp", {"critic_steps": 2}),
                                            ("lungct-gan", {}), ("acgan", {"augment": "liver-lesion"}),
                                            ("wgan-gp", {"critic_steps": 2, "gp_every": 3}),
                                            ("sngan", {"noise_inputs": True}), ("sngan", {"lecam": 0.3})])
def test_resume_equals_uninterrupted_run(tmp_path, make_npz, name, overrides):
    data = make_npz()
    straight, _ = _train(tmp_path / "straight", data, model=name, steps=4, **overrides)
    _train(tmp_path / "split", data, model=name, steps=2, **overrides)
    resumed, result = _train(tmp_path / "split", None, steps=4)
    assert result.step == 4
    a, b = straight.trainer.state_dict(), resumed.trainer.state_dict()
    for key in ("generator", "discriminator", "generator_ema"):
        assert _states_equal(a[key], b[key]), key
    if overrides.get("lecam"):
        assert torch.equal(a["loss"]["lecam"]["anchors"], b["loss"]["lecam"]["anchors"])


def test_same_seed_same_samples(tmp_path, make_npz):
    data = make_npz()
    _train(tmp_path / "a", data, steps=2)
    _train(tmp_path / "b", data, steps=2)
    x1, y1 = synthesize(load_generator(tmp_path / "a", "cpu"), 3, seed=5)
    x2, _ = synthesize(load_generator(tmp_path / "b", "cpu"), 3, seed=5)
    x3, _ = synthesize(load_generator(tmp_path / "a", "cpu"), 3, seed=6)
    assert np.array_equal(x1, x2) and not np.array_equal(x1, x3)
    assert y1.tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    # image i of a class does not depend on how many are drawn (up to conv rounding at another batch size)
    x4, _ = synthesize(load_generator(tmp_path / "a", "cpu"), 5, seed=5)
    np.testing.assert_allclose(x4[:3], x1[:3], atol=1e-6)


def test_divergence_guard_keeps_last_good_checkpoint(tmp_path, make_npz, monkeypatch):
    from medsyn.train import losses

    original = losses.GanLoss.g_loss

    def poisoned(self, D, fake, labels, step):
        loss, stats = original(self, D, fake, labels, step)
        poisoned.calls += 1
        if poisoned.calls >= 3:
            stats["loss_g"] = stats["loss_g"] * float("nan")
        return loss, stats

    poisoned.calls = 0
    monkeypatch.setattr(losses.GanLoss, "g_loss", poisoned)
    with pytest.raises(DivergenceError, match="step 3: loss_g is nan.*step 2"):
        _train(tmp_path / "run", make_npz(), steps=6)
    state = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)
    assert state["step"] == 2


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])  # SIGTERM: timeout, SLURM, Kubernetes
def test_ctrl_c_saves_a_finished_step_and_resume_matches(tmp_path, make_npz, signum):
    from medsyn.train.run import DataOptions

    data = make_npz()
    prepared = prepare_run(tmp_path / "run", [{**TINY, "steps": 5, "ckpt_every": 100}], DataOptions(data), False)

    def interrupt(step, total, values, rate):
        if step == 3:
            os.kill(os.getpid(), signum)

    result = execute_run(prepared, interrupt)
    assert result.interrupted and result.step == 3
    assert torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)["step"] == 3
    resumed, result = _train(tmp_path / "run", None)
    straight, _ = _train(tmp_path / "straight", data, steps=5, ckpt_every=100)
    assert result.step == 5
    assert _states_equal(straight.trainer.state_dict()["generator"], resumed.trainer.state_dict()["generator"])


def test_new_run_refuses_an_existing_run_and_resume_refuses_changes(tmp_path, make_npz):
    data = make_npz()
    _train(tmp_path / "run", data, steps=1)
    with pytest.raises(RunError, match="--resume"):
        _train(tmp_path / "run", data, steps=2)
    with pytest.raises(Exception, match="cannot change lr_g"):
        _train(tmp_path / "run", None, steps=2, lr_g=1.0)


def test_epochs_set_the_run_length(tmp_path, make_npz):
    prepared, result = _train(tmp_path / "run", make_npz(n_per_class=8), epochs=2, batch=6)
    assert result.step == 8  # 24 images, batch 6: 4 steps an epoch


@pytest.mark.parametrize("name", ["dcgan", "wgan-gp", "gaunet"])
def test_the_generator_step_leaves_the_critics_gradients_alone(tmp_path, make_npz, name):
    """G's loss goes through D, but D's weight gradients from it would be thrown away: the G step
    computes none (D's .grad after a step is exactly what its own update used), and D trains on."""
    prepared, _ = _train(tmp_path / "run", make_npz(), model=name, steps=1)
    trainer = prepared.trainer
    used_by_d_step = {}
    after_d = trainer.loss.after_d_update

    def record(D, stats, dist):
        logged = after_d(D, stats, dist)
        used_by_d_step.update({n: p.grad.clone() for n, p in D.named_parameters() if p.grad is not None})
        return logged

    trainer.loss.after_d_update = record
    before = {n: p.detach().clone() for n, p in trainer.D.named_parameters()}
    trainer.train_step()
    assert used_by_d_step, "the D step produced no gradients"
    for n, p in trainer.D.named_parameters():
        assert p.requires_grad, n
        if n in used_by_d_step:
            assert torch.equal(p.grad, used_by_d_step[n]), n
    assert any(not torch.equal(before[n], p) for n, p in trainer.D.named_parameters())


def test_lazy_gradient_penalty_runs_every_kth_critic_update_weighted_k_times():
    from medsyn.train.losses import GradientPenaltyLoss, StepContext

    torch.manual_seed(0)
    critic = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(12, 1))
    D = lambda x, labels: (critic(x).squeeze(1), None)  # noqa: E731
    real, fake = torch.randn(6, 3, 2, 2), torch.randn(6, 3, 2, 2)
    every = GradientPenaltyLoss(10.0)
    lazy = GradientPenaltyLoss(10.0, gp_every=4)
    for update in range(8):
        step = StepContext(update)
        torch.manual_seed(update)  # the same interpolates for both
        loss_every, stats_every = every.d_loss(D, real, fake, None, step)
        torch.manual_seed(update)
        loss_lazy, stats_lazy = lazy.d_loss(D, real, fake, None, step)
        if update % 4 == 0:
            assert torch.allclose(loss_lazy + stats_lazy["w_distance"], 4 * (loss_every + stats_every["w_distance"]))
        else:
            assert "gp" not in stats_lazy and torch.equal(loss_lazy, -stats_lazy["w_distance"])


def test_lazy_penalty_config_is_checked():
    from medsyn.config import build_config
    from medsyn.errors import ConfigError

    with pytest.raises(ConfigError, match="gp_every must be at least 1"):
        build_config({}, {"gp_every": 0})


def _bf16_cpu(monkeypatch, native: bool) -> None:
    """Make the CPU probes report (or deny) native bf16, whatever this machine has."""
    for probe in ("_is_avx512_bf16_supported", "_is_amx_tile_supported"):
        monkeypatch.setattr(torch.cpu, probe, lambda: native, raising=False)


@pytest.mark.parametrize("native,amp,expected", [(True, True, "bf16 autocast"), (True, False, "float32"),
                                                 (False, True, "float32")])
def test_mixed_precision_only_where_bf16_is_native_and_asked_for(monkeypatch, native, amp, expected):
    from medsyn.train.setup import COMPUTE_DTYPES, mixed_precision

    _bf16_cpu(monkeypatch, native)
    name, autocast = mixed_precision(torch.device("cpu"), amp)
    layer = torch.nn.Linear(4, 2)
    with autocast():
        out = layer(torch.randn(3, 4))
    assert name == expected
    assert out.dtype == COMPUTE_DTYPES[name] == (torch.bfloat16 if expected == "bf16 autocast" else torch.float32)


@pytest.mark.parametrize("name,overrides", [("dcgan", {"per_class": False}), ("wgan-gp", {"critic_steps": 2})])
def test_bf16_training_keeps_float32_state_and_resumes_exactly(tmp_path, make_npz, monkeypatch, name, overrides):
    _bf16_cpu(monkeypatch, True)
    data = make_npz()
    straight, result = _train(tmp_path / "straight", data, model=name, steps=4, **overrides)
    assert straight.trainer.precision == "bf16 autocast" and np.isfinite(list(result.last_stats.values())).all()
    _train(tmp_path / "split", data, model=name, steps=2, **overrides)
    resumed, _ = _train(tmp_path / "split", None, steps=4)
    a, b = straight.trainer.state_dict(), resumed.trainer.state_dict()
    assert a["precision"] == b["precision"] == "bf16 autocast"  # recorded in the checkpoint
    for key in ("generator", "discriminator", "generator_ema"):
        assert all(t.dtype in (torch.float32, torch.int64) for t in a[key].values()), key
        assert _states_equal(a[key], b[key]), key
    _bf16_cpu(monkeypatch, False)
    fp32, _ = _train(tmp_path / "fp32", data, model=name, steps=4, **overrides)
    assert fp32.trainer.precision == "float32"
    assert not _states_equal(a["generator"], fp32.trainer.state_dict()["generator"])  # bf16 really ran


@pytest.mark.parametrize("major,native", [(7, False), (8, True), (9, True)])
def test_cuda_bf16_is_native_from_compute_capability_8(monkeypatch, major, native):
    """V100/T4 (7.x) emulate bf16 slower than float32: they train in float32; A100/H100 in bf16."""
    from types import SimpleNamespace

    from medsyn.train.setup import native_bf16

    monkeypatch.setattr(torch.version, "hip", None)
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda device: SimpleNamespace(major=major))
    assert native_bf16(torch.device("cuda:1")) is native


def test_sigterm_to_the_command_saves_the_run(tmp_path, make_npz):
    """`timeout N medsyn train ...` sends SIGTERM: the finished steps are saved, and the exit says how to go on."""
    import subprocess
    import sys
    import time

    run = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-m", "medsyn", "train", "--data", make_npz(), "--out", str(run),
                             "--steps", "100000", "--set", "width=0.0625", "--batch", "4", "--device", "cpu",
                             "--set", "ckpt_every=100000", "--set", "log_every=1"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not (run / "tensorboard").is_dir() and time.monotonic() < deadline:  # the loop has started
        time.sleep(0.2)
    time.sleep(1.0)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err[-2000:]
    assert "checkpoint saved" in err and "--resume" in err
    step = torch.load(run / "checkpoint.pt", weights_only=True)["step"]
    assert 0 < step < 100000


def test_resuming_a_finished_run_says_it_is_complete_and_how_to_extend_it(tmp_path, make_npz):
    from typer.testing import CliRunner

    from medsyn.cli import app

    _train(tmp_path / "run", make_npz(), steps=2)
    before = (tmp_path / "run" / "checkpoint.pt").read_bytes()
    result = CliRunner().invoke(app, ["train", "--out", str(tmp_path / "run"), "--resume"])
    assert result.exit_code == 0, result.output
    assert "is already complete: step 2 of 2" in result.output and "--resume --steps N (N > 2)" in result.output
    assert (tmp_path / "run" / "checkpoint.pt").read_bytes() == before  # nothing retrained or rewritten
