"""The data layer: specs, folder layouts, caching, bad files, transforms, epochs and rank sharding."""

from __future__ import annotations

import dataclasses
import itertools
import os
import warnings
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from mobilenets.data.datasets import CachedImages, FolderImages
from mobilenets.data.folders import scan_folder
from mobilenets.data.splits import (
    AUGMENTATIONS,
    CIFAR10_MEAN,
    CIFAR10_STD,
    IMAGENET_MEAN,
    IMAGENET_STD,
    DataSplits,
    build_loader,
    check_data_spec,
    load_digits_dataset,
    load_eval_set,
    load_splits,
)
from mobilenets.data.transforms import Augmentation, BatchTransform, SampleTransform

REPO_ROOT = Path(__file__).resolve().parents[1]
CIFAR10_ROOT = Path(os.environ.get("MOBILENETS_SHARED", REPO_ROOT.parent / "shared")) / "data" / "cifar10"
CIFAR10_ORDER = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")


def _write_images(folder: Path, count: int, size: int | tuple[int, int], seed: int, ext: str = "png") -> None:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    width, height = (size, size) if isinstance(size, int) else size
    for i in range(count):
        pixels = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(folder / f"img{i:03d}.{ext}")


def make_folder(
    root: Path, classes: dict[str, int], size: int | tuple[int, int] = 20, ext: str = "png"
) -> Path:
    """ImageFolder at ``root``: ``classes`` maps class name to image count."""
    for k, (name, count) in enumerate(sorted(classes.items())):
        _write_images(root / name, count, size, seed=zlib.crc32(str(root).encode()) + k, ext=ext)
    return root


def collect(loader: object) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return [(images.clone(), labels.clone()) for images, labels in loader]  # type: ignore[attr-defined]


# --- specs and layouts ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "match"),
    [
        ("", "non-empty"),
        ("imagenet:/data/x", "unknown data spec 'imagenet:/data/x'"),
        ("cifar10:", "names no folder"),
        ("cifar10:/no/such/dir", "does not exist"),
        ("/no/such/dir", "does not exist"),
    ],
)
def test_bad_specs_raise_naming_the_spec_and_forms(spec: str, match: str) -> None:
    with pytest.raises(ValueError, match=match) as info:
        check_data_spec(spec)
    assert "cifar10:PATH" in str(info.value)
    with pytest.raises(ValueError):
        load_splits(spec, img_size=32)


def test_spec_that_is_a_file_or_lacks_val_folder(tmp_path: Path) -> None:
    (tmp_path / "file.txt").write_text("x")
    with pytest.raises(ValueError, match=r"is a file, not a folder \(a labelled list file can be evaluated"):
        check_data_spec(str(tmp_path / "file.txt"))
    with pytest.raises(ValueError, match="not a directory"):
        check_data_spec(f"cifar10:{tmp_path / 'file.txt'}")
    make_folder(tmp_path / "only" / "train", {"a": 2})
    with pytest.raises(ValueError, match="no val/ or test/"):
        check_data_spec(str(tmp_path / "only"))
    check_data_spec("digits")


def test_a_class_named_train_and_a_val_folder_that_is_the_train_folder(tmp_path: Path) -> None:
    # "train" holding images is a class (vehicles: bus, car, train), not the train split
    vehicles = make_folder(tmp_path / "vehicles", {"bus": 3, "car": 3, "train": 3})
    splits = load_splits(str(vehicles), img_size=32, val_split=0.34)
    assert splits.classes == ("bus", "car", "train") and (len(splits.train), len(splits.val)) == (6, 3)
    # A val folder linked to the train folder, or inside it: the scores would be on training images
    make_folder(tmp_path / "leak" / "train", {"a": 2, "b": 2})
    (tmp_path / "leak" / "val").symlink_to(tmp_path / "leak" / "train")
    with pytest.raises(ValueError, match=r"validation folder .*val is the same folder as the training"):
        check_data_spec(str(tmp_path / "leak"))
    make_folder(tmp_path / "nested" / "train" / "a", {"x": 1})
    (tmp_path / "nested" / "test").symlink_to(tmp_path / "nested" / "train" / "a")
    with pytest.raises(ValueError, match="nested with the training folder"):
        check_data_spec(f"cifar10:{tmp_path / 'nested'}")


def test_train_val_layout(tmp_path: Path) -> None:
    make_folder(tmp_path / "train", {"cat": 5, "dog": 4, "emu": 3})
    make_folder(tmp_path / "val", {"cat": 2, "dog": 2, "emu": 1})
    splits = load_splits(str(tmp_path), img_size=32)
    assert isinstance(splits, DataSplits)
    assert splits.classes == ("cat", "dog", "emu")
    assert (len(splits.train), len(splits.val)) == (12, 5)
    assert (splits.mean, splits.std) == (IMAGENET_MEAN, IMAGENET_STD)
    assert splits.skipped == ()
    images, labels = next(iter(build_loader(splits.val, batch_size=8, train=False, seed=0)))
    assert images.shape == (5, 3, 32, 32) and images.dtype == torch.float32
    assert labels.tolist() == [0, 0, 1, 1, 2]
    images, labels = next(iter(build_loader(splits.train, batch_size=4, train=True, seed=0)))
    assert images.shape == (4, 3, 32, 32) and labels.dtype == torch.int64


def test_test_folder_serves_as_val_and_classes_must_match(tmp_path: Path) -> None:
    make_folder(tmp_path / "train", {"a": 3, "b": 3})
    make_folder(tmp_path / "test", {"a": 1, "b": 1})
    assert len(load_splits(str(tmp_path), img_size=32).val) == 2
    make_folder(tmp_path / "val", {"a": 1, "c": 1})
    with pytest.raises(ValueError, match=r"missing \['b'\], unexpected \['c'\]"):
        load_splits(str(tmp_path), img_size=32)


def test_single_folder_split_is_stratified_seeded_and_matches_eval_set(tmp_path: Path) -> None:
    make_folder(tmp_path, {"a": 10, "b": 10, "c": 5})
    splits = load_splits(str(tmp_path), img_size=32, val_split=0.2, seed=3)
    assert isinstance(splits.val, CachedImages) and isinstance(splits.train, CachedImages)
    assert torch.bincount(splits.val.labels).tolist() == [2, 2, 1]
    assert len(splits.train) + len(splits.val) == 25
    again = load_splits(str(tmp_path), img_size=32, val_split=0.2, seed=3).val
    other = load_splits(str(tmp_path), img_size=32, val_split=0.2, seed=4).val
    assert isinstance(again, CachedImages) and isinstance(other, CachedImages)
    assert torch.equal(again.images, splits.val.images)
    assert not torch.equal(other.images, splits.val.images)

    val, classes = load_eval_set(
        str(tmp_path), img_size=32, mean=splits.mean, std=list(splits.std), val_split=0.2, seed=3
    )
    assert classes == ("a", "b", "c")
    assert isinstance(val, CachedImages)
    assert torch.equal(val.images, splits.val.images) and torch.equal(val.labels, splits.val.labels)
    mine = collect(build_loader(val, batch_size=4, train=False, seed=0))
    theirs = collect(build_loader(splits.val, batch_size=4, train=False, seed=9))
    assert all(torch.equal(a[0], b[0]) for a, b in zip(mine, theirs, strict=True))


def test_tiny_classes_still_get_a_val_image(tmp_path: Path) -> None:
    make_folder(tmp_path, {"a": 2, "b": 3, "c": 1})
    splits = load_splits(str(tmp_path), img_size=32, val_split=0.1)
    assert isinstance(splits.val, CachedImages)
    assert torch.bincount(splits.val.labels, minlength=3).tolist() == [1, 1, 0]


# --- bad data -----------------------------------------------------------------------------------------


def test_empty_class_folder_is_named(tmp_path: Path) -> None:
    make_folder(tmp_path, {"a": 3, "b": 3})
    (tmp_path / "zebra").mkdir()
    with pytest.raises(ValueError, match=r"empty class folder.*zebra"):
        load_splits(str(tmp_path), img_size=32)


def test_no_images_at_all(tmp_path: Path) -> None:
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "notes.txt").write_text("not an image")
    with pytest.raises(ValueError, match=f"no images in the class folders of {tmp_path}"):
        load_splits(str(tmp_path), img_size=32)
    with pytest.raises(ValueError, match="holds no class folders"):
        load_splits(str(tmp_path / "a"), img_size=32)


def _folder_with_corrupt_file(root: Path) -> Path:
    make_folder(root / "train", {"a": 4, "b": 4}, ext="jpg")
    make_folder(root / "val", {"a": 2, "b": 2}, ext="jpg")
    bad = root / "train" / "b" / "broken.jpg"
    bad.write_bytes(np.random.default_rng(0).integers(0, 256, 300, dtype=np.uint8).tobytes())
    return bad


def test_corrupt_file_is_skipped_when_caching(tmp_path: Path) -> None:
    bad = _folder_with_corrupt_file(tmp_path)
    with pytest.warns(UserWarning, match="broken.jpg"):
        splits = load_splits(str(tmp_path), img_size=32)
    assert splits.skipped == (str(bad),)
    assert len(splits.train) == 8
    loader = build_loader(splits.train, batch_size=4, train=True, seed=0)
    assert loader.skipped == [str(bad)]
    assert sum(len(labels) for _, labels in loader) == 8


@pytest.mark.parametrize("workers", [0, 1])
def test_corrupt_file_is_skipped_when_lazy(tmp_path: Path, workers: int) -> None:
    bad = _folder_with_corrupt_file(tmp_path)
    splits = load_splits(str(tmp_path), img_size=32, cache=False)
    assert isinstance(splits.train, FolderImages) and len(splits.train) == 9
    loader = build_loader(splits.train, batch_size=9, train=True, seed=0, workers=workers)
    with pytest.warns(UserWarning, match="broken.jpg"):
        batches = collect(loader)
    assert loader.skipped == [str(bad)]
    assert [len(labels) for _, labels in batches] == [8]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the same file is not warned about twice
        collect(loader)
    assert loader.skipped == [str(bad)]


# --- transforms and normalisation ----------------------------------------------------------------------


def test_normalisation_of_a_constant_image(tmp_path: Path) -> None:
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        for i in range(2):
            Image.new("RGB", (32, 32), (255, 0, 128)).save(tmp_path / name / f"{i}.png")
    splits = load_splits(str(tmp_path), img_size=32, val_split=0.5)
    images, _ = next(iter(build_loader(splits.val, batch_size=2, train=False, seed=0)))
    expected = [(v / 255 - m) / s for v, m, s in zip((255, 0, 128), IMAGENET_MEAN, IMAGENET_STD, strict=True)]
    torch.testing.assert_close(images.mean(dim=(0, 2, 3)), torch.tensor(expected), rtol=0, atol=1e-5)
    torch.testing.assert_close(images.std(dim=(0, 2, 3)), torch.zeros(3), rtol=0, atol=1e-5)


def test_cached_and_lazy_eval_agree_and_resized_crop_shapes(tmp_path: Path) -> None:
    make_folder(tmp_path / "train", {"a": 3, "b": 3}, size=48)
    # Resized to 41×37: the cached path crops 37×37 then 32×32, the lazy one 32×32 at once, and both
    # centre offsets round alike here (at some sizes, e.g. 50×37, they differ by one pixel).
    make_folder(tmp_path / "val", {"a": 2, "b": 2}, size=(82, 74))
    cached = load_splits(str(tmp_path), img_size=32, augment="randaugment")
    lazy = load_splits(str(tmp_path), img_size=32, cache=False)
    assert isinstance(cached.val, CachedImages) and cached.val.images.shape[-1] == 37  # round(32 / 0.875)
    assert isinstance(lazy.val, FolderImages)
    a = collect(build_loader(cached.val, batch_size=4, train=False, seed=0))
    b = collect(build_loader(lazy.val, batch_size=4, train=False, seed=0))
    torch.testing.assert_close(a[0][0], b[0][0], rtol=0, atol=0.05)
    for splits in (cached, lazy):
        images, _ = next(iter(build_loader(splits.train, batch_size=3, train=True, seed=0)))
        assert images.shape == (3, 3, 32, 32)


def test_pad_crop_is_a_shifted_flipped_window() -> None:
    images = torch.arange(2 * 3 * 8 * 8, dtype=torch.int64).remainder(251).to(torch.uint8).view(2, 3, 8, 8)
    transform = BatchTransform(8, 8, (0.0, 0.0, 0.0), (1 / 255, 1 / 255, 1 / 255), train=True)
    params = transform.draw(2, torch.Generator().manual_seed(0))
    params.crop[:, :2] = torch.tensor([[1.0, 2.0], [2.0, 0.0]])  # padding is 1: (x, y) offsets in [0, 2]
    params.flip[:] = torch.tensor([False, True])
    out = transform(images, params)  # mean 0, std 1/255: pixel values come out unchanged
    expected = torch.zeros(2, 3, 8, 8)
    expected[0, :, :7] = images[0, :, 1:].float()  # (x, y) = (1, 2): one row up, last row is padding
    shifted = torch.nn.functional.pad(images[1].float(), (0, 1))[:, :, 1:]  # x = 2: one column left
    expected[1] = torch.nn.functional.pad(shifted, (0, 0, 1, 0))[:, :8].flip(-1)  # y = 0: one row down
    torch.testing.assert_close(out, expected)


def test_reflect_padding_crops_from_the_mirrored_image() -> None:
    images = torch.randint(
        0, 256, (16, 3, 8, 8), dtype=torch.uint8, generator=torch.Generator().manual_seed(0)
    )
    augment = Augmentation(padding=3, padding_mode="reflect")
    transform = BatchTransform(
        8, 8, (0.0, 0.0, 0.0), (1 / 255, 1 / 255, 1 / 255), train=True, augment=augment
    )
    params = transform.draw(16, torch.Generator().manual_seed(1))
    assert params.crop[:, :2].max() <= 6 and len(params.crop[:, :2].unique()) > 3  # offsets span 0..2·3
    out = transform(images, params)
    for image, (x, y), flip, got in zip(
        images, params.crop[:, :2].long().tolist(), params.flip, out, strict=True
    ):
        padded = torch.nn.functional.pad(image[None].float(), (3, 3, 3, 3), mode="reflect")[0]
        window = padded[:, y : y + 8, x : x + 8]
        torch.testing.assert_close(got, window.flip(-1) if flip else window)


def test_cutout_blanks_one_square_inside_each_training_image() -> None:
    white = torch.full((32, 3, 16, 16), 255, dtype=torch.uint8)
    augment = Augmentation(cutout=5, padding=0)
    transform = BatchTransform(16, 16, (0.5,) * 3, (0.5,) * 3, train=True, augment=augment)
    params = transform.draw(32, torch.Generator().manual_seed(0))
    out = transform(white, params)
    blank = out == 0  # the mean, once normalised
    assert torch.equal(blank.sum((1, 2, 3)), torch.full((32,), 3 * 25))  # whole 5×5 squares, every channel
    for mask, (x, y) in zip(blank[:, 0], params.cutout.tolist(), strict=True):
        assert mask[y : y + 5, x : x + 5].all()
    assert len({tuple(corner) for corner in params.cutout.tolist()}) > 8  # placed at random
    assert params.cutout.min() >= 0 and params.cutout.max() <= 11  # wholly inside the 16 px image
    # The draws of crop and flip are those of a run without cutout; eval leaves images whole.
    plain = BatchTransform(16, 16, (0.5,) * 3, (0.5,) * 3, train=True, augment=Augmentation(padding=0))
    unblanked = plain.draw(32, torch.Generator().manual_seed(0))
    assert torch.equal(unblanked.flip, params.flip) and torch.equal(unblanked.crop, params.crop)
    evaluated = dataclasses.replace(transform, train=False)
    assert not (evaluated(white, evaluated.draw(32)) == 0).any()
    # Files read one at a time follow the same rules.
    sample = SampleTransform(
        16, (0.5,) * 3, (0.5,) * 3, train=True, augment=Augmentation(cutout=5, padding=0)
    )
    assert int((sample(white[0]) == 0).sum()) == 3 * 25
    mirrored = SampleTransform(
        16, (0.5,) * 3, (0.5,) * 3, train=True, augment=Augmentation(padding_mode="reflect")
    )
    assert not (mirrored(white[0]) != 1).any()  # a white image padded with its mirror stays white


def test_augmentation_options_are_checked() -> None:
    with pytest.raises(ValueError, match="cutout 40 px is larger than the 32 px image"):
        load_splits("digits", img_size=32, augment=Augmentation(cutout=40))
    with pytest.raises(ValueError, match="reflect padding must be below the image size 32; got 32"):
        load_splits("digits", img_size=32, augment=Augmentation(padding=32, padding_mode="reflect"))
    with pytest.raises(ValueError, match="padding_mode must be one of zeros, reflect; got 'edge'"):
        Augmentation(padding_mode="edge")
    for bad in (-1, 2.5, True):
        with pytest.raises(ValueError, match="cutout must be a whole number of pixels >= 0"):
            Augmentation(cutout=bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="padding must be a whole number of pixels >= 0"):
        Augmentation(padding=-2)
    with pytest.raises(ValueError, match="augment must be one of"):
        Augmentation(policy="autoaugment")


def test_resized_crop_selects_the_drawn_window() -> None:
    images = torch.randint(0, 256, (2, 3, 8, 8), dtype=torch.uint8)
    transform = BatchTransform(8, 4, (0.0, 0.0, 0.0), (1 / 255, 1 / 255, 1 / 255), train=True)
    params = transform.draw(2, torch.Generator().manual_seed(0))
    params.crop[:] = torch.tensor([[0.0, 0.0, 0.5, 0.5], [0.5, 0.5, 0.5, 0.5]])  # (x0, y0, w, h)
    params.flip[:] = torch.tensor([False, True])
    out = transform(images, params)
    torch.testing.assert_close(out[0], images[0, :, :4, :4].float())  # top-left quarter, pixel-exact
    torch.testing.assert_close(out[1], images[1, :, 4:, 4:].float().flip(-1))  # bottom-right, flipped


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="augment must be one of none, trivialaugment, randaugment"):
        load_splits("digits", img_size=32, augment="autoaugment")
    # The models' rule (mobilenets.models.check_resolution), not one of the data layer's own.
    with pytest.raises(ValueError, match="img_size must be an integer from 32 to 4096 pixels, got 16"):
        load_splits("digits", img_size=16)
    with pytest.raises(ValueError, match="too large for 'digits'"):  # checked before upsampling
        load_splits("digits", img_size=513)
    with pytest.raises(ValueError, match="too large for 'digits'"):
        check_data_spec("digits", img_size=1024)
    check_data_spec("digits", img_size=512)
    with pytest.raises(ValueError, match="val_split must be a number in"):
        load_splits("digits", img_size=32, val_split=1.0)
    with pytest.raises(ValueError, match="std must be positive"):
        load_eval_set("digits", img_size=32, mean=(0, 0, 0), std=(1, 0, 1))
    assert AUGMENTATIONS == ("none", "trivialaugment", "randaugment")


# --- loader: epochs, lengths, sharding ----------------------------------------------------------------


def _indexed_set(n: int, size: int = 8, augment: str = "none", train: bool = True) -> CachedImages:
    """Random images whose label is their index, so batches reveal which images they hold."""
    images = torch.randint(0, 256, (n, 3, size, size), generator=torch.Generator().manual_seed(n))
    transform = BatchTransform(size, size, (0.5,) * 3, (0.5,) * 3, train=train, augment=augment)
    return CachedImages(images.to(torch.uint8), torch.arange(n), transform)


def _flips_by_label(loader: Any, epoch: int, plain: dict[int, torch.Tensor]) -> dict[int, bool]:
    """Which images (by label) ``loader`` mirrored in ``epoch``, against their unmirrored ``plain`` form."""
    loader.set_epoch(epoch)
    flips = {}
    for images, labels in loader:
        for image, label in zip(images, labels.tolist(), strict=True):
            flipped = torch.allclose(image, plain[label].flip(-1), atol=1e-6)
            assert flipped or torch.allclose(image, plain[label], atol=1e-6)  # no shift: it or its mirror
            flips[label] = flipped
    return flips


def test_alternate_flip_mirrors_each_image_in_every_other_epoch(tmp_path: Path) -> None:
    n, augment = 40, Augmentation(padding=0, alternate_flip=True)
    images = torch.randint(0, 256, (n, 3, 8, 8), generator=torch.Generator().manual_seed(0)).to(torch.uint8)
    transform = BatchTransform(8, 8, (0.5,) * 3, (0.5,) * 3, train=True, augment=augment)
    dataset = CachedImages(images, torch.arange(n), transform)
    plain = {i: (images[i].float() / 255 - 0.5) / 0.5 for i in range(n)}
    single = build_loader(dataset, batch_size=8, train=True, seed=3)
    epochs = [_flips_by_label(single, epoch, plain) for epoch in range(4)]
    assert 10 < sum(epochs[0].values()) < 30  # the first epoch tosses a coin per image
    for before, after in itertools.pairwise(epochs):
        assert before.keys() == after.keys() and all(after[i] != before[i] for i in before)
    # Ranks split the images, not the rule: their union flips what the single process flips.
    ranks = [build_loader(dataset, batch_size=4, train=True, seed=3, rank=r, world_size=2) for r in range(2)]
    union = _flips_by_label(ranks[0], 1, plain) | _flips_by_label(ranks[1], 1, plain)
    assert union == epochs[1]
    # Only the flips change: with 2-px shifts, each image is the random-flip loader's or its mirror.
    shifted = [
        build_loader(
            CachedImages(images, torch.arange(n), dataclasses.replace(transform, augment=augment)),
            batch_size=8,
            train=True,
            seed=3,
        )
        for augment in (Augmentation(padding=2), Augmentation(padding=2, alternate_flip=True))
    ]
    for loader in shifted:
        loader.set_epoch(1)
    mirrored = []
    for (x_random, y_random), (x_alternate, y_alternate) in zip(*map(collect, shifted), strict=True):
        assert torch.equal(y_random, y_alternate)  # the same order
        for a, b in zip(x_random, x_alternate, strict=True):
            assert torch.equal(a, b) or torch.equal(a.flip(-1), b)
            mirrored.append(not torch.equal(a, b))
    assert 5 < sum(mirrored) < 35
    # Another seed tosses anew.
    reseeded = build_loader(dataset, batch_size=8, train=True, seed=4)
    assert _flips_by_label(reseeded, 0, plain) != epochs[0]
    # Files read one at a time alternate the same way (32 px files: pad-and-crop with no shift).
    make_folder(tmp_path, {"a": 6, "b": 6}, size=32)
    lazy = load_splits(str(tmp_path), img_size=32, val_split=0.25, cache=False, augment=augment).train
    loader = build_loader(lazy, batch_size=len(lazy), train=True, seed=0, workers=0)  # every image
    views = []
    for epoch in range(3):  # labels name classes here, so images are matched by content
        loader.set_epoch(epoch)
        views.append(torch.cat([x for x, _ in loader]))
    assert all(any(torch.equal(x.flip(-1), y) for y in views[0]) for x in views[1])
    assert all(any(torch.equal(x, y) for y in views[0]) for x in views[2])
    with pytest.raises(ValueError, match="alternate_flip needs training images that are flipped"):
        load_splits("digits", img_size=32, augment=augment)
    with pytest.raises(ValueError, match="alternate_flip must be True or False"):
        Augmentation(alternate_flip=1)  # type: ignore[arg-type]


@pytest.mark.parametrize("workers", [0, 2])
def test_streamed_loader_leaves_the_global_rng_alone(tmp_path: Path, workers: int) -> None:
    """A DataLoader draws its workers' base seed at every new iterator: from the global RNG, persistent
    workers drew once per process, so a resumed run's dropout draws shifted (not bit-exact)."""
    make_folder(tmp_path, {"a": 6, "b": 6}, size=32)
    lazy = load_splits(
        str(tmp_path), img_size=32, val_split=0.25, cache=False, augment="trivialaugment"
    ).train
    loader = build_loader(lazy, batch_size=4, train=True, seed=0, workers=workers)
    state = torch.get_rng_state()
    for epoch in range(2):
        loader.set_epoch(epoch)
        assert sum(len(labels) for _, labels in loader) == len(lazy)
    assert torch.equal(torch.get_rng_state(), state)


@pytest.mark.parametrize("augment", ["none", "trivialaugment"])
def test_set_epoch_fixes_order_and_augmentation(augment: str) -> None:
    dataset = _indexed_set(40, augment=augment)
    loader = build_loader(dataset, batch_size=8, train=True, seed=1)
    loader.set_epoch(3)
    first = collect(loader)
    resumed = build_loader(dataset, batch_size=8, train=True, seed=1)
    resumed.set_epoch(3)
    for (xa, ya), (xb, yb) in zip(first, collect(resumed), strict=True):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)
    loader.set_epoch(4)
    second = collect(loader)
    assert not torch.equal(first[0][1], second[0][1])
    other_seed = build_loader(dataset, batch_size=8, train=True, seed=2)
    other_seed.set_epoch(3)
    assert not torch.equal(first[0][1], collect(other_seed)[0][1])
    # The same images come out augmented differently at another epoch.
    at_3 = {int(y): x for images, labels in first for x, y in zip(images, labels, strict=True)}
    at_4 = {int(y): x for images, labels in second for x, y in zip(images, labels, strict=True)}
    common = at_3.keys() & at_4.keys()
    assert common and any(not torch.equal(at_3[i], at_4[i]) for i in common)


@pytest.mark.parametrize("lazy", [False, True])
def test_start_step_resumes_mid_epoch(tmp_path: Path, lazy: bool) -> None:
    if lazy:
        make_folder(tmp_path, {"a": 6, "b": 6}, size=20)
        dataset = load_splits(str(tmp_path), img_size=32, val_split=0.25, cache=False).train
    else:
        dataset = _indexed_set(40)
    loader = build_loader(dataset, batch_size=3, train=True, seed=0)
    loader.set_epoch(2)
    full = collect(loader)
    loader.set_epoch(2, start_step=2)
    resumed = collect(loader)
    assert len(resumed) == len(full) - 2 and len(loader) == len(full)
    for (xa, ya), (xb, yb) in zip(full[2:], resumed, strict=True):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)
    with pytest.raises(ValueError, match="start_step must be an integer in"):
        loader.set_epoch(2, start_step=len(loader) + 1)


def test_lengths_drop_last_and_batch_size_check() -> None:
    dataset = _indexed_set(10)
    train = build_loader(dataset, batch_size=4, train=True, seed=0)
    assert (len(train), train.num_samples) == (2, 10)
    assert [len(y) for _, y in train] == [4, 4]
    evaluation = build_loader(_indexed_set(10, train=False), batch_size=4, train=False, seed=0)
    assert len(evaluation) == 3
    assert torch.cat([y for _, y in evaluation]).tolist() == list(range(10))
    with pytest.raises(ValueError, match="batch_size 11 exceeds the 10 training images"):
        build_loader(dataset, batch_size=11, train=True, seed=0)
    with pytest.raises(ValueError, match="rank must be an integer in"):
        build_loader(dataset, batch_size=2, train=True, seed=0, rank=2, world_size=2)


def test_rank_shards_are_disjoint_cover_and_union_to_single_process_batches() -> None:
    dataset = _indexed_set(48, augment="trivialaugment")
    single = build_loader(dataset, batch_size=8, train=True, seed=5)
    ranks = [build_loader(dataset, batch_size=4, train=True, seed=5, rank=r, world_size=2) for r in range(2)]
    for loader in (single, *ranks):
        loader.set_epoch(2)
    single_batches = collect(single)
    rank_batches = [collect(loader) for loader in ranks]
    seen = [torch.cat([y for _, y in batches]) for batches in rank_batches]
    assert not set(seen[0].tolist()) & set(seen[1].tolist())
    assert sorted(seen[0].tolist() + seen[1].tolist()) == list(range(48))
    for k, (images, labels) in enumerate(single_batches):
        union_images = torch.cat([rank_batches[r][k][0] for r in range(2)])
        union_labels = torch.cat([rank_batches[r][k][1] for r in range(2)])
        assert sorted(union_labels.tolist()) == sorted(labels.tolist())
        torch.testing.assert_close(union_images[union_labels.argsort()], images[labels.argsort()])


def test_uneven_shards_pad_train_but_not_eval() -> None:
    train = [
        build_loader(_indexed_set(7), batch_size=2, train=True, seed=0, rank=r, world_size=2) for r in (0, 1)
    ]
    assert [loader.num_samples for loader in train] == [4, 4]
    evaluation = [
        build_loader(_indexed_set(7, train=False), batch_size=2, train=False, seed=0, rank=r, world_size=2)
        for r in (0, 1)
    ]
    labels = [torch.cat([y for _, y in loader]).tolist() for loader in evaluation]
    assert labels == [[0, 2, 4, 6], [1, 3, 5]]


def test_lazy_loader_is_deterministic_across_worker_counts(tmp_path: Path) -> None:
    make_folder(tmp_path, {"a": 6, "b": 6}, size=20)
    splits = load_splits(str(tmp_path), img_size=32, val_split=0.25, cache=False, augment="trivialaugment")
    runs = []
    for workers in (0, 2):
        loader = build_loader(splits.train, batch_size=3, train=True, seed=0, workers=workers)
        loader.set_epoch(1)
        runs.append(collect(loader))
    for (xa, ya), (xb, yb) in zip(*runs, strict=True):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)


# --- datasets ------------------------------------------------------------------------------------------


def test_digits() -> None:
    splits = load_splits("digits", img_size=32, val_split=0.2, seed=0)
    assert splits.classes == tuple(str(i) for i in range(10))
    assert (splits.mean, splits.std) == ((0.5,) * 3, (0.5,) * 3)
    assert len(splits.train) + len(splits.val) == 1797
    old_train, old_val = load_digits_dataset(32, val_fraction=0.2, seed=0)
    assert (len(old_train), len(old_val)) == (len(splits.train), len(splits.val))
    assert old_train[0][0].shape == (3, 32, 32)
    assert isinstance(splits.val, CachedImages)
    assert torch.equal(splits.val.labels, old_val.tensors[1])
    images, _ = next(iter(build_loader(splits.val, batch_size=len(old_val), train=False, seed=0)))
    torch.testing.assert_close(images, old_val.tensors[0], rtol=0, atol=2 / 255 + 1e-6)  # uint8 cache
    images, labels = next(iter(build_loader(splits.train, batch_size=32, train=True, seed=0)))
    assert images.shape == (32, 3, 32, 32) and labels.shape == (32,)


def _cifar10_root() -> Path:
    if not (CIFAR10_ROOT / "test").is_dir():
        message = f"CIFAR-10 not found at {CIFAR10_ROOT} (set MOBILENETS_SHARED)"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    return CIFAR10_ROOT


def test_cifar10_test_split() -> None:
    root = _cifar10_root()
    val, classes = load_eval_set(f"cifar10:{root}", img_size=32, mean=CIFAR10_MEAN, std=CIFAR10_STD)
    assert classes == CIFAR10_ORDER
    assert isinstance(val, CachedImages)
    assert val.images.shape == (10_000, 3, 32, 32) and val.skipped == ()
    assert torch.bincount(val.labels).tolist() == [1000] * 10
    images, labels = next(iter(build_loader(val, batch_size=256, train=False, seed=0)))
    assert images.shape == (256, 3, 32, 32) and labels.shape == (256,)
    channel_means = (val.images.float() / 255).mean(dim=(0, 2, 3))
    torch.testing.assert_close(channel_means, torch.tensor(CIFAR10_MEAN), rtol=0, atol=0.02)


@pytest.mark.slow
def test_cifar10_full_cache() -> None:
    root = _cifar10_root()
    splits = load_splits(f"cifar10:{root}", img_size=32)
    assert (splits.mean, splits.std) == (CIFAR10_MEAN, CIFAR10_STD)
    assert isinstance(splits.train, CachedImages) and splits.train.images.shape == (50_000, 3, 32, 32)
    assert len(splits.val) == 10_000 and splits.skipped == ()
    loader = build_loader(splits.train, batch_size=128, train=True, seed=0)
    assert len(loader) == 390


def test_a_file_name_that_is_not_utf8_has_a_listing(tmp_path: Path) -> None:
    """Names are bytes on Linux: one that is not UTF-8 (an old Windows zip's) still lists and splits."""
    from mobilenets.data.folders import split_listing

    own = make_folder(tmp_path / "own", {"a": 4, "b": 4})
    os.rename(own / "a" / "img000.png", os.fsdecode(bytes(own / "a") + b"/\xe9t\xe9.png"))
    assert split_listing(str(own)).startswith("8:")
    assert len(load_splits(str(own), img_size=32, val_split=0.25).val) == 2


def test_workers_0_decodes_the_cache_in_this_process(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Where worker processes fail (a small /dev/shm), --workers 0 must hold for the cache's decoding too."""
    from mobilenets.data import splits as splits_module

    seen: list[int | None] = []
    decode = splits_module.decode_all

    def recording(paths: list[str], size: int, workers: int | None = None) -> Any:
        seen.append(workers)
        return decode(paths, size, workers)

    monkeypatch.setattr(splits_module, "decode_all", recording)
    own = make_folder(tmp_path / "own", {"a": 4, "b": 4})
    load_splits(str(own), img_size=32, val_split=0.25, workers=0)
    load_splits(str(own), img_size=32, val_split=0.25, workers=2)
    assert seen == [0, 0, None, None]  # val and train; 2: decode_all's choice (by the number of files)


def test_a_changed_folder_cannot_give_its_held_out_images_again(tmp_path: Path) -> None:
    """The split follows the files' positions: one file removed (a corrupt one, say) redraws it, and
    most of the "held-out" images would then be training images. Eval and resume refuse."""
    from mobilenets.data import card_eval_set
    from mobilenets.data.folders import absolute_data_spec, split_listing
    from mobilenets.training import TrainConfig, train
    from mobilenets.weights import ModelCard

    own = make_folder(tmp_path / "own", {"a": 20, "b": 20}, size=32)
    listing = split_listing(str(own))
    assert listing.startswith("40:") and split_listing("digits") == ""
    card = ModelCard(
        model="mobilenet_v2", model_kwargs={}, classes=("a", "b"), mean=(0.5,) * 3, std=(0.5,) * 3,
        img_size=32, data=absolute_data_spec(str(own)), val_split=0.25, seed=0, data_listing=listing,
    )  # fmt: skip
    run = tmp_path / "run"
    options: dict[str, Any] = {"data": str(own), "model": "mobilenet_v2", "width_mult": 0.25, "img_size": 32}
    options |= {"batch_size": 8, "val_split": 0.25, "progress": False, "device": "cpu", "out": str(run)}
    train(TrainConfig(**options, epochs=1))
    assert len(card_eval_set(card, str(own))[0]) == 10
    (own / "a" / "img000.png").unlink()
    with pytest.raises(ValueError, match=r"held out part of .* when it held 40 image files; it holds 39"):
        card_eval_set(card, str(own))
    with pytest.raises(ValueError, match="another split or seed draws a held-out part full of its training"):
        card_eval_set(card, str(own), val_split=0.2)  # a new split of the training data: training images
    with pytest.raises(ValueError, match=r"the run in .* held out part of .* 40 image files"):
        train(TrainConfig(**options, epochs=2, resume=True))


def test_hidden_folders_and_files_are_neither_classes_nor_images(tmp_path: Path) -> None:
    """What file managers and notebooks leave behind, and links back into the data: torchvision's
    ImageFolder would take them all."""
    root = make_folder(tmp_path / "data", {"cat": 3, "dog": 3})
    make_folder(root / ".Trash-1000", {"files": 2})
    (root / ".ipynb_checkpoints").mkdir()
    make_folder(root / "cat", {".thumbnails": 2})
    (root / "dog" / "._img000.png").write_bytes(b"AppleDouble")
    classes, samples = scan_folder(root)
    assert classes == ("cat", "dog") and len(samples) == 6
    assert not any("/." in path for path, _ in samples)
    elsewhere = make_folder(tmp_path / "elsewhere", {"more": 2})
    (root / "dog" / "more").symlink_to(elsewhere / "more")  # links to images elsewhere: followed
    assert len(scan_folder(root)[1]) == 8
    (root / "cat" / "up").symlink_to(root)  # a link back into the data: every image twice, mislabelled
    with pytest.raises(ValueError, match=r"cat/up links to .*inside the data folder"):
        scan_folder(root)


def test_card_eval_set_splits_its_own_folder_and_takes_another_whole(tmp_path: Path) -> None:
    """A checkpoint's own single folder gives its held-out images; another folder (calibration photos,
    a new test set) is taken whole, unless a split is asked for."""
    from mobilenets.data import card_eval_set
    from mobilenets.data.folders import absolute_data_spec
    from mobilenets.weights import ModelCard

    own = make_folder(tmp_path / "own", {"a": 20, "b": 20}, size=32)
    other = make_folder(tmp_path / "other", {"a": 15, "b": 15}, size=32)
    card = ModelCard(
        model="mobilenet_v2", model_kwargs={}, classes=("a", "b"), mean=(0.5,) * 3, std=(0.5,) * 3,
        img_size=32, data=absolute_data_spec(str(own)), val_split=0.25, seed=0,
    )  # fmt: skip
    assert len(card_eval_set(card, str(own))[0]) == 10  # its run's held-out quarter
    assert len(card_eval_set(card, str(other))[0]) == 30  # all of it: none was trained on
    assert len(card_eval_set(card, str(other), val_split=0.2)[0]) == 6  # a split, when asked
    foreign = dataclasses.replace(card, data="", source="torchvision")  # weights from elsewhere
    assert len(card_eval_set(foreign, str(other))[0]) == 30


def test_one_odd_photo_does_not_change_how_the_others_are_prepared(tmp_path: Path) -> None:
    """A folder of 32×32 images is taken as it is; one 227×227 photo among them (probed first, as it
    sorts first) used to send every image through resize-to-37 and crop instead, zooming in on each."""
    generator = np.random.default_rng(0)
    for label in ("a", "b"):
        (tmp_path / label).mkdir()
        for index in range(1, 21):
            pixels = generator.integers(0, 256, (32, 32, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(tmp_path / label / f"{index:03d}.png")
    stats = {"mean": (0.5, 0.5, 0.5), "std": (0.5, 0.5, 0.5)}
    clean, _ = load_eval_set(str(tmp_path), img_size=32, val_split=None, cache=True, **stats)
    Image.fromarray(generator.integers(0, 256, (227, 227, 3), dtype=np.uint8)).save(
        tmp_path / "a" / "000.png"
    )
    mixed, _ = load_eval_set(str(tmp_path), img_size=32, val_split=None, cache=True, **stats)
    assert len(mixed) == len(clean) + 1
    for index in range(len(clean)):  # the odd photo is image 0 of the mixed set
        assert torch.equal(mixed[index + 1][0], clean[index][0]), index
    assert mixed[0][0].shape == (3, 32, 32)
