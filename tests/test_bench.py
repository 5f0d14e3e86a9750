"""The benchmarks' utilisation arithmetic: counted FLOPs of known layers, a measured peak, the ratio."""
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).parents[1] / "bench"))
from utilisation import Utilisation, counted_flops, matmul_peak  # noqa: E402


def test_counted_flops_of_a_linear_layer_forward_and_backward():
    layer, x = nn.Linear(100, 10), torch.randn(8, 100, requires_grad=True)
    assert counted_flops(lambda: layer(x)) == 2 * 8 * 100 * 10
    # backward: the input gradient and the weight gradient, each as costly as the forward
    assert counted_flops(lambda: layer(x).sum().backward()) == 3 * 2 * 8 * 100 * 10


def test_counted_flops_of_a_convolution():
    conv = nn.Conv2d(3, 16, 5, stride=2, padding=2)
    flops = counted_flops(lambda: conv(torch.randn(4, 3, 32, 32)))
    assert flops == 2 * 4 * 16 * 16 * 16 * 3 * 5 * 5  # N x out-pixels x C_out x (C_in x k x k) multiply-adds
    with torch.inference_mode():  # composite aten.conv2d reaches the counter whole here: it must decompose it
        assert counted_flops(lambda: conv(torch.randn(4, 3, 32, 32))) == flops
    with torch.inference_mode():
        assert counted_flops(lambda: nn.Linear(100, 10)(torch.randn(8, 100))) == 2 * 8 * 100 * 10


def test_matmul_peak_is_a_plausible_rate_and_utilisation_is_rate_times_flops_over_peak():
    peak = matmul_peak("cpu", side=256, seconds=0.05, trials=2)
    assert 1e8 < peak < 1e14  # between 0.1 GFLOP/s and 100 TFLOP/s on any CPU
    use = Utilisation(flops_per_image=2e9, peak=200e9)
    assert use.describe(25.0) == "50.0 GFLOP/s = 25.0 % of peak"
    assert "2.000 GFLOP per image" in use.header("step", torch.float32)
    assert "float32 matmul" in use.header("step", torch.float32)


@pytest.mark.parametrize("bad", [0, -1])
def test_matmul_peak_rejects_a_bad_timing_budget(bad):
    with pytest.raises(ValueError, match="seconds"):
        matmul_peak("cpu", side=64, seconds=bad)


def test_counted_flops_follow_a_double_backward():
    """The WGAN-GP penalty differentiates a gradient: its FLOPs are counted, not refused."""
    layer, x = nn.Linear(10, 1), torch.randn(4, 10, requires_grad=True)

    def penalty():
        (grad,) = torch.autograd.grad(layer(x).sum(), x, create_graph=True)
        grad.square().sum().backward()

    assert counted_flops(penalty) >= 2 * 2 * 4 * 10  # at least the forward and the input-gradient matmul


def test_audit_speed_bench_prints_both_searches_with_their_ratios(capsys):
    """A smoke run of bench/audit_speed.py on a few images (the real figures: 10,000 x 5,000, see its docstring)."""
    import audit_speed

    audit_speed.main(["--n-synthetic", "40", "--n-train", "60", "--size", "28", "--dim", "16",
                      "--baseline-queries", "10"])
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].startswith("# torch") and len(lines) == 3
    assert lines[1].startswith("features 40 x 60 (16-d)") and "same neighbour 100.0 %" in lines[1]
    assert lines[2].startswith("pixels 40 x 60 (28x28") and "never under: True" in lines[2]
    assert all(float(line.rsplit("ratio ", 1)[1]) > 0 for line in lines[1:])


def test_classifier_speed_bench_prints_both_layouts_and_their_ratio(capsys):
    """A smoke run of bench/classifier_speed.py at toy sizes (the real figures: docs/speed.md)."""
    import classifier_speed

    classifier_speed.main(["--cases", "lesion-cnn:16:1:2", "resnet18:16:3:3", "--rounds", "1", "--steps", "1",
                           "--threads", "1", "--set", "batch=4"])
    rows = [line.split(" | ") for line in capsys.readouterr().out.strip().splitlines()[2:]]
    assert [row[:4] for row in rows] == [["lesion-cnn", "16", "1", "4"], ["resnet18", "16", "3", "4"]]
    for row in rows:
        contiguous, last, ratio = float(row[5]), float(row[6]), float(row[7])
        assert contiguous > 0 and last > 0 and ratio == pytest.approx(last / contiguous, abs=0.01)
        assert row[8] == "channels_last"  # what the registry trains in


def test_gpu_studies_script_runs_a_slice_stops_it_and_collects_what_it_wrote(tmp_path, medmnist_dir):
    """bench/gpu_studies.sh: the YAML's data path rewritten to MEDSYN_BENCH_DATA, the study stopped
    as Ctrl-C would at the slice's end, its small files and plan collected (resuming: docs/studies.md)."""
    import os
    import subprocess

    script = Path(__file__).parents[1] / "bench" / "gpu_studies.sh"
    env = {**os.environ, "SMALL": "1", "DEVICE": "cpu", "MEDSYN_BENCH_DATA": str(medmnist_dir),
           "MEDSYN_STUDY_WORK": str(tmp_path / "work"), "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    out = tmp_path / "out"
    done = subprocess.run(["bash", str(script), str(out), "30", "breast-ultrasound"], env=env, capture_output=True,
                          text=True, timeout=240)
    assert done.returncode == 0, done.stderr
    assert "status 124" in done.stdout  # stopped at the slice's limit
    yaml_text = (tmp_path / "work" / "breast-ultrasound.yaml").read_text()
    assert str((medmnist_dir / "breastmnist.npz").resolve()) in yaml_text and "*id0" not in yaml_text
    assert "interrupted; finished units are kept" in (out / "breast-ultrasound.log").read_text()
    assert (out / "breast-ultrasound" / "study.json").is_file() and (out / "device.txt").is_file()
    assert "units" in (out / "breast-ultrasound.plan.txt").read_text()
    assert not list((out / "breast-ultrasound").glob("*.pt"))  # checkpoints stay in WORK
