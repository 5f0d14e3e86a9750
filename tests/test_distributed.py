"""torchrun data parallelism on CPU (gloo): two processes give the run of one process with the same global batch."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from medsyn.data.phantoms import write_phantoms
from medsyn.errors import ConfigError
from medsyn.train.distributed import Distributed

# float32 steps (amp off): the match with one process is to float32 rounding; under bf16 autocast
# (on CPUs with AVX512-BF16 or AMX) the shards' different reduction order shows at bf16 rounding instead.
TINY = ["--batch", "8", "--set", "width=0.0625", "--set", "log_every=2", "--set", "amp=false", "--device", "cpu"]


@pytest.fixture(scope="module")
def phantoms(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("ddp") / "phantoms"
    write_phantoms(root, size=32, per_class=12, seed=0)
    return root


def medsyn_train(args: list[str], processes: int, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(key, None)
    if processes == 1:
        command = [sys.executable, "-m", "medsyn", "train", *args]
    else:
        command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}",
                   "-m", "medsyn", "train", *args]
    result = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def largest_difference(run_a: Path, run_b: Path) -> float:
    a = torch.load(run_a / "checkpoint.pt", weights_only=False)
    b = torch.load(run_b / "checkpoint.pt", weights_only=False)
    worst = 0.0
    for key in ("generator", "discriminator", "generator_ema"):
        assert sorted(a[key]) == sorted(b[key])  # checkpoints of either kind load into one another
        worst = max(worst, max(float((a[key][k].float() - b[key][k].float()).abs().max()) for k in a[key]))
    return worst


# Adam divides each gradient by its own magnitude, so for gradients near zero it turns rounding
# differences between one and two processes into steps of size lr; SGD shows the true agreement.
@pytest.mark.parametrize("model", [
    ["--model", "dcgan", "--conditional"],
    # per class and sgd are covered by the data-efficient case (dcgan's default is per class)
    pytest.param(["--model", "dcgan", "--per-class", "--set", "optimizer=sgd"], marks=pytest.mark.slow),
    ["--model", "wgan-gp", "--set", "critic_steps=2"],
    ["--model", "pggan", "--set", "optimizer=sgd"],  # minibatch std over groups that shards keep whole
    # DiffAugment and ADA draw for the global batch and keep the shard; ADA's r_t sums over ranks;
    # LeCam's anchors average the ranks' mean scores
    ["--model", "dcgan", "--set", "optimizer=sgd", "--set", "diffaug=color,translation,cutout",
     "--set", "ada_target=0.1", "--set", "ada_kimg=0.01", "--set", "r1=1", "--set", "r1_every=2",
     "--set", "spectral_norm=true", "--set", "lecam=0.3"],
], ids=["dcgan-conditional", "dcgan-per-class", "wgan-gp", "pggan", "dcgan-data-efficient"])
def test_two_processes_match_one(tmp_path, phantoms, model):
    args = ["--data", str(phantoms), *model, "--steps", "3", *TINY]
    one = medsyn_train([*args, "--out", "one"], 1, tmp_path)
    assert "in float32" in one.stderr + one.stdout  # amp=false: float32 on every CPU
    two = medsyn_train([*args, "--out", "two"], 2, tmp_path)
    assert largest_difference(tmp_path / "one", tmp_path / "two") < 1e-5
    assert "x 2 processes" in two.stderr + two.stdout  # rank 0 reports the world size
    assert (two.stderr + two.stdout).count("trained 3 steps") == 1  # the other rank stays quiet
    assert (tmp_path / "two" / "grid_latest.png").is_file() and (tmp_path / "two" / "tensorboard").is_dir()


def test_resume_under_torchrun_equals_one_uninterrupted_run(tmp_path, phantoms):
    args = ["--data", str(phantoms), "--model", "dcgan", "--conditional", *TINY]
    medsyn_train([*args, "--steps", "4", "--out", "straight"], 1, tmp_path)
    medsyn_train([*args, "--steps", "2", "--out", "resumed"], 2, tmp_path)
    medsyn_train(["--out", "resumed", "--resume", "--steps", "4"], 2, tmp_path)
    assert torch.load(tmp_path / "resumed" / "checkpoint.pt", weights_only=False)["step"] == 4
    assert largest_difference(tmp_path / "straight", tmp_path / "resumed") < 1e-5


def test_shard_keeps_a_share_of_every_class_block():
    batch = torch.arange(12)  # three classes of four, class-major as per-class training draws them
    shards = [Distributed(rank, 2).shard(batch, blocks=3).tolist() for rank in range(2)]
    assert shards == [[0, 1, 4, 5, 8, 9], [2, 3, 6, 7, 10, 11]]
    assert Distributed().shard(batch).tolist() == batch.tolist()


def test_batch_must_divide_among_processes():
    with pytest.raises(ConfigError, match="divide evenly among 4 processes; pass --batch 8"):
        Distributed(0, 4).check_batch(10)
    Distributed(0, 4).check_batch(8)


def test_progressive_growing_trains_under_torchrun(tmp_path, phantoms):
    """pggan's not-yet-grown layers get no gradient: DDP must be told to expect unused parameters.

    Its minibatch-std groups are formed within each rank's shard (as in Karras et al.'s multi-GPU
    code), so two processes are not expected to equal one here; the run must complete and resume.
    """
    args = ["--data", str(phantoms), "--model", "pggan", *TINY]
    medsyn_train([*args, "--steps", "2", "--out", "grown"], 2, tmp_path)
    medsyn_train(["--out", "grown", "--resume", "--steps", "3"], 2, tmp_path)
    state = torch.load(tmp_path / "grown" / "checkpoint.pt", weights_only=False)
    assert state["step"] == 3 and state["model"]["name"] == "pggan"


def test_sampling_is_split_across_ranks_and_equals_one_process(tmp_path, phantoms):
    """Each rank makes every world_size-th block of latents (here: the classes' blocks 0, 2 and 1);
    rank 0 puts the shares together and writes the folder one process would have written."""
    args = ["--data", str(phantoms), "--model", "dcgan", "--conditional", *TINY]
    medsyn_train([*args, "--steps", "1", "--out", "run"], 1, tmp_path)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    for processes, out in ((1, "one"), (2, "two")):
        launcher = ([sys.executable, "-m", "medsyn"] if processes == 1 else
                    [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "medsyn"])
        result = subprocess.run([*launcher, "sample", "run", "--n-per-class", "10", "--out", out, "--device", "cpu"],
                                cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, result.stderr[-3000:]
    assert "2 processes" in result.stdout and result.stdout.count("wrote 30 synthetic images") == 1
    one, two = tmp_path / "one", tmp_path / "two"
    assert (one / "manifest.csv").read_text() == (two / "manifest.csv").read_text()
    files = sorted(p.relative_to(one) for p in one.rglob("*.png"))
    assert len(files) == 30 + 3 and files == sorted(p.relative_to(two) for p in two.rglob("*.png"))
    assert all((one / f).read_bytes() == (two / f).read_bytes() for f in files)
    assert not list(tmp_path.glob(".two.*")), "the ranks' scratch shares are removed"


def test_sampling_shares_partition_the_set_block_by_block():
    from types import SimpleNamespace

    from medsyn.sample import LATENT_BLOCK, synthesis_positions

    loaded = SimpleNamespace(model={"num_classes": 3})
    n = 2 * LATENT_BLOCK + 5  # three blocks per class, the last one short
    shares = [synthesis_positions(loaded, n, rank, 4) for rank in range(4)]
    assert sorted(np.concatenate(shares).tolist()) == list(range(3 * n))
    # blocks 0..8 go to ranks 0,1,2,3,0,1,2,3,0; blocks 2, 5 and 8 hold the 5 left over per class
    assert [len(s) for s in shares] == [2 * LATENT_BLOCK + 5, LATENT_BLOCK + 5, LATENT_BLOCK + 5, 2 * LATENT_BLOCK]
    assert shares[1][:2].tolist() == [LATENT_BLOCK, LATENT_BLOCK + 1]  # rank 1 starts at class 0's second block


def _renorm_rank(rank: int, world: int, init_file: str, batch: torch.Tensor, out: str) -> None:
    import torch.distributed as dist

    from medsyn.models.gaunet import BatchRenorm2d
    from medsyn.train.distributed import convert_batch_norm

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    torch.manual_seed(0)
    layer = convert_batch_norm(torch.nn.Sequential(BatchRenorm2d(3, warmup=0, ramp=1)))
    share = batch[rank * len(batch) // world:(rank + 1) * len(batch) // world].clone().requires_grad_(True)
    for _ in range(2):  # the second step renormalises against running statistics the first one moved
        output = layer(share)
    (output * torch.arange(output.numel()).view(output.shape)).sum().backward()
    torch.save({"output": output.detach(), "grad": share.grad, "state": layer.state_dict()}, f"{out}.{rank}")
    dist.destroy_process_group()


def test_batch_renormalisation_under_torchrun_uses_the_global_batch(tmp_path):
    """gaunet's BatchRenorm2d on 2 gloo ranks, each holding half a batch: outputs, input gradients and
    running statistics equal one process holding the whole batch."""
    import torch.multiprocessing as mp

    from medsyn.models.gaunet import BatchRenorm2d

    torch.manual_seed(1)
    batch = torch.randn(8, 3, 5, 5) * 2 + 1
    mp.spawn(_renorm_rank, args=(2, str(tmp_path / "init"), batch, str(tmp_path / "out")), nprocs=2)
    ranks = [torch.load(tmp_path / f"out.{r}", weights_only=True) for r in range(2)]

    torch.manual_seed(0)
    layer, whole = BatchRenorm2d(3, warmup=0, ramp=1), batch.clone().requires_grad_(True)
    for _ in range(2):
        output = layer(whole)
    weights = torch.arange(output[:4].numel()).view(output[:4].shape)
    (output[:4] * weights).sum().backward(retain_graph=True)  # each rank weighted its own share the same way
    (output[4:] * weights).sum().backward()
    torch.testing.assert_close(torch.cat([r["output"] for r in ranks]), output.detach(), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(torch.cat([r["grad"] for r in ranks]), whole.grad, rtol=1e-4, atol=1e-5)
    for key, value in layer.state_dict().items():
        torch.testing.assert_close(ranks[0]["state"][f"0.{key}"], value, rtol=1e-5, atol=1e-6)
    local = BatchRenorm2d(3, warmup=0, ramp=1)
    for _ in range(2):
        alone = local(batch[:4])
    assert not torch.allclose(ranks[0]["output"], alone.detach(), atol=1e-3)  # statistics of half a batch differ


def test_medsyn_leaves_its_process_group_on_every_exit(monkeypatch):
    # A gloo group still joined at interpreter exit can abort a rank after its work is done
    # ("terminate called without an active exception"), failing the torchrun job: main() leaves it.
    import socket

    import torch.distributed as dist

    from medsyn import cli
    from medsyn.errors import ConfigError
    from medsyn.train.distributed import leave

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=0, world_size=1)
    assert dist.is_initialized()

    def failing_command():
        raise ConfigError("bad input")

    monkeypatch.setattr(cli, "app", failing_command)
    monkeypatch.setattr(cli, "_sigterm_as_ctrl_c", lambda: None)  # leave pytest's own SIGTERM handling
    with pytest.raises(SystemExit) as exited:
        cli.main()
    assert exited.value.code == 2
    assert not dist.is_initialized()
    leave()  # a process that never joined one (or already left) has nothing to leave
    assert not dist.is_initialized()


def test_joining_a_process_group_registers_leaving_it_at_exit(monkeypatch):
    # A Python caller of medsyn.api under torchrun never passes through cli.main's finally.
    import socket

    import torch.distributed as dist

    from medsyn.train import distributed

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    # torchrun's environment for a one-rank group, so the test needs no second process
    for key, value in {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "RANK": "0", "WORLD_SIZE": "1"}.items():
        monkeypatch.setenv(key, value)
    at_exit = []
    monkeypatch.setattr(distributed.atexit, "register", at_exit.append)
    device = distributed.initialise(distributed.Distributed(rank=0, world_size=2), torch.device("cpu"))
    try:
        assert device == torch.device("cpu") and dist.is_initialized()
        assert at_exit == [distributed.leave]
        at_exit[0]()
        assert not dist.is_initialized()
    finally:
        distributed.leave()
    distributed.initialise(distributed.Distributed(), torch.device("cpu"))  # a single process joins nothing
    assert at_exit == [distributed.leave] and not dist.is_initialized()
