"""Data specs and image folders: which files, which classes, which train/val split.

Only directory listings happen here (no decoding), so every layout problem is reported up front.
"""

from __future__ import annotations

import hashlib
import os
import re
import warnings
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
from torchvision.datasets.folder import IMG_EXTENSIONS, has_file_allowed_extension, make_dataset

from ..errors import UsageError

SPEC_FORMS = (
    "'digits', 'cifar10:PATH' (PATH/train and PATH/test class folders), an image-folder PATH, or (to "
    "evaluate) a labelled list FILE with one 'IMAGE_PATH, LABEL' per line"
)
CIFAR10_CLASSES = (
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
)
# A word followed by ':' that is not an existing path reads as a mistyped spec, not a folder name.
# Labels of a list file are class indices: anything this large is a typo (and overflows int64 tensors).
MAX_LABEL = 2**31
_PREFIX = re.compile(r"[A-Za-z][A-Za-z0-9_-]+")

Samples = list[tuple[str, int]]


@dataclass(frozen=True)
class DataSpec:
    """A parsed ``--data`` string: its kind and, for files on disk, the root folder (or list file)."""

    kind: Literal["digits", "cifar10", "folder", "list"]
    path: Path | None = None


def parse_data_spec(spec: str) -> DataSpec:
    """Parse ``spec`` (syntax only); ``ValueError`` naming it and the accepted forms if malformed."""
    if not isinstance(spec, str) or not spec.strip():
        raise UsageError(f"data spec must be a non-empty string, got {spec!r}; expected {SPEC_FORMS}")
    if spec == "digits":
        return DataSpec("digits")
    prefix, colon, rest = spec.partition(":")
    if colon and prefix == "cifar10":
        if not rest.strip():
            raise UsageError(f"data spec {spec!r} names no folder after 'cifar10:'; expected {SPEC_FORMS}")
        return DataSpec("cifar10", Path(rest).expanduser())
    if colon and _PREFIX.fullmatch(prefix) and not Path(spec).expanduser().exists():
        raise UsageError(f"unknown data spec {spec!r} (prefix {prefix!r}); expected {SPEC_FORMS}")
    path = Path(spec).expanduser()
    return DataSpec("list" if path.is_file() else "folder", path)


def absolute_data_spec(spec: str) -> str:
    """``spec`` with its path made absolute (``digits`` as it is), for a model card: a checkpoint then
    finds its data, or fails clearly, from any working directory, never a same-named folder elsewhere."""
    parsed = parse_data_spec(spec)
    if parsed.path is None:
        return spec
    absolute = str(parsed.path.resolve())
    return f"cifar10:{absolute}" if parsed.kind == "cifar10" else absolute


def _require_dir(path: Path, spec: str, what: str) -> None:
    if not path.exists():
        raise UsageError(f"data spec {spec!r}: {what} {path} does not exist; expected {SPEC_FORMS}")
    if not path.is_dir():
        raise UsageError(f"data spec {spec!r}: {what} {path} is not a directory; expected {SPEC_FORMS}")


def resolve_layout(spec: str) -> tuple[DataSpec, Path | None, Path | None]:
    """(parsed spec, train folder, val folder); val is None for a single folder to split.

    Folder specs accept ``ROOT/train`` plus ``ROOT/val`` (preferred) or ``ROOT/test``, or a ROOT that
    directly holds class folders. Both folders are None for ``digits``. Checks existence only.
    """
    parsed = parse_data_spec(spec)
    if parsed.path is None or parsed.kind == "list":
        return parsed, None, None
    root = parsed.path
    _require_dir(root, spec, "folder")
    if parsed.kind == "cifar10":
        _require_dir(root / "train", spec, "CIFAR-10 train folder")
        _require_dir(root / "test", spec, "CIFAR-10 test folder")
        return parsed, root / "train", _apart(root / "train", root / "test", spec)
    if _holds_folders(root / "train"):  # a class named "train" holds images, a split class folders
        for name in ("val", "test"):
            if (root / name).is_dir():
                return parsed, root / "train", _apart(root / "train", root / name, spec)
        raise UsageError(
            f"data spec {spec!r}: {root} has a train/ folder but no val/ or test/ folder beside it; "
            "expected ROOT/train and ROOT/val (or ROOT/test), or ROOT holding one folder per class"
        )
    return parsed, root, None


def _holds_folders(path: Path) -> bool:
    """Whether ``path`` is a folder with a (non-hidden) folder in it."""
    if not path.is_dir():
        return False
    with os.scandir(path) as entries:
        return any(entry.is_dir() and not entry.name.startswith(".") for entry in entries)


def _apart(train: Path, val: Path, spec: str) -> Path:
    """``val``, refused when it is ``train`` (a link) or inside it, or holds it: scores on training images."""
    a, b = train.resolve(), val.resolve()
    if a == b or a in b.parents or b in a.parents:
        how = "the same folder as" if a == b else "nested with"
        raise UsageError(
            f"data spec {spec!r}: the validation folder {val} is {how} the training folder {train} "
            f"(resolved: {b} and {a}); its scores would be on training images"
        )
    return val


def fixed_validation(spec: str) -> str | None:
    """What holds ``spec``'s validation images when they are given rather than drawn (a val/ or test/
    folder, a list file); None where ``val_split`` and the split seed draw them (digits, one folder).

    A ``--val-split`` or split seed given for such data would change nothing, so the CLI refuses it.
    """
    parsed, _, val_dir = resolve_layout(spec)
    if parsed.kind == "list":
        return f"{spec!r} is a list file, evaluated whole"
    if val_dir is not None:
        return f"{spec!r} has its validation images in {val_dir}"
    return None


def _hidden(name: str) -> bool:
    """Names a file manager or notebook leaves (``.Trash-1000``, ``.ipynb_checkpoints``, ``._x.jpg``)."""
    return name.startswith(".")


def _refuse_links_into(directory: Path) -> None:
    """Refuse a linked folder inside ``directory`` that leads back into it (``a/up -> ..``): followed,
    as folders of links to images elsewhere need, it would list images again, under another class."""
    root = directory.resolve()
    for parent, folders, _ in os.walk(directory):  # links are seen here, not followed
        for name in folders:
            link = Path(parent) / name
            if link.is_symlink():
                target = link.resolve()
                if target == root or root in target.parents or target in root.parents:
                    raise UsageError(
                        f"{link} links to {target}, inside the data folder {directory} (or above it): its "
                        "images would be listed twice, under another class; remove the link"
                    )


def scan_folder(directory: Path, classes: tuple[str, ...] | None = None) -> tuple[tuple[str, ...], Samples]:
    """Class names and (path, label) samples of an ImageFolder-style ``directory``.

    As torchvision's ``ImageFolder``, but hidden folders and files (names starting with ".") are
    neither classes nor images. ``classes``, when given, must match the folder's own classes (a val
    folder against its train folder). An empty class folder or a folder with no images raises
    ``ValueError`` naming it.
    """
    try:
        found = sorted(
            entry.name for entry in os.scandir(directory) if entry.is_dir() and not _hidden(entry.name)
        )
    except FileNotFoundError:
        found = []
    if not found:
        raise UsageError(f"{directory} holds no class folders; expected one sub-folder of images per class")
    class_to_idx = {name: index for index, name in enumerate(found)}

    def visible_image(path: str) -> bool:
        parts = Path(path).relative_to(directory).parts
        return not any(_hidden(part) for part in parts) and has_file_allowed_extension(path, IMG_EXTENSIONS)

    if classes is not None and tuple(found) != classes:
        missing = sorted(set(classes) - set(found))
        extra = sorted(set(found) - set(classes))
        raise UsageError(
            f"class folders of {directory} differ from the training classes: "
            f"missing {missing or 'none'}, unexpected {extra or 'none'}"
        )
    _refuse_links_into(directory)
    samples = make_dataset(directory, class_to_idx, is_valid_file=visible_image, allow_empty=True)
    if not samples:
        raise UsageError(
            f"no images in the class folders of {directory}; expected files ending in "
            f"{', '.join(IMG_EXTENSIONS)}"
        )
    counts = Counter(label for _, label in samples)
    empty = [str(directory / name) for name in found if counts[class_to_idx[name]] == 0]
    if empty:
        raise UsageError(
            f"empty class folder(s) with no images: {', '.join(empty)}; every class needs at least one "
            f"image ({', '.join(IMG_EXTENSIONS)})"
        )
    return tuple(found), samples


def split_listing(spec: str) -> str:
    """What a single folder's held-out split is drawn from: its image count and a hash of their paths
    ("" for data whose validation images are given, or digits, which never change).

    The split shuffles each class by the files' positions, so one file added or removed redraws it:
    a run records this, and evaluating or resuming it on a changed folder is refused.
    """
    parsed, train_dir, val_dir = resolve_layout(spec)
    if parsed.kind != "folder" or train_dir is None or val_dir is not None:
        return ""
    _, samples = scan_folder(train_dir)
    names = sorted(Path(path).relative_to(train_dir).as_posix() for path, _ in samples)
    listing = chr(10).join(names).encode("utf-8", "surrogateescape")  # names as the disk has them
    return f"{len(names)}:{hashlib.sha256(listing).hexdigest()[:16]}"


def check_split_listing(spec: str, recorded: str, whose: str) -> None:
    """Refuse to draw ``whose`` held-out split of ``spec`` again if the folder changed since ``recorded``
    (:func:`split_listing`; "" recorded nothing: nothing to check)."""
    if not recorded:
        return
    now = split_listing(spec)
    if now != recorded:
        then_count, now_count = recorded.split(":")[0], now.split(":")[0] if now else "no"
        raise UsageError(
            f"{whose} held out part of {spec!r} when it held {then_count} image files; it holds "
            f"{now_count}{' other' if then_count == now_count else ''} files now, and the split depends on "
            "every file: drawn again, it would mix in training images. Restore the folder, or evaluate "
            "on other images with --data"
        )


def check_val_split(val_split: float) -> None:
    """``ValueError`` unless ``val_split`` is a number strictly between 0 and 1."""
    if isinstance(val_split, bool) or not isinstance(val_split, int | float) or not 0.0 < val_split < 1.0:
        raise UsageError(f"val_split must be a number in (0, 1), got {val_split!r}")


def stratified_split(
    labels: torch.Tensor, val_fraction: float, seed: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Train and val indices holding ``val_fraction`` of every class, shuffled by ``seed``.

    Each class gives ``round(n * val_fraction)`` images to val, at least 1 and at most n - 1 when it
    has two or more, so tiny folders still get a val set and keep every class in training.
    """
    check_val_split(val_fraction)
    generator = torch.Generator().manual_seed(seed)
    train_parts: list[torch.Tensor] = []
    val_parts: list[torch.Tensor] = []
    for label in labels.unique(sorted=True):
        members = (labels == label).nonzero(as_tuple=True)[0]
        members = members[torch.randperm(len(members), generator=generator)]
        n_val = round(len(members) * val_fraction)
        if len(members) >= 2:
            n_val = min(max(n_val, 1), len(members) - 1)
        val_parts.append(members[:n_val])
        train_parts.append(members[n_val:])
    train_idx, val_idx = torch.cat(train_parts), torch.cat(val_parts)
    # Interleave classes so the datasets are not ordered by label.
    train_idx = train_idx[torch.randperm(len(train_idx), generator=generator)]
    val_idx = val_idx[torch.randperm(len(val_idx), generator=generator)]
    return train_idx, val_idx


def folder_splits(
    spec: str, val_split: float | None, seed: int
) -> tuple[DataSpec, tuple[str, ...], Samples, Samples]:
    """(parsed spec, classes, train samples, val samples) for a folder or ``cifar10:`` spec.

    ``val_split`` None takes a single folder whole, as validation images (no training images).
    """
    parsed, train_dir, val_dir = resolve_layout(spec)
    if train_dir is None:
        raise UsageError(f"data spec {spec!r} is not a folder spec; expected {SPEC_FORMS}")
    classes, samples = scan_folder(train_dir)
    if parsed.kind == "cifar10" and classes != CIFAR10_CLASSES:
        raise UsageError(
            f"data spec {spec!r}: {train_dir} has classes {list(classes)}; "
            f"CIFAR-10 has {list(CIFAR10_CLASSES)}"
        )
    if val_dir is not None:
        _, val_samples = scan_folder(val_dir, classes)
        return parsed, classes, samples, val_samples
    if val_split is None:
        return parsed, classes, [], samples
    labels = torch.tensor([label for _, label in samples], dtype=torch.long)
    train_idx, val_idx = stratified_split(labels, val_split, seed)
    if len(val_idx) == 0:
        raise UsageError(
            f"data spec {spec!r}: no class folder of {train_dir} has 2+ images, so val_split {val_split} "
            "leaves no validation images; add images or use ROOT/train and ROOT/val folders"
        )
    return (
        parsed,
        classes,
        [samples[i] for i in train_idx.tolist()],
        [samples[i] for i in val_idx.tolist()],
    )


def read_labelled_list(path: Path) -> Samples:
    """(image path, label) samples of a list file: one ``IMAGE_PATH, LABEL`` per line.

    This is the ``dataset.txt`` format of ImageNet validation subsets: paths are relative to the list
    file's folder, labels are 0-based class indices; blank lines and ``#`` comments are ignored. A
    malformed line or a listed file that does not exist raises ``ValueError`` naming it.
    """
    samples: Samples = []
    missing: list[str] = []
    try:  # utf-8-sig: a byte-order mark (Windows editors write one) is not part of the first path
        lines = path.read_text(encoding="utf-8-sig").splitlines()
    except UnicodeDecodeError:
        raise UsageError(
            f"{path} is not a UTF-8 text file of 'IMAGE_PATH, LABEL' lines (an image? --data takes such a "
            "list, an image folder or a dataset name)"
        ) from None
    for number, line in enumerate(lines, start=1):
        text = line.strip()
        if not text or text.startswith("#"):
            continue
        name, comma, label = text.rpartition(",")
        if not comma or not name.strip() or not (label.strip().isascii() and label.strip().isdigit()):
            raise UsageError(
                f"{path}:{number}: {text!r} is not 'IMAGE_PATH, LABEL' (LABEL a 0-based class index)"
            )
        if int(label) >= MAX_LABEL:
            raise UsageError(f"{path}:{number}: label {label.strip()} is too large for a class index")
        image = path.parent / name.strip()
        if not image.is_file():
            missing.append(str(image))
        samples.append((str(image), int(label)))
    if missing:
        more = f" and {len(missing) - 3} more" if len(missing) > 3 else ""
        raise UsageError(f"{path} lists image files that do not exist: {', '.join(missing[:3])}{more}")
    labels: dict[str, set[int]] = {}
    for listed_image, class_index in samples:
        labels.setdefault(os.path.normpath(listed_image), set()).add(class_index)
    conflicting = next((name for name, found in labels.items() if len(found) > 1), None)
    if conflicting is not None:
        found = ", ".join(map(str, sorted(labels[conflicting])))
        raise UsageError(f"{path} lists {conflicting} with different labels ({found}); an image has one")
    listed = Counter(os.path.normpath(image) for image, _ in samples)
    repeats = len(samples) - len(listed)
    if repeats:
        first = next(image for image, count in listed.items() if count > 1)
        warnings.warn(
            f"{path} lists {repeats} image(s) more than once (e.g. {first}); each line counts, so they "
            "weigh more in scores and calibration",
            stacklevel=2,
        )
    if not samples:
        raise UsageError(f"{path} lists no images; expected one 'IMAGE_PATH, LABEL' per line")
    return samples
