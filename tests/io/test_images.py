"""Image / mask / depth files: EXIF orientation, alpha, 16-bit depth, helpful errors."""

import numpy as np
import pytest
import torch
from PIL import Image

from vision3d.errors import UserError
from vision3d.io.images import (
    image_size, list_images, load_depth_png, load_image, load_image_folder, load_image_rgba, load_mask,
    save_depth_png, save_image, save_mask,
)


def test_save_load_roundtrip(tmp_path):
    rng = np.random.default_rng(0)
    u8 = rng.integers(0, 256, (5, 7, 3), dtype=np.uint8)
    save_image(tmp_path / "a.png", u8)
    img = load_image(tmp_path / "a.png")
    assert img.shape == (5, 7, 3) and img.dtype == torch.float32
    assert torch.equal((img * 255).round().to(torch.uint8), torch.from_numpy(u8))
    # float input in [0, 1] (tensor) rounds to the nearest 8-bit level
    save_image(tmp_path / "b.png", torch.from_numpy(u8).float() / 255)
    assert torch.equal(load_image(tmp_path / "b.png"), img)
    save_image(tmp_path / "c.jpg", u8)
    assert load_image(tmp_path / "c.jpg").shape == (5, 7, 3)


def test_exif_orientation_is_applied(tmp_path):
    # Stored 32 wide x 16 tall: left half red, right half blue. EXIF orientation 6
    # means "rotate 90 degrees clockwise to display": left goes to the top.
    a = np.zeros((16, 32, 3), np.uint8)
    a[:, :16] = (255, 0, 0)
    a[:, 16:] = (0, 0, 255)
    im = Image.fromarray(a)
    exif = im.getexif()
    exif[0x0112] = 6
    im.save(tmp_path / "phone.jpg", exif=exif.tobytes(), quality=95)
    img = load_image(tmp_path / "phone.jpg")
    assert img.shape == (32, 16, 3)  # displayed 16 wide x 32 tall
    assert img[4, 8, 0] > 0.8 and img[4, 8, 2] < 0.2  # top half red
    assert img[28, 8, 2] > 0.8 and img[28, 8, 0] < 0.2  # bottom half blue
    assert image_size(tmp_path / "phone.jpg") == (16, 32)


def test_rgba(tmp_path):
    a = np.zeros((2, 2, 4), np.uint8)
    a[..., 0] = 255  # red
    a[0, 0, 3] = 255
    a[0, 1, 3] = 0
    a[1, :, 3] = 128
    save_image(tmp_path / "rgba.png", a)
    rgb, alpha = load_image_rgba(tmp_path / "rgba.png")
    assert alpha is not None and alpha[0, 0] == 1 and alpha[0, 1] == 0
    assert torch.allclose(rgb[0, 1], torch.tensor([1.0, 0.0, 0.0]))  # not premultiplied
    comp = load_image(tmp_path / "rgba.png")  # over white by default
    assert torch.allclose(comp[0, 1], torch.ones(3)) and torch.allclose(comp[0, 0], torch.tensor([1.0, 0, 0]))
    black = load_image(tmp_path / "rgba.png", background=(0, 0, 0))
    assert torch.allclose(black[0, 1], torch.zeros(3))
    assert load_image_rgba(tmp_path / "rgba.png")[1] is not None
    save_image(tmp_path / "rgb.png", a[..., :3])
    assert load_image_rgba(tmp_path / "rgb.png")[1] is None


def test_depth_png_roundtrip(tmp_path):
    d = torch.tensor([[0.0, 0.3004, 1.5], [float("nan"), -1.0, 70.0]])
    save_depth_png(tmp_path / "d.png", d)
    with Image.open(tmp_path / "d.png") as im:
        assert im.mode == "I;16"  # 16-bit single channel, as nerfstudio reads
        raw = np.asarray(im)
    assert raw.tolist() == [[0, 300, 1500], [0, 0, 65535]]  # mm, missing -> 0, clipped
    back = load_depth_png(tmp_path / "d.png")
    assert back.dtype == torch.float32 and abs(back[0, 1].item() - 0.300) < 1e-6
    save_image(tmp_path / "rgb.png", np.zeros((2, 2, 3), np.uint8))
    with pytest.raises(UserError, match="16-bit"):
        load_depth_png(tmp_path / "rgb.png")


def test_mask_roundtrip(tmp_path):
    m = torch.tensor([[True, False], [False, True]])
    save_mask(tmp_path / "m.png", m)
    with Image.open(tmp_path / "m.png") as im:
        assert im.mode == "L"
    assert torch.equal(load_mask(tmp_path / "m.png"), m)


def test_bad_files_raise_user_error(tmp_path):
    (tmp_path / "notes.png").write_text("this is not an image")
    with pytest.raises(UserError, match="notes.png"):
        load_image(tmp_path / "notes.png")
    save_image(tmp_path / "ok.png", np.full((64, 64, 3), 7, np.uint8))
    data = (tmp_path / "ok.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(data[: len(data) // 2])
    with pytest.raises(UserError, match="cut.png"):
        load_image(tmp_path / "cut.png")
    with pytest.raises(UserError, match="not found"):
        load_image(tmp_path / "missing.jpg")
    (tmp_path / "IMG_1.HEIC").write_bytes(b"\0" * 10)
    with pytest.raises(UserError, match="HEIC"):
        load_image(tmp_path / "IMG_1.HEIC")


def test_folder(tmp_path):
    with pytest.raises(UserError, match="not found"):
        list_images(tmp_path / "nope")
    with pytest.raises(UserError, match="no images"):
        list_images(tmp_path)
    for name, val in (("b.png", 10), ("a.jpg", 200), ("c.PNG", 30)):
        save_image(tmp_path / name, np.full((8, 12, 3), val, np.uint8))
    (tmp_path / "readme.txt").write_text("skipped")
    (tmp_path / ".DS_Store").write_bytes(b"\0")
    paths, imgs = load_image_folder(tmp_path)
    assert [p.name for p in paths] == ["a.jpg", "b.png", "c.PNG"]  # sorted by name
    assert imgs.shape == (3, 8, 12, 3)
    _, small = load_image_folder(tmp_path, max_side=6)
    assert small.shape == (3, 4, 6, 3)
    save_image(tmp_path / "d.png", np.zeros((9, 12, 3), np.uint8))
    with pytest.raises(UserError, match="d.png.*12x9.*same size"):
        load_image_folder(tmp_path)
