"""Image files to uint8 tensors: one file at a time, or a whole list into an in-memory cache.

Every file comes out as uint8 (3, H, W) RGB, or raises :class:`ImageDecodeError` naming the file and
why (callers skip and report it). What happens to unusual files:

* JPEGs decode with ``torchvision.io`` (libjpeg-turbo: about 2.5× faster than PIL on 32×32 JPEGs;
  grayscale and CMYK become RGB). Everything else, and JPEGs it rejects, goes through PIL: its PNG
  decoder segfaults on a corrupt PNG (any libpng error, e.g. one flipped byte failing a CRC), which
  would kill the process or DataLoader worker instead of raising, and its GIF decoder returns every
  frame of an animation.
* Images over :data:`MAX_IMAGE_PIXELS` are refused from their header, before either decoder allocates
  anything (``torchvision.io`` has no such limit; a 30000×30000 solid PNG is 2.7 GB decoded).
* Alpha is dropped (the stored colour is kept, as PIL's and torchvision's RGB modes do), palettes
  are expanded, 1-bit becomes 0/255, 16-bit values are scaled to 8 bits (``v >> 8``, not clipped),
  32-bit float images are refused (no standard range), and animations give their first frame.
* EXIF orientation is *not* applied: pixels are used as stored, as torchvision's ``ImageFolder``
  and the published ImageNet accuracies of pretrained weights do, in training and prediction alike.
* Empty, truncated, unidentifiable and unreadable files (a directory, a dangling symlink) raise.

torchvision 0.29 deprecates its decoders in favour of TorchCodec; the warning is silenced here and PIL
alone would still work.
"""

from __future__ import annotations

import contextlib
import io
import os
import struct
import warnings
from collections import Counter
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch.utils.data import DataLoader, Dataset
from torchvision.io import ImageReadMode, decode_image
from torchvision.transforms.v2 import functional as TF

from ..errors import UsageError
from ..weights.presets import MAX_IMAGE_PIXELS  # the one bound, for decoding and for resizing

# Below this many files a worker pool costs more to start than it saves.
_PARALLEL_MIN_FILES = 1024
_CHUNK = 256
MAJORITY = 0.9  # probe_size: the share of probed files that decides the common size

_JPEG_MAGIC = b"\xff\xd8\xff"
_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
# Start-of-frame markers (they carry the size); C4 (DHT), C8 (JPG) and CC (DAC) are not frames.
_JPEG_SOF = frozenset({0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF})


class ImageDecodeError(UsageError):
    """A file that no decoder could read as an image, or one refused (too big, no 8-bit scaling)."""


@contextlib.contextmanager
def _quiet_decoders() -> Iterator[None]:
    """Silence torchvision's decoder deprecation and PIL's bomb warning (the size check reports it)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        yield


def _jpeg_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) from a JPEG's frame header, walking the markers; None if there is none."""
    i = 2
    while i + 9 <= len(data):
        if data[i] != 0xFF:
            return None
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
        elif marker in _JPEG_SOF:
            height, width = struct.unpack_from(">HH", data, i + 5)
            return (width, height) if height else None  # height 0: set later by a DNL marker
        elif marker == 0x01 or 0xD0 <= marker <= 0xD9:  # markers without a length
            i += 2
        else:
            i += 2 + struct.unpack_from(">H", data, i + 2)[0]
    return None


def _header_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) of a JPEG or PNG read from its header alone; None for other formats."""
    if data.startswith(_JPEG_MAGIC):
        return _jpeg_size(data)
    if data.startswith(_PNG_MAGIC) and data[12:16] == b"IHDR" and len(data) >= 24:
        width, height = struct.unpack_from(">II", data, 16)
        return width, height
    return None


def _check_size(path: str | Path, size: tuple[int, int]) -> None:
    """``ImageDecodeError`` if a ``size`` = (width, height) image is over :data:`MAX_IMAGE_PIXELS`."""
    width, height = size
    if width * height > MAX_IMAGE_PIXELS:
        raise ImageDecodeError(
            f"{path} is {width}×{height} = {width * height:,} pixels, over MAX_IMAGE_PIXELS = "
            f"{MAX_IMAGE_PIXELS:,} (mobilenets.data.images: a guard against decompression bombs)"
        )


def _pil_pixels(image: Image.Image, path: str | Path) -> np.ndarray:
    """The current frame of ``image`` as uint8 (H, W, 3), converting its mode as the module says."""
    mode = image.mode
    if mode == "F":
        raise ImageDecodeError(
            f"{path} has 32-bit float pixels (PIL mode F), which have no standard 8-bit scaling; "
            "expected an 8- or 16-bit image"
        )
    if mode == "I" or mode.startswith("I;16"):  # 16-bit (mode I: 32-bit ints, taken as 16-bit)
        values = np.asarray(image).astype(np.int32, copy=False)
        gray = (np.clip(values, 0, 65535) >> 8).astype(np.uint8)
        return np.repeat(gray[:, :, None], 3, axis=2)
    if mode in ("P", "PA"):
        image = image.convert("RGBA")  # palette transparency: straight to RGB warns for byte tables
    return np.array(image.convert("RGB"), dtype=np.uint8)


def _decode_pil(data: bytes, path: str | Path) -> torch.Tensor:
    try:
        with Image.open(io.BytesIO(data)) as image:
            _check_size(path, image.size)
            pixels = _pil_pixels(image, path)
    except ImageDecodeError:
        raise
    except Image.DecompressionBombError as err:  # beyond twice PIL's own limit: refused in open()
        raise ImageDecodeError(
            f"{path} is over MAX_IMAGE_PIXELS = {MAX_IMAGE_PIXELS:,} (mobilenets.data.images: "
            f"a guard against decompression bombs): {err}"
        ) from err
    except UnidentifiedImageError as err:
        raise ImageDecodeError(
            f"{path} is not an image file PIL or torchvision.io can read (it starts with {data[:12]!r})"
        ) from err
    except Exception as err:  # PIL raises many types (OSError, SyntaxError, struct.error, ...)
        raise ImageDecodeError(f"{path} is not a readable image ({type(err).__name__}: {err})") from err
    return torch.from_numpy(pixels).permute(2, 0, 1).contiguous()


def decode_image_file(path: str | Path) -> torch.Tensor:
    """The image at ``path`` as a uint8 (3, H, W) RGB tensor; ``ImageDecodeError`` if unreadable."""
    with _quiet_decoders():
        return _decode(path)


def _decode(path: str | Path) -> torch.Tensor:
    """:func:`decode_image_file` minus the warning filters, which callers set once per many files."""
    try:
        with open(path, "rb") as file:
            data = file.read()
    except OSError as err:
        raise ImageDecodeError(f"cannot read {path}: {err.strerror or err}") from err
    if not data:
        raise ImageDecodeError(f"{path} is empty (0 bytes); expected an image file")
    size = _header_size(data)
    if size is not None:
        _check_size(path, size)
    image: torch.Tensor | None = None
    if size is not None and data.startswith(_JPEG_MAGIC):  # only a JPEG whose size was checked
        try:
            image = decode_image(torch.frombuffer(bytearray(data), dtype=torch.uint8), ImageReadMode.RGB)
        except (RuntimeError, ValueError):
            image = None  # corrupt, or a JPEG flavour libjpeg-turbo lacks: let PIL decide
    if image is None:
        image = _decode_pil(data, path)
    if image.dtype != torch.uint8:  # not expected from either path; cheap insurance for the cache
        image = TF.to_dtype(image, torch.uint8, scale=True)
    if image.ndim != 3 or image.shape[0] != 3 or image.numel() == 0:
        raise ImageDecodeError(f"{path} decoded to shape {tuple(image.shape)}; expected (3, H, W), H, W ≥ 1")
    return image


def fit_square(image: torch.Tensor, size: int, path: str = "an image") -> torch.Tensor:
    """``image`` (3, H, W) as (3, size, size): shorter side resized to ``size``, then centre-cropped.

    ``ImageDecodeError`` (the file is skipped like an unreadable one) where the resize would make more
    than :data:`MAX_IMAGE_PIXELS`: a thin strip's longer side grows with the shorter one (a 200000×1
    strip at 32 would take 2.4 GB), as predict's preprocessing refuses it too.
    """
    if image.shape[-2:] == (size, size):
        return image
    height, width = image.shape[-2:]
    pixels = size * round(max(height, width) * size / max(min(height, width), 1))
    if pixels > MAX_IMAGE_PIXELS:
        raise ImageDecodeError(
            f"{path} is {width}×{height}: resized to {size} on its shorter side it would have {pixels:,} "
            f"pixels, over MAX_IMAGE_PIXELS = {MAX_IMAGE_PIXELS:,}"
        )
    resized = TF.resize(image, [size], antialias=True)
    return TF.center_crop(resized, [size, size])


def probe_size(paths: Sequence[str], fallback: int, probes: int = 16) -> int:
    """The square side most of ``paths`` share (≤ ``fallback``), judged from a few headers, else ``fallback``.

    Reads only the headers of up to ``probes`` evenly spaced files, so it is cheap on any folder. "Most"
    is all but one in ten of the readable probes: one odd photo among a folder of 32×32 images does not
    change how every other image is prepared (each would be zoomed in on), and the odd ones are fitted
    to the common size. Which files happen to be probed then matters little.
    """
    if not paths:
        return fallback
    step = max(1, len(paths) // probes)
    sizes: Counter[tuple[int, int]] = Counter()
    with _quiet_decoders():
        for path in paths[::step][:probes]:
            try:
                with Image.open(path) as image:
                    sizes[image.size] += 1
            except Exception:  # unreadable or too big: the cache builder reports it
                continue
    if not sizes:
        return fallback
    (width, height), count = sizes.most_common(1)[0]
    if count < MAJORITY * sum(sizes.values()) or width != height:
        return fallback
    return min(width, fallback)


class _Chunks(Dataset[tuple[torch.Tensor, torch.Tensor, list[str]]]):
    """Chunk ``k`` of ``paths`` decoded to (images, ok-mask, errors); runs inside DataLoader workers."""

    def __init__(self, paths: Sequence[str], size: int) -> None:
        self.paths = paths
        self.size = size

    def __len__(self) -> int:
        return (len(self.paths) + _CHUNK - 1) // _CHUNK

    def __getitem__(self, k: int) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
        chunk = self.paths[k * _CHUNK : (k + 1) * _CHUNK]
        blank = torch.zeros((3, self.size, self.size), dtype=torch.uint8)
        images: list[torch.Tensor] = []  # stacked at the end: cheaper than writing rows one by one
        ok: list[bool] = []
        errors: list[str] = []
        with _quiet_decoders():
            for path in chunk:
                try:
                    images.append(fit_square(_decode(path), self.size, path))
                    ok.append(True)
                except ImageDecodeError as err:
                    images.append(blank)
                    ok.append(False)
                    errors.append(str(err))
        return torch.stack(images), torch.tensor(ok, dtype=torch.bool), errors


def warn_skipped(paths: Sequence[str], reasons: Sequence[str], limit: int = 20) -> None:
    """One warning per skipped file (the first ``limit``), then one summary warning."""
    for reason in reasons[:limit]:
        warnings.warn(f"skipping unreadable image: {reason}", stacklevel=3)
    if len(paths) > limit:
        warnings.warn(f"skipped {len(paths) - limit} more unreadable images", stacklevel=3)


def decode_all(
    paths: Sequence[str], size: int, workers: int | None = None
) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """Decode ``paths`` into a uint8 (N_ok, 3, size, size) tensor, with the kept indices and skipped paths.

    Images not already ``size``×``size`` go through :func:`fit_square`. Unreadable files are left out
    and warned about. ``workers`` defaults to 2 processes (capped by the CPUs) for big lists.
    """
    if workers is None:
        workers = min(2, os.cpu_count() or 1) if len(paths) >= _PARALLEL_MIN_FILES else 0
    images = torch.empty((len(paths), 3, size, size), dtype=torch.uint8)
    ok = torch.empty(len(paths), dtype=torch.bool)
    reasons: list[str] = []
    loader = DataLoader(_Chunks(paths, size), batch_size=None, num_workers=workers)
    for k, (chunk, chunk_ok, errors) in enumerate(loader):
        images[k * _CHUNK : k * _CHUNK + len(chunk)] = chunk
        ok[k * _CHUNK : k * _CHUNK + len(chunk)] = chunk_ok
        reasons.extend(errors)
    kept = ok.nonzero(as_tuple=True)[0]
    skipped = [paths[i] for i in (~ok).nonzero(as_tuple=True)[0].tolist()]
    if skipped:
        warn_skipped(skipped, reasons)
        images = images[kept]
    return images, kept, skipped
