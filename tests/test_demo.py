"""The README's main job, shortened: phantoms -> conditional GAN -> labeled synthetic set."""
from rich.console import Console

from medsyn.cli import _progress
from medsyn.data import load_source
from medsyn.demo import run_demo


def test_demo_end_to_end_and_rerun_resumes(tmp_path):
    out = tmp_path / "demo"
    run_demo(out, steps=2, device="cpu", console=Console(stderr=True), progress_factory=_progress)
    synthetic = load_source(str(out / "synthetic"))
    assert synthetic.class_names == ["cyst", "metastasis", "hemangioma"]
    assert synthetic.class_counts() == [100, 100, 100] and synthetic.size == 48
    for name in ("cyst", "metastasis", "hemangioma"):
        assert (out / "synthetic" / f"grid_{name}.png").is_file()
        assert (out / "phantoms" / f"grid_{name}.png").is_file()
    # a second call with more steps continues the same run instead of starting over
    run_demo(out, steps=3, device="cpu", console=Console(stderr=True), progress_factory=_progress)
    import torch
    assert torch.load(out / "run" / "checkpoint.pt", weights_only=True)["step"] == 3
