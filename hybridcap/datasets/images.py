"""Image files of any format, size, mode and bit depth turned into CIFAR-like 32x32 RGB images.

``load_image`` is what ``hybridcap caption`` uses, so a photo is seen the way the training images
were: uint8 RGB, 32x32. The steps, in order:

1. Reject images with more than ``MAX_IMAGE_PIXELS`` pixels before decoding them (decompression
   bombs: a small file that expands to gigabytes).
2. Rotate or flip the image as its EXIF orientation tag specifies, as photo viewers do.
3. Bring every mode to 8-bit RGB: 1-bit, grayscale and palette images are expanded without
   changing any colour; 16-bit integer images are divided by 257 so 65535 becomes 255; 32-bit
   integer and float images are rescaled as described in ``_to_8bit_gray``; CMYK and YCbCr use
   Pillow's conversion (embedded ICC profiles are ignored).
4. Composite any transparency (alpha channel, or a transparent palette or grey entry) onto a white
   ``BACKGROUND``, the colour most image viewers put behind transparent pictures.
5. Crop the largest centred square, then resize it to 32x32 with Pillow's bicubic filter, which
   antialiases when shrinking. Cropping keeps the aspect ratio: CIFAR-100 images are squares with
   the object in the middle, so squashing a wide photo would distort the object more than losing
   its sides does.

Any file Pillow cannot open or decode raises DataError with the file name.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from hybridcap.errors import DataError

IMAGE_SIZE = 32
BACKGROUND = (255, 255, 255)
# Pillow's own default limit (about 89 megapixels, a 9459x9459 image), but enforced as an error
# where Pillow only warns until twice that size.
MAX_IMAGE_PIXELS = 89_478_485

_RESAMPLING = Image.Resampling.BICUBIC
_SIXTEEN_BIT_MODES = {"I;16", "I;16L", "I;16B", "I;16N"}


def image_file_extensions() -> set[str]:
    """Return the lower-case file extensions, with the dot, of every format Pillow can open here."""
    Image.init()
    return {extension.lower() for extension, format_name in Image.registered_extensions().items() if format_name in Image.OPEN}


def expand_image_paths(paths: Iterable[str | os.PathLike[str]]) -> list[Path]:
    """Replace each directory in ``paths`` by the image files directly inside it, sorted by name.

    Files inside a directory are chosen by extension (any format Pillow opens) and hidden files
    are skipped; subdirectories are not searched. Paths that are not directories are returned as
    given, in order, even when they do not exist, so ``load_image`` can report them.

    Raises:
        DataError: a directory cannot be listed or contains no image files.
    """
    extensions = None
    expanded: list[Path] = []
    for path in map(Path, paths):
        if not path.is_dir():
            expanded.append(path)
            continue
        if extensions is None:
            extensions = image_file_extensions()
        try:
            children = sorted(path.iterdir())
        except OSError as error:
            raise DataError(f"cannot list folder {path}: {error.strerror or error}") from error
        images = [child for child in children if child.is_file() and not child.name.startswith(".") and child.suffix.lower() in extensions]
        if not images:
            raise DataError(f"folder {path} contains no image files")
        expanded.extend(images)
    return expanded


def load_image(path: str | os.PathLike[str], max_pixels: int = MAX_IMAGE_PIXELS) -> torch.Tensor:
    """Read an image file and return it as a uint8 tensor ``(3, 32, 32)``, preprocessed as described in the module docstring.

    Args:
        path: any image file that Pillow can read; for animated files the first frame is used.
        max_pixels: larger images are rejected without decoding them.

    Raises:
        DataError: the file is missing, unreadable, not an image, truncated or corrupt, or too large.
    """
    path = Path(path)
    try:
        with warnings.catch_warnings():
            # Pillow only warns between MAX_IMAGE_PIXELS and twice that; make every bomb an error.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as image:
                width, height = image.size
                if width * height > max_pixels:
                    raise DataError(f"{path}: {width}x{height} pixels is more than the {max_pixels} allowed; this may be a decompression bomb, so it was not decoded")
                image.load()
                oriented = ImageOps.exif_transpose(image)
    except DataError:
        raise
    except FileNotFoundError as error:
        raise DataError(f"{path}: file not found") from error
    except IsADirectoryError as error:
        raise DataError(f"{path}: is a folder, not an image file") from error
    except PermissionError as error:
        raise DataError(f"{path}: permission denied") from error
    except UnidentifiedImageError as error:
        raise DataError(f"{path}: not an image file that Pillow can read") from error
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
        raise DataError(f"{path}: rejected as a possible decompression bomb ({error})") from error
    except OSError as error:
        if error.errno is not None:
            # An error of the file system, such as a symbolic link loop, not of the image data.
            raise DataError(f"{path}: cannot read the file ({error.strerror or error})") from error
        raise DataError(f"{path}: cannot decode the image, the file is truncated or corrupt ({error})") from error
    except (SyntaxError, ValueError, EOFError, MemoryError) as error:
        # Pillow reports truncated and corrupt data as SyntaxError or ValueError, or as an OSError without errno.
        raise DataError(f"{path}: cannot decode the image, the file is truncated or corrupt ({error})") from error

    try:
        rgb = _to_rgb(oriented)
    except ValueError as error:
        raise DataError(f"{path}: cannot convert image mode {oriented.mode} to RGB ({error})") from error

    square = ImageOps.fit(rgb, (IMAGE_SIZE, IMAGE_SIZE), method=_RESAMPLING, centering=(0.5, 0.5))
    pixels = np.asarray(square, dtype=np.uint8)  # (32, 32, 3)
    return torch.from_numpy(pixels.copy()).permute(2, 0, 1).contiguous()  # (3, 32, 32)


def _to_rgb(image: Image.Image) -> Image.Image:
    """Convert any Pillow mode to 8-bit RGB, compositing transparency onto ``BACKGROUND``.

    Raises:
        ValueError: Pillow has no conversion from this mode to RGB.
    """
    mode = image.mode
    if mode in _SIXTEEN_BIT_MODES or mode in ("I", "F"):
        return _to_8bit_gray(image).convert("RGB")
    if mode == "1":
        return image.convert("L").convert("RGB")

    has_transparency = mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in image.info
    if has_transparency:
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (*BACKGROUND, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    if mode == "RGB":
        return image
    return image.convert("RGB")


def _to_8bit_gray(image: Image.Image) -> Image.Image:
    """Rescale a single-channel high bit depth image to 8-bit grayscale.

    16-bit modes and 32-bit integer images whose values fit in 0..65535 (Pillow opens some
    16-bit PNG and TIFF files as mode ``I``) are divided by 257. Float images with values in
    0..1 are multiplied by 255. Anything else is stretched from its minimum to its maximum,
    because its range has no standard meaning; a constant image is clipped to 0..255 instead.
    """
    values = np.asarray(image, dtype=np.float64)
    values = np.nan_to_num(values, nan=0.0, posinf=0.0, neginf=0.0)
    low, high = (float(values.min()), float(values.max())) if values.size else (0.0, 0.0)
    if image.mode in _SIXTEEN_BIT_MODES or (image.mode == "I" and low >= 0 and high <= 65535):
        scaled = values / 257.0
    elif image.mode == "F" and low >= 0 and high <= 1:
        scaled = values * 255.0
    elif high > low:
        scaled = (values - low) * (255.0 / (high - low))
    else:
        scaled = values
    gray = np.clip(np.rint(scaled), 0, 255).astype(np.uint8)
    return Image.fromarray(gray)  # mode "L"
