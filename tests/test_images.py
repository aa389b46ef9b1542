"""Loading arbitrary image files into CIFAR-like (3, 32, 32) uint8 tensors."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from hybridcap.datasets.images import BACKGROUND, expand_image_paths, load_image
from hybridcap.errors import DataError


def _save(image: Image.Image, path: Path, **options) -> Path:
    image.save(path, **options)
    return path


def _assert_uniform(tensor: torch.Tensor, rgb: tuple[int, int, int], tolerance: int = 0) -> None:
    assert tensor.shape == (3, 32, 32)
    assert tensor.dtype == torch.uint8
    for channel, value in enumerate(rgb):
        assert int(tensor[channel].min()) >= value - tolerance, (channel, int(tensor[channel].min()), value)
        assert int(tensor[channel].max()) <= value + tolerance, (channel, int(tensor[channel].max()), value)


@pytest.mark.parametrize(
    ("mode", "fill", "expected"),
    [
        ("RGB", (10, 200, 30), (10, 200, 30)),
        ("L", 77, (77, 77, 77)),
        ("1", 1, (255, 255, 255)),
        ("CMYK", (0, 255, 255, 0), (255, 0, 0)),
    ],
)
def test_load_image_opaque_modes(tmp_path, mode, fill, expected):
    extension = "jpg" if mode == "CMYK" else "png"
    path = _save(Image.new(mode, (20, 20), fill), tmp_path / f"image.{extension}", **({"quality": 100} if mode == "CMYK" else {}))
    _assert_uniform(load_image(path), expected, tolerance=2 if mode == "CMYK" else 0)


def test_load_image_rgba_composited_on_white(tmp_path):
    path = _save(Image.new("RGBA", (8, 8), (0, 0, 0, 64)), tmp_path / "rgba.png")
    # 64/255 of black over white.
    value = round(255 * (1 - 64 / 255))
    _assert_uniform(load_image(path), (value, value, value), tolerance=1)


def test_load_image_fully_transparent_is_background(tmp_path):
    path = _save(Image.new("RGBA", (8, 8), (200, 10, 10, 0)), tmp_path / "clear.png")
    _assert_uniform(load_image(path), BACKGROUND)


def test_load_image_la_mode(tmp_path):
    path = _save(Image.new("LA", (8, 8), (0, 128)), tmp_path / "la.png")
    _assert_uniform(load_image(path), (127, 127, 127), tolerance=1)


def test_load_image_palette_with_transparency(tmp_path):
    image = Image.new("P", (8, 8), 0)
    image.putpalette([255, 0, 0, 0, 0, 255] + [0] * (256 * 3 - 6))
    image.paste(1, (0, 0, 8, 4))  # top half blue, bottom half index 0, which is transparent
    path = _save(image, tmp_path / "palette.png", transparency=0)
    tensor = load_image(path)
    blue = torch.tensor([0, 0, 255], dtype=torch.uint8)[:, None, None]
    white = torch.tensor(BACKGROUND, dtype=torch.uint8)[:, None, None]
    assert bool((tensor[:, :12] == blue).all())
    assert bool((tensor[:, 20:] == white).all())


def test_load_image_opaque_palette(tmp_path):
    image = Image.new("P", (8, 8), 1)
    image.putpalette([0, 0, 0, 12, 34, 56] + [0] * (256 * 3 - 6))
    _assert_uniform(load_image(_save(image, tmp_path / "palette.gif")), (12, 34, 56))


def test_load_image_sixteen_bit_gray(tmp_path):
    array = np.full((16, 16), 257 * 200, dtype=np.uint16)
    path = _save(Image.fromarray(array), tmp_path / "gray16.png")
    with Image.open(path) as opened:
        assert opened.mode.startswith("I")
    _assert_uniform(load_image(path), (200, 200, 200))


def test_load_image_thirty_two_bit_int(tmp_path):
    path = _save(Image.fromarray(np.full((16, 16), 257 * 100, dtype=np.int32)), tmp_path / "int32.tiff")
    with Image.open(path) as opened:
        assert opened.mode == "I"
    _assert_uniform(load_image(path), (100, 100, 100))


def test_load_image_float_in_unit_range(tmp_path):
    path = _save(Image.fromarray(np.full((16, 16), 0.5, dtype=np.float32)), tmp_path / "float.tiff")
    with Image.open(path) as opened:
        assert opened.mode == "F"
    _assert_uniform(load_image(path), (128, 128, 128))


def test_load_image_float_stretched(tmp_path):
    array = np.zeros((32, 32), dtype=np.float32)
    array[:, 16:] = 1000.0
    array[:, :16] = -1000.0
    tensor = load_image(_save(Image.fromarray(array), tmp_path / "wide.tiff"))
    assert int(tensor[0, 16, 0]) == 0
    assert int(tensor[0, 16, 31]) == 255


@pytest.mark.parametrize("size", [(1, 1), (7, 300), (300, 7), (512, 512)])
def test_load_image_sizes(tmp_path, size):
    path = _save(Image.new("RGB", size, (40, 50, 60)), tmp_path / "sized.png")
    _assert_uniform(load_image(path), (40, 50, 60))


def test_load_image_centre_crop_keeps_aspect(tmp_path):
    # A 96x32 image: red, green, blue thirds. The centred square is the green third.
    array = np.zeros((32, 96, 3), dtype=np.uint8)
    array[:, :32, 0] = 255
    array[:, 32:64, 1] = 255
    array[:, 64:, 2] = 255
    tensor = load_image(_save(Image.fromarray(array), tmp_path / "wide.png"))
    _assert_uniform(tensor, (0, 255, 0))


def test_load_image_downscale_is_antialiased(tmp_path):
    # A one-pixel checkerboard must average to grey, not alias to stripes.
    array = (np.indices((256, 256)).sum(axis=0) % 2 * 255).astype(np.uint8)
    tensor = load_image(_save(Image.fromarray(array), tmp_path / "checker.png"))
    _assert_uniform(tensor, (128, 128, 128), tolerance=3)


def test_load_image_exif_orientation(tmp_path):
    # Stored as 64 wide x 32 high, red left, blue right. Orientation 6 means "rotate 90 degrees
    # clockwise to display", so the displayed image is 32 wide x 64 high with red on top.
    array = np.zeros((32, 64, 3), dtype=np.uint8)
    array[:, :32, 0] = 255
    array[:, 32:, 2] = 255
    image = Image.fromarray(array)
    exif = image.getexif()
    exif[0x0112] = 6
    path = _save(image, tmp_path / "rotated.png", exif=exif)

    tensor = load_image(path)
    # Centre square of the displayed image straddles the colour boundary: red above, blue below.
    assert tensor[:, 2, 16].tolist() == [255, 0, 0]
    assert tensor[:, 29, 16].tolist() == [0, 0, 255]


def test_load_image_animated_uses_first_frame(tmp_path):
    frames = [Image.new("RGB", (8, 8), (255, 0, 0)), Image.new("RGB", (8, 8), (0, 0, 255))]
    path = tmp_path / "animated.gif"
    frames[0].save(path, save_all=True, append_images=frames[1:])
    _assert_uniform(load_image(path), (255, 0, 0), tolerance=2)


def test_load_image_truncated_png(tmp_path):
    source = _save(Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)), tmp_path / "full.png")
    truncated = tmp_path / "truncated.png"
    truncated.write_bytes(source.read_bytes()[: source.stat().st_size // 2])
    with pytest.raises(DataError, match=r"truncated\.png: cannot decode"):
        load_image(truncated)


def test_load_image_truncated_jpeg(tmp_path):
    source = _save(Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)), tmp_path / "full.jpg")
    truncated = tmp_path / "truncated.jpg"
    truncated.write_bytes(source.read_bytes()[: source.stat().st_size // 2])
    with pytest.raises(DataError, match=r"truncated\.jpg: cannot decode"):
        load_image(truncated)


def test_load_image_text_file_renamed(tmp_path):
    path = tmp_path / "notes.png"
    path.write_text("this is not an image\n")
    with pytest.raises(DataError, match=r"notes\.png: not an image file"):
        load_image(path)


def test_load_image_empty_file(tmp_path):
    path = tmp_path / "empty.jpg"
    path.write_bytes(b"")
    with pytest.raises(DataError, match=r"empty\.jpg"):
        load_image(path)


def test_load_image_missing_file(tmp_path):
    with pytest.raises(DataError, match=r"missing\.png: file not found"):
        load_image(tmp_path / "missing.png")


def test_load_image_symlink_loop(tmp_path):
    (tmp_path / "first.png").symlink_to(tmp_path / "second.png")
    (tmp_path / "second.png").symlink_to(tmp_path / "first.png")
    with pytest.raises(DataError, match=r"first\.png: cannot read the file \(Too many levels of symbolic links\)"):
        load_image(tmp_path / "first.png")


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def test_load_image_decompression_bomb(tmp_path):
    # A valid PNG header claiming 100000 x 100000 pixels (10 gigapixels) in a file of a few bytes.
    header = struct.pack(">IIBBBBB", 100_000, 100_000, 8, 0, 0, 0, 0)
    data = zlib.compress(b"\x00" * 1000)
    path = tmp_path / "bomb.png"
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", header) + _png_chunk(b"IDAT", data) + _png_chunk(b"IEND", b""))
    with pytest.raises(DataError, match=r"bomb\.png.*decompression bomb"):
        load_image(path)


def test_load_image_over_pixel_limit(tmp_path):
    path = _save(Image.new("RGB", (100, 100)), tmp_path / "large.png")
    with pytest.raises(DataError, match=r"100x100 pixels is more than the 5000 allowed"):
        load_image(path, max_pixels=5000)


def test_expand_image_paths_folder(tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    for name in ("b.png", "a.jpg", "c.txt", ".hidden.png"):
        (folder / name).write_bytes(b"x")
    (folder / "nested").mkdir()
    single = tmp_path / "single.png"
    assert expand_image_paths([single, folder]) == [single, folder / "a.jpg", folder / "b.png"]


def test_expand_image_paths_folder_without_images(tmp_path):
    (tmp_path / "readme.txt").write_text("hello")
    with pytest.raises(DataError, match="contains no image files"):
        expand_image_paths([tmp_path])
