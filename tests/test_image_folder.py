"""load_image_folder: your own images in, the book's (N, C, H, W) in [−1, 1] out; bad folders refused clearly."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from glide_edu.data import load_image_folder


def _save(path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


def test_flat_folder_is_cropped_resized_and_scaled(tmp_path) -> None:
    wide = np.zeros((20, 40, 3), np.uint8)
    wide[:, 10:30] = 255  # the centre square is white, the side bands black
    _save(tmp_path / "a.png", wide)
    _save(tmp_path / "b.jpg", np.full((8, 8, 3), 0, np.uint8))
    (tmp_path / "notes.txt").write_text("not an image")
    data = load_image_folder(tmp_path, size=16)
    assert data.images.shape == (2, 3, 16, 16) and data.images.dtype == torch.float32
    assert data.labels is None and data.classes == []
    torch.testing.assert_close(data.images[0], torch.ones(3, 16, 16))  # the centre crop, not a squashed image
    assert data.images[1].max() <= -0.99
    gray = load_image_folder(tmp_path, size=4, channels=1)
    assert gray.images.shape == (2, 1, 4, 4) and gray.images.min() >= -1 and gray.images.max() <= 1


def test_one_subfolder_per_class_gives_labels(tmp_path) -> None:
    for cls, value in (("cats", 10), ("dogs", 200)):
        for i in range(2):
            _save(tmp_path / cls / f"{i}.png", np.full((6, 6), value, np.uint8))
    data = load_image_folder(tmp_path, size=6, channels=1)
    assert data.classes == ["cats", "dogs"]
    assert data.labels.tolist() == [0, 0, 1, 1]
    assert (data.images[data.labels == 1].mean() > data.images[data.labels == 0].mean()).item()


def test_missing_empty_and_unreadable_folders_are_refused(tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match="no folder at"):
        load_image_folder(tmp_path / "nowhere", size=8)
    with pytest.raises(ValueError, match="holds no image files"):
        load_image_folder(tmp_path, size=8)
    (tmp_path / "broken.png").write_bytes(b"\x89PNG not really")
    with pytest.raises(ValueError, match=r"cannot read image .*broken\.png.*fix or remove"):
        load_image_folder(tmp_path, size=8)
    _save(tmp_path / "ok.png", np.zeros((4, 4), np.uint8))
    with pytest.raises(ValueError, match="channels must be 1"):
        load_image_folder(tmp_path, size=8, channels=4)
    with pytest.raises(ValueError, match="size must be a positive integer"):
        load_image_folder(tmp_path, size=0)


def test_a_folder_of_the_wrong_size_is_refused_by_the_trainer(tmp_path) -> None:
    from glide_edu.nn.unet import UNetConfig, UNetModel
    from glide_edu.respace import create_diffusion
    from glide_edu.train import TrainConfig, Trainer

    _save(tmp_path / "x.png", np.zeros((8, 8, 3), np.uint8))
    data = load_image_folder(tmp_path, size=8)  # RGB 8×8 for a grayscale 16×16 model
    model = UNetModel(UNetConfig(image_size=16, in_channels=1, model_channels=32, channel_mult=(1,),
                                 num_res_blocks=1, attention_resolutions=()))
    with pytest.raises(ValueError, match=r"images are \(3, 8, 8\) but the model expects \(1, 16, 16\)"):
        Trainer(model, create_diffusion(10, "cosine", model_var_type="fixed_small"), data.images,
                TrainConfig(progress=False))


def test_sixteen_bit_images_are_scaled_not_saturated(tmp_path) -> None:
    levels = np.array([[0, 0x8080], [0xFFFF, 0x4040]], np.uint16)  # → 8-bit 0, 128, 255, 64
    Image.fromarray(levels).save(tmp_path / "deep.png")
    assert Image.open(tmp_path / "deep.png").mode == "I;16"
    data = load_image_folder(tmp_path, size=2, channels=1)
    expected = torch.tensor([[0, 128], [255, 64]], dtype=torch.float32) / 127.5 - 1
    torch.testing.assert_close(data.images[0, 0], expected)
    rgb = load_image_folder(tmp_path, size=2)
    torch.testing.assert_close(rgb.images[0], expected.expand(3, 2, 2))


def test_exif_orientation_is_applied(tmp_path) -> None:
    from glide_edu.data import read_image

    stored = np.zeros((16, 32, 3), np.uint8)
    stored[:, :16] = 255  # stored 32 wide × 16 high, left half white
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90° clockwise to display": the left half becomes the top half
    Image.fromarray(stored).save(tmp_path / "photo.jpg", exif=exif, quality=95)
    upright = np.asarray(read_image(tmp_path / "photo.jpg"), dtype=np.float32)
    assert upright.shape == (32, 16, 3)
    assert upright[:12].mean() > 240 and upright[20:].mean() < 15
    data = load_image_folder(tmp_path, size=16)  # centre crop of the upright 16×32 picture: top and bottom cut
    top, bottom = data.images[0, :, :4].mean(), data.images[0, :, -4:].mean()
    assert top > 0.9 and bottom < -0.9


def test_decompression_bombs_are_refused(tmp_path, monkeypatch) -> None:
    from glide_edu.data import read_image

    Image.new("L", (40, 40), 0).save(tmp_path / "big.png")  # 1,600 pixels
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # Pillow warns above 1,000 and refuses above 2,000
    with pytest.raises(ValueError, match=r"big\.png is too large to open safely .*shrink it below 1,000 pixels"):
        read_image(tmp_path / "big.png")
    with pytest.raises(ValueError, match="too large to open safely") as err:
        load_image_folder(tmp_path, size=8)
    assert "\n" not in str(err.value)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 500)  # now in Pillow's own error range
    with pytest.raises(ValueError, match="too large to open safely"):
        load_image_folder(tmp_path, size=8)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 2000)
    assert load_image_folder(tmp_path, size=8).images.shape == (1, 3, 8, 8)
