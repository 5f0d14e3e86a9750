"""Writing PNG sets: the threaded writer gives the files one writer gives, at every bit depth, and fails loudly."""
import numpy as np
import pytest
from PIL import Image

from medsyn.imageio import to_uint, write_png, write_pngs


@pytest.mark.parametrize("channels,bit_depth,mode", [(1, 8, "L"), (1, 16, "I;16"), (3, 8, "RGB"), (3, 16, "RGB")])
def test_threaded_writer_writes_the_bytes_of_one_writer(tmp_path, channels, bit_depth, mode):
    rng = np.random.default_rng(0)
    images = rng.random((150, channels, 9, 7)).astype(np.float32)
    one = [tmp_path / "one" / f"{i}.png" for i in range(len(images))]
    many = [tmp_path / "many" / f"{i}.png" for i in range(len(images))]
    for folder in ("one", "many", "single"):
        (tmp_path / folder).mkdir()
    write_pngs(one, images, bit_depth, workers=1)
    write_pngs(many, images, bit_depth, workers=3)
    for i in (0, 77, 149):
        write_png(tmp_path / "single" / f"{i}.png", images[i], bit_depth)
        assert one[i].read_bytes() == many[i].read_bytes() == (tmp_path / "single" / f"{i}.png").read_bytes()
    assert all(a.read_bytes() == b.read_bytes() for a, b in zip(one, many))
    with Image.open(many[5]) as back:
        assert back.mode == mode
        np.testing.assert_array_equal(np.asarray(back), to_uint(images[5], 16 if mode == "I;16" else 8))


def test_batch_conversion_equals_per_image_conversion():
    images = np.random.default_rng(1).random((4, 3, 5, 5))
    assert np.array_equal(to_uint(images, 8), np.stack([to_uint(img, 8) for img in images]))
    assert to_uint(images[:, :1], 16).shape == (4, 5, 5)


def test_a_failed_write_raises_instead_of_leaving_a_silent_gap(tmp_path):
    images = np.zeros((200, 1, 4, 4), np.float32)
    paths = [tmp_path / f"{i}.png" for i in range(200)]
    paths[150] = tmp_path / "missing-folder" / "x.png"
    with pytest.raises(FileNotFoundError):
        write_pngs(paths, images, workers=2)
    with pytest.raises(ValueError, match="199 paths for 200 images"):
        write_pngs(paths[:199], images)


def test_samples_npz_is_converted_in_blocks_without_changing_a_pixel(tmp_path, monkeypatch):
    import medsyn.sample as sample

    monkeypatch.setattr(sample, "NPZ_BLOCK", 3)  # 7 images: blocks of 3, 3 and 1
    images = np.random.default_rng(0).random((7, 1, 5, 5), dtype=np.float32)
    labels = np.array([0, 0, 0, 1, 1, 1, 1])
    sample._write_npz(tmp_path, images, labels, ["a", "b"], 16, [{"seed": i} for i in range(7)])
    with np.load(tmp_path / "samples.npz") as arrays:
        assert arrays["train_images"].dtype == np.uint16
        np.testing.assert_array_equal(arrays["train_images"], np.stack([to_uint(img, 16) for img in images]))
        assert arrays["train_labels"].ravel().tolist() == labels.tolist()
