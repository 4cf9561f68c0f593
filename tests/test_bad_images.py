"""Bad and unusual image files: converted to RGB uint8, or skipped with a reason naming the file; no crash.

One folder holds every kind (built here with PIL/numpy, small on disk and cheap to make): unusual but
valid images must come out as (3, H, W) uint8 with the right colours, broken or refused ones must be
skipped with a warning naming the file and why. Each way the code reads files is checked: the cache
builder (``decode_all``, in-process and in workers), the lazy ``FolderImages`` loader (in-process and in
workers), ``load_splits`` on the class folders, and ``mobilenets train`` / ``eval`` / ``predict``.
"""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import struct
import subprocess
import sys
import warnings
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from mobilenets.cli import main as run_main
from mobilenets.data import images as images_module
from mobilenets.data.datasets import CachedImages, FolderImages
from mobilenets.data.images import (
    MAX_IMAGE_PIXELS,
    ImageDecodeError,
    decode_all,
    decode_image_file,
    fit_square,
)
from mobilenets.data.splits import build_loader, load_splits
from mobilenets.weights import read_weights
from mobilenets.weights.files import write_safetensors

from .conftest import run_cli

SIZE = 32  # every convertible test image is SIZE×SIZE, so the cache keeps its pixels unresized
SKIP_PREFIX = "skipping unreadable image: "
RED, GREEN, BLUE = (255, 0, 0), (0, 255, 0), (0, 0, 255)
# 16-bit samples and their 8-bit values (v >> 8): clipping would give 255 for all but 0 and 255,
# wrapping (v % 256) would give 255 → 255 and 1000 → 232.
GRAY16 = (0, 255, 1000, 25700, 32896, 40000, 65280, 65535)
GRAY16_AS_8 = (0, 0, 3, 100, 128, 156, 255, 255)


def _solid(colour: tuple[int, ...]) -> torch.Tensor:
    return torch.tensor(colour, dtype=torch.uint8).view(3, 1, 1).expand(3, SIZE, SIZE).clone()


def _halves(left: tuple[int, ...], right: tuple[int, ...]) -> torch.Tensor:
    image = _solid(left)
    image[:, :, SIZE // 2 :] = _solid(right)[:, :, SIZE // 2 :]
    return image


def _encoded(image: Image.Image, fmt: str, **options: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def _png_chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def _black_1bit_png(side: int) -> bytes:
    """A valid 1-bit ``side``×``side`` PNG of black rows: a few kB on disk, ``side``² pixels decoded."""
    row = b"\x00" * (1 + (side + 7) // 8)  # filter byte, then 8 pixels a byte
    compressor = zlib.compressobj(9)
    block = row * 500
    data = b"".join(compressor.compress(block) for _ in range(side // 500)) + compressor.flush()
    header = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", header)
        + _png_chunk(b"IDAT", data)
        + _png_chunk(b"IEND", b"")
    )


def _jpeg_claiming(width: int, height: int) -> bytes:
    """A small JPEG whose frame header is patched to claim ``width``×``height``."""
    data = bytearray(_encoded(Image.new("RGB", (SIZE, SIZE), RED), "JPEG"))
    sof = data.index(b"\xff\xc0")
    data[sof + 5 : sof + 9] = struct.pack(">HH", height, width)
    return bytes(data)


def _gif_claiming(width: int, height: int) -> bytes:
    """A 1×1 GIF whose logical screen (PIL's image size) is patched to ``width``×``height``."""
    data = bytearray(_encoded(Image.new("P", (1, 1), 0), "GIF"))
    data[6:10] = struct.pack("<HH", width, height)
    return bytes(data)


def _noise(seed: int, side: int = SIZE) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (side, side, 3), dtype=np.uint8))


def _with_flipped_idat_byte(png: bytes) -> bytes:
    """``png`` with one byte of its compressed pixel data flipped: the chunk CRC no longer matches."""
    data = bytearray(png)
    data[png.index(b"IDAT") + 10] ^= 0x5A
    return bytes(data)


def _short_idat_png() -> bytes:
    """A 40×40 RGB PNG whose (valid, CRC-checked) pixel data ends after a few rows."""
    header = struct.pack(">IIBBBBB", 40, 40, 8, 2, 0, 0, 0)
    rows = zlib.compress(b"\x00" * 100)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", header)
        + _png_chunk(b"IDAT", rows)
        + _png_chunk(b"IEND", b"")
    )


@dataclass(frozen=True)
class Kind:
    """One file of the folder: what to write, and either the pixels expected or the skip reason."""

    name: str
    write: Callable[[Path], object]
    expected: torch.Tensor | None = None  # converted: (3, SIZE, SIZE) uint8
    tolerance: float = 0.0  # mean absolute error allowed (lossy JPEG)
    reason: str | None = None  # skipped: regex the message must match (it also names the file)


def _gray16(path: Path) -> None:
    values = np.resize(np.array(GRAY16, dtype=np.uint16), (SIZE, SIZE))
    image = Image.fromarray(values)
    assert image.mode == "I;16"
    image.save(path)


def _gray16_expected() -> torch.Tensor:
    return torch.from_numpy(np.resize(np.array(GRAY16_AS_8, dtype=np.uint8), (SIZE, SIZE))).expand(3, -1, -1)


def _int32(path: Path) -> None:
    values = np.resize(np.array([-5, 0, 1000, 40000, 65535, 70000], dtype=np.int32), (SIZE, SIZE))
    Image.fromarray(values, mode="I").save(path)  # 32-bit TIFF; read as 16-bit, clipped to 0..65535


def _int32_expected() -> torch.Tensor:
    return torch.from_numpy(
        np.resize(np.array([0, 0, 3, 156, 255, 255], dtype=np.uint8), (SIZE, SIZE))
    ).expand(3, -1, -1)


def _checkerboard() -> np.ndarray:
    return (np.indices((SIZE, SIZE)).sum(axis=0) % 2).astype(bool)


def _palette_image(colour: tuple[int, int, int]) -> Image.Image:
    image = Image.new("P", (SIZE, SIZE), 1)
    image.putpalette([0, 0, 0, *colour])
    return image


def _palette_with_alpha_table(path: Path) -> None:
    image = Image.new("P", (SIZE, SIZE), 0)
    image.putpalette([*RED, *BLUE])
    image.paste(1, (SIZE // 2, 0, SIZE, SIZE))
    image.save(path, transparency=b"\x00\x80")  # an alpha table: PIL warns converting it to RGB


def _animated_gif(path: Path) -> None:
    frames = [Image.new("RGB", (SIZE, SIZE), colour) for colour in (RED, GREEN, BLUE)]
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=100, loop=0)


def _exif_rotated(path: Path) -> None:
    """Stored left red / right blue, tagged "rotate 90° clockwise to view" (orientation 6)."""
    exif = Image.Exif()
    exif[0x0112] = 6
    image = Image.fromarray(_halves(RED, BLUE).permute(1, 2, 0).numpy())
    image.save(path, exif=exif.tobytes(), quality=95)


CONVERTED = [
    Kind("gray.png", lambda p: Image.new("L", (SIZE, SIZE), 77).save(p), _solid((77, 77, 77))),
    Kind("gray.jpg", lambda p: Image.new("L", (SIZE, SIZE), 77).save(p), _solid((77, 77, 77)), 2),
    Kind(
        "cmyk.jpg",
        lambda p: Image.new("CMYK", (SIZE, SIZE), (0, 255, 255, 0)).save(p, quality=95),
        _solid(RED),
        3,
    ),
    Kind("rgba.png", lambda p: Image.new("RGBA", (SIZE, SIZE), (*RED, 128)).save(p), _solid(RED)),
    Kind("gray_alpha.png", lambda p: Image.new("LA", (SIZE, SIZE), (90, 0)).save(p), _solid((90, 90, 90))),
    Kind(
        "palette_transparent.png",
        lambda p: _palette_image(GREEN).save(p, transparency=0),
        _solid(GREEN),
    ),
    Kind("palette_alpha_table.png", _palette_with_alpha_table, _halves(RED, BLUE)),
    Kind("gray16.png", _gray16, _gray16_expected()),
    Kind("int32.tif", _int32, _int32_expected()),
    Kind(
        "bilevel.png",
        lambda p: Image.fromarray(_checkerboard()).convert("1").save(p),
        torch.from_numpy(_checkerboard().astype(np.uint8) * 255).expand(3, -1, -1),
    ),
    Kind("animated.gif", _animated_gif, _solid(RED)),
    Kind("exif_rotated.jpg", _exif_rotated, _halves(RED, BLUE), 12),
    Kind("png_named.jpg", lambda p: Image.new("RGB", (SIZE, SIZE), BLUE).save(p, "PNG"), _solid(BLUE)),
]

BOMB = "MAX_IMAGE_PIXELS = 89,478,485"
SKIPPED = [
    Kind(
        "truncated.jpg",
        lambda p: p.write_bytes((b := _encoded(_noise(1, 64), "JPEG"))[: len(b) // 2]),
        reason="truncated",
    ),
    Kind(
        "truncated.png",
        lambda p: p.write_bytes((b := _encoded(_noise(2, 64), "PNG"))[: len(b) // 2]),
        reason="truncated",
    ),
    Kind("empty.jpg", lambda p: p.write_bytes(b""), reason=r"is empty \(0 bytes\)"),
    Kind(
        "text.jpg",
        lambda p: p.write_text("hello, I am not a photo\n"),
        reason="is not an image file .*b'hello",
    ),
    Kind("text.png", lambda p: p.write_text("hello, I am not a photo\n"), reason="is not an image file"),
    Kind(
        "bitflip.png",
        lambda p: p.write_bytes(_with_flipped_idat_byte(_encoded(_noise(3), "PNG"))),
        reason="is not a readable image",
    ),
    Kind("short_data.png", lambda p: p.write_bytes(_short_idat_png()), reason="truncated"),
    Kind(
        "bomb.png",
        lambda p: p.write_bytes(_black_1bit_png(10_000)),
        reason=rf"10000×10000 = 100,000,000 pixels, over {BOMB}",
    ),
    Kind(
        "bomb.jpg",
        lambda p: p.write_bytes(_jpeg_claiming(30_000, 30_000)),
        reason=rf"30000×30000 = 900,000,000 pixels, over {BOMB}",
    ),
    Kind(
        "bomb.gif",
        lambda p: p.write_bytes(_gif_claiming(12_000, 12_000)),
        reason=rf"12000×12000 = 144,000,000 pixels, over {BOMB}",
    ),
    Kind(
        "float.tif",
        lambda p: Image.fromarray(np.full((SIZE, SIZE), 0.5, dtype=np.float32)).save(p),
        reason="32-bit float pixels",
    ),
    Kind(
        "dangling.jpg",
        lambda p: p.symlink_to(p.with_name("nowhere.jpg")),
        reason="cannot read .*No such file",
    ),
]
# Class-folder scans keep torchvision's ImageFolder extensions, which leave out .gif (so a folder
# splits exactly as ImageFolder's would); GIFs are decoded when named directly (predict, list files).
# The folder named like an image is no sample either: the scan lists files only.
SCANNED_SKIPPED = [kind for kind in SKIPPED if not kind.name.endswith(".gif")]
FOLDER_KIND = Kind("folder.jpg", lambda p: p.mkdir(), reason="cannot read .*Is a directory")
GOOD_PER_CLASS = 6


@dataclass(frozen=True)
class BadFolder:
    """A two-class image folder holding every kind, and where each kind's file is."""

    root: Path
    paths: dict[str, Path]  # kind name -> file
    good: list[Path]  # plain RGB images


def _build(root: Path) -> BadFolder:
    classes = (root / "a", root / "b")
    for folder in classes:
        folder.mkdir(parents=True)
    good: list[Path] = []
    for k in range(2 * GOOD_PER_CLASS):
        path = classes[k % 2] / f"good{k:02d}.{('png', 'jpg')[k % 2]}"
        _noise(100 + k).save(path)
        good.append(path)
    paths: dict[str, Path] = {}
    for k, kind in enumerate([*CONVERTED, *SKIPPED, FOLDER_KIND]):
        path = classes[k % 2] / kind.name
        kind.write(path)
        paths[kind.name] = path
    return BadFolder(root, paths, good)


@pytest.fixture(scope="module")
def bad_folder(tmp_path_factory: pytest.TempPathFactory) -> BadFolder:
    return _build(tmp_path_factory.mktemp("bad_images"))


def _check_converted(name: str, image: torch.Tensor) -> None:
    kind = next(kind for kind in CONVERTED if kind.name == name)
    assert kind.expected is not None
    assert image.dtype == torch.uint8 and tuple(image.shape) == (3, SIZE, SIZE), name
    error = (image.float() - kind.expected.float()).abs().mean().item()
    assert error <= kind.tolerance, f"{name}: mean abs error {error:.1f} > {kind.tolerance}"


def _skip_warnings(records: list[warnings.WarningMessage]) -> dict[str, str]:
    """File name -> reason of each skip warning; fails on any other warning (PIL's, torchvision's)."""
    reasons: dict[str, str] = {}
    for record in records:
        text = str(record.message)
        assert text.startswith(SKIP_PREFIX), f"unexpected warning: {text}"
        reason = text[len(SKIP_PREFIX) :]
        name = next(n for n in [k.name for k in [*SKIPPED, FOLDER_KIND]] if f"{os.sep}{n}" in reason)
        reasons[name] = reason
    return reasons


def _check_skip_reasons(folder: BadFolder, reasons: dict[str, str], expected: list[Kind]) -> None:
    assert sorted(reasons) == sorted(kind.name for kind in expected)
    for kind in expected:
        assert kind.reason is not None
        path = str(folder.paths[kind.name])
        assert path in reasons[kind.name] and re.search(kind.reason, reasons[kind.name]), reasons[kind.name]


@pytest.fixture
def recorded() -> Iterator[list[warnings.WarningMessage]]:
    """Every warning raised in this process during the test (skip reports from workers included)."""
    with warnings.catch_warnings(record=True) as records:
        warnings.simplefilter("always")
        yield records


# --- one file at a time ----------------------------------------------------------------------------


def test_corrupt_pngs_raise_instead_of_killing_the_process(bad_folder: BadFolder) -> None:
    """torchvision.io's PNG decoder segfaults on these (a libpng error); decode them in a forked child."""
    if not hasattr(os, "fork"):
        pytest.skip("needs os.fork")
    pid = os.fork()
    if pid == 0:  # child: exit 0 if every file raised ImageDecodeError, 1 otherwise; a crash is a signal
        code = 0
        for name in ("bitflip.png", "short_data.png", "truncated.png"):
            try:
                decode_image_file(bad_folder.paths[name])
                code = 1
            except ImageDecodeError:
                pass
            except BaseException:
                code = 1
        os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert not os.WIFSIGNALED(status), (
        f"decoding a corrupt PNG killed the process (signal {os.WTERMSIG(status)})"
    )
    assert os.WEXITSTATUS(status) == 0, "a corrupt PNG decoded without ImageDecodeError"


@pytest.mark.parametrize("kind", CONVERTED, ids=lambda kind: kind.name)
def test_unusual_images_are_converted(bad_folder: BadFolder, kind: Kind) -> None:
    _check_converted(kind.name, decode_image_file(bad_folder.paths[kind.name]))


@pytest.mark.parametrize("kind", [*SKIPPED, FOLDER_KIND], ids=lambda kind: kind.name)
def test_bad_files_raise_naming_the_file_and_reason(bad_folder: BadFolder, kind: Kind) -> None:
    path = bad_folder.paths[kind.name]
    with pytest.raises(ImageDecodeError) as info:
        decode_image_file(path)
    assert kind.reason is not None
    assert str(path) in str(info.value) and re.search(kind.reason, str(info.value)), str(info.value)


def test_exif_orientation_is_not_applied(bad_folder: BadFolder) -> None:
    """Pixels come as stored (left red, right blue), not rotated to the viewing orientation."""
    image = decode_image_file(bad_folder.paths["exif_rotated.jpg"]).float()
    rotated = torch.rot90(_halves(RED, BLUE), k=-1, dims=(1, 2)).float()  # what a viewer shows
    assert (image - rotated).abs().mean() > 50


def test_huge_images_are_refused_from_the_header(
    bad_folder: BadFolder, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No decoder runs on an image over the limit: both are replaced by ones that fail the test."""

    def must_not_decode(*args: object, **kwargs: object) -> None:
        raise AssertionError("a decoder ran on an image over MAX_IMAGE_PIXELS")

    monkeypatch.setattr(images_module, "decode_image", must_not_decode)
    monkeypatch.setattr(images_module, "_pil_pixels", must_not_decode)
    assert MAX_IMAGE_PIXELS == Image.MAX_IMAGE_PIXELS == 89_478_485
    for name in ("bomb.png", "bomb.jpg", "bomb.gif"):
        with pytest.raises(ImageDecodeError, match="MAX_IMAGE_PIXELS"):
            decode_image_file(bad_folder.paths[name])


# --- the cache builder and the lazy loader ----------------------------------------------------------


@pytest.mark.parametrize("workers", [0, 2])
def test_cache_converts_and_skips(
    bad_folder: BadFolder,
    workers: int,
    monkeypatch: pytest.MonkeyPatch,
    recorded: list[warnings.WarningMessage],
) -> None:
    monkeypatch.setattr(images_module, "_CHUNK", 4)  # several chunks, so both workers decode some
    paths = [str(path) for path in [*bad_folder.good, *bad_folder.paths.values()]]
    images, kept, skipped = decode_all(paths, SIZE, workers=workers)
    bad = [*SKIPPED, FOLDER_KIND]
    assert sorted(Path(path).name for path in skipped) == sorted(kind.name for kind in bad)
    assert images.shape == (len(paths) - len(bad), 3, SIZE, SIZE) and images.dtype == torch.uint8
    converted = {kind.name for kind in CONVERTED}
    for image, index in zip(images, kept.tolist(), strict=True):
        if Path(paths[index]).name in converted:
            _check_converted(Path(paths[index]).name, image)
    _check_skip_reasons(bad_folder, _skip_warnings(recorded), bad)


def test_cache_skips_a_thin_strip_before_resizing_it(
    tmp_path: Path, recorded: list[warnings.WarningMessage]
) -> None:
    """The cache (eval and train on folders) fits each image's shorter side to the size: a 200000×1
    strip at 32 px would take 2.4 GB, so it is skipped with the reason, as predict refuses it."""
    strip, good = tmp_path / "strip.png", tmp_path / "good.png"
    Image.new("RGB", (200_000, 1)).save(strip)
    Image.new("RGB", (SIZE, SIZE), (9, 8, 7)).save(good)
    images, kept, skipped = decode_all([str(good), str(strip)], SIZE, workers=0)
    assert (tuple(images.shape), kept.tolist(), skipped) == ((1, 3, SIZE, SIZE), [0], [str(strip)])
    reason = f"{strip} is 200000×1: resized to {SIZE} on its shorter side it would have"
    messages = [str(record.message) for record in recorded]
    assert len(messages) == 1 and messages[0].startswith(SKIP_PREFIX + reason), messages
    assert "over MAX_IMAGE_PIXELS" in messages[0]


def _square(image: torch.Tensor) -> torch.Tensor:
    """The lazy dataset's transform here: uint8 (3, SIZE, SIZE), pixels unchanged for SIZE×SIZE inputs."""
    return fit_square(image, SIZE)


@pytest.mark.parametrize("workers", [0, 2])
def test_lazy_loader_converts_and_skips(
    bad_folder: BadFolder, workers: int, recorded: list[warnings.WarningMessage]
) -> None:
    paths = [*bad_folder.good, *bad_folder.paths.values()]
    dataset = FolderImages([(str(path), index) for index, path in enumerate(paths)], _square)
    loader = build_loader(dataset, batch_size=4, train=False, seed=0, workers=workers)
    seen: list[int] = []
    converted = {kind.name for kind in CONVERTED}
    for images, labels in loader:
        for image, index in zip(images, labels.tolist(), strict=True):
            seen.append(index)
            if paths[index].name in converted:
                _check_converted(paths[index].name, image)
    bad = [*SKIPPED, FOLDER_KIND]
    assert len(seen) == len(paths) - len(bad)
    assert sorted(Path(path).name for path in loader.skipped) == sorted(kind.name for kind in bad)
    _check_skip_reasons(bad_folder, _skip_warnings(recorded), bad)


@pytest.mark.parametrize("cache", [True, False])
def test_class_folders_train_and_report_skipped(
    bad_folder: BadFolder, cache: bool, recorded: list[warnings.WarningMessage]
) -> None:
    """Through ``load_splits``: every bad file the folder scan lists is reported, none crashes a worker."""
    splits = load_splits(str(bad_folder.root), img_size=SIZE, val_split=0.5, cache=cache)
    assert isinstance(splits.train, CachedImages if cache else FolderImages)
    workers = 0 if cache else 2
    skipped: set[str] = set()
    for dataset in (splits.train, splits.val):
        loader = build_loader(dataset, batch_size=4, train=False, seed=0, workers=workers)  # reads every file
        for images, labels in loader:
            assert images.shape[1:] == (3, SIZE, SIZE) and len(images) == len(labels)
            assert torch.isfinite(images).all()
        skipped |= {Path(path).name for path in loader.skipped}
    assert sorted(skipped) == sorted(kind.name for kind in SCANNED_SKIPPED)
    _check_skip_reasons(bad_folder, _skip_warnings(recorded), SCANNED_SKIPPED)
    train = build_loader(splits.train, batch_size=4, train=True, seed=0, workers=workers)
    batches = list(train)
    # Every step comes out, so all torchrun processes take the same steps: one that unreadable files
    # left with under 2 images comes out empty, for the trainer to skip (in every process at once).
    assert len(batches) == len(train)
    for images, labels in batches:
        assert len(images) == len(labels)
        assert len(images) == 0 or (images.shape[1:] == (3, SIZE, SIZE) and 2 <= len(images) <= 4)
    pairs = build_loader(splits.train, batch_size=2, train=True, seed=0, workers=workers)
    assert len(list(pairs)) == len(pairs)


def test_a_split_with_no_readable_image_is_named(tmp_path: Path) -> None:
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        for k in range(2):
            (tmp_path / name / f"{k}.jpg").write_text("not a jpeg")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(ValueError, match="none of the 2 validation image files could be read"):
            load_splits(str(tmp_path), img_size=SIZE, val_split=0.5)


# --- the command line -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def trained_on_bad_folder(
    bad_folder: BadFolder, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, dict[str, object], list[str]]:
    """``mobilenets train`` on the folder: (checkpoint, result line, skip warnings)."""
    out = tmp_path_factory.mktemp("run")
    argv = [
        "train", "--model", "mobilenet_v1", "--width-mult", "0.25", "--data", str(bad_folder.root),
        "--val-split", "0.5", "--epochs", "1", "--batch-size", "4", "--resolution", "32",
        "--out", str(out), "--no-progress",
    ]  # fmt: skip
    with warnings.catch_warnings(record=True) as records:
        warnings.simplefilter("always")
        with pytest.MonkeyPatch.context() as patch:
            stdout = io.StringIO()
            patch.setattr(sys, "stdout", stdout)
            code = run_main(argv)
    assert code == 0
    result = json.loads(stdout.getvalue().strip().splitlines()[-1])
    return out / "last.safetensors", result, [str(record.message) for record in records]


def test_cli_train_reports_skipped_files(
    bad_folder: BadFolder, trained_on_bad_folder: tuple[Path, dict[str, object], list[str]]
) -> None:
    checkpoint, result, messages = trained_on_bad_folder
    assert checkpoint.is_file()
    assert result["skipped_images"] == len(SCANNED_SKIPPED)
    for kind in SCANNED_SKIPPED:
        assert any(str(bad_folder.paths[kind.name]) in message for message in messages), kind.name


def test_cli_eval_reports_skipped_files(
    bad_folder: BadFolder,
    trained_on_bad_folder: tuple[Path, dict[str, object], list[str]],
    recorded: list[warnings.WarningMessage],
) -> None:
    checkpoint, _, _ = trained_on_bad_folder
    code, out, err = run_cli(
        ["eval", "--checkpoint", str(checkpoint), "--data", str(bad_folder.root), "--json", "--no-confusion"]
    )
    assert code == 0, err
    report = json.loads(out)
    skipped = report["skipped_files"]
    assert report["skipped"] == len(skipped) >= 1 and report["num_images"] >= 1
    assert {Path(path).name for path in skipped} <= {kind.name for kind in SCANNED_SKIPPED}
    assert f"skipped {len(skipped)} unreadable file(s)" in err
    assert sorted(_skip_warnings(recorded)) == sorted(Path(path).name for path in skipped)


def test_cli_predict_converts_unusual_images_and_names_bad_ones(
    bad_folder: BadFolder,
    trained_on_bad_folder: tuple[Path, dict[str, object], list[str]],
) -> None:
    checkpoint, _, _ = trained_on_bad_folder
    unusual = [str(bad_folder.paths[name]) for name in ("cmyk.jpg", "gray16.png", "animated.gif", "rgba.png")]
    code, out, err = run_cli(["predict", "--weights", str(checkpoint), "--json", *unusual])
    assert code == 0, err
    assert [entry["image"] for entry in json.loads(out)["predictions"]] == unusual

    bad = [str(bad_folder.paths[name]) for name in ("truncated.jpg", "bomb.png")]
    code, out, err = run_cli(["predict", "--weights", str(checkpoint), unusual[0], *bad])
    assert code == 2 and out == ""
    assert err.startswith("mobilenets predict: error: cannot classify 2 of 3 image(s): ")
    assert f"{bad[0]} is not a readable image" in err and f"{bad[1]} is 10000×10000" in err

    # A thin strip: a few hundred bytes on disk, but its shorter side scaled up would make gigabytes.
    strip = bad_folder.paths["cmyk.jpg"].parent / "strip.png"
    Image.new("RGB", (100_000, 1)).save(strip)
    code, _, err = run_cli(["predict", "--weights", str(checkpoint), unusual[0], str(strip)])
    assert code == 2 and f"{strip}: a 100000×1 image resized to" in err and "over MAX_IMAGE_PIXELS" in err, (
        err
    )
    from mobilenets.weights import get_preset

    lazy = FolderImages([(str(strip), 0)], get_preset("imagenet").transform())  # list files, pretrained
    assert "a 100000×1 image resized to 256" in lazy[0].reason  # type: ignore[union-attr]  # skipped
    strip.unlink()

    # A file name that is not UTF-8 (Python keeps its byte as a lone surrogate): printed escaped, since a
    # strict UTF-8 terminal refuses the surrogate
    latin1 = bad_folder.paths["cmyk.jpg"].parent / os.fsdecode(b"caf\xe9.jpg")
    shutil.copy(bad_folder.paths["cmyk.jpg"], latin1)
    code, out, err = run_cli(["predict", "--weights", str(checkpoint), str(latin1)])
    assert code == 0 and out.splitlines()[0].endswith("caf\\xe9.jpg") and out.encode("utf-8"), err
    code, out, err = run_cli(["predict", "--weights", str(checkpoint), str(latin1), "--json"])
    assert code == 0 and json.loads(out)["predictions"][0]["image"].endswith("caf\\xe9.jpg"), err
    latin1.unlink()
    # Weights in a folder of such a name: safetensors opens UTF-8 names only, so the file is read whole
    state, metadata = read_weights(checkpoint)
    elsewhere = latin1.parent / os.fsdecode(b"r\xe9sultats")
    elsewhere.mkdir()
    write_safetensors(elsewhere / "w.safetensors", state, metadata)
    again, card = read_weights(elsewhere / "w.safetensors")
    assert card == metadata and all(torch.equal(again[key], state[key]) for key in state)
    # Weights that make NaN: no ranking of NaNs (and no NaN in the JSON), one line
    state["classifier.bias"][0] = float("nan")
    broken = checkpoint.with_name("nan.safetensors")
    write_safetensors(broken, state, metadata)
    code, out, err = run_cli(["predict", "--weights", str(broken), "--json", unusual[0]])
    assert code == 2 and out == "" and "outputs are not finite numbers (NaN or infinite) for" in err, err

    code, _, err = run_cli(["predict", "--weights", str(checkpoint), str(bad_folder.paths["folder.jpg"])])
    assert code == 2 and "expected image files, got folder(s)" in err and "folder.jpg" in err
    code, _, err = run_cli(["predict", "--weights", str(checkpoint), str(bad_folder.paths["dangling.jpg"])])
    assert code == 2 and "not found" in err and "dangling.jpg" in err
    # --pretrained [NAME] takes the image after it as a name: said so, not "IMAGE is required"
    code, _, err = run_cli(["predict", "--model", "mobilenet_v2", "--pretrained", unusual[0]])
    assert code == 2 and "--pretrained took the file" in err and "write --pretrained=NAME" in err, err
    code, _, err = run_cli(["predict", "--weights", str(checkpoint)])
    assert code == 2 and "give at least one IMAGE file" in err, err


def test_cli_predict_on_a_bad_file_exits_2_without_a_traceback(
    bad_folder: BadFolder, trained_on_bad_folder: tuple[Path, dict[str, object], list[str]]
) -> None:
    """As a user runs it: a separate process, exit status 2, one line on stderr naming the file."""
    checkpoint, _, _ = trained_on_bad_folder
    bad = str(bad_folder.paths["text.png"])
    result = subprocess.run(
        [sys.executable, "-m", "mobilenets", "predict", "--weights", str(checkpoint), bad],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert f"{bad} is not an image file" in result.stderr
