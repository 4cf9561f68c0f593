"""Evaluation: hand-checked metrics, the evaluate loop, plots, and the ``mobilenets eval`` command."""

from __future__ import annotations

import argparse
import importlib
import json
import math
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from mobilenets import create_model
from mobilenets.cli import eval as eval_cli
from mobilenets.data import card as card_data_module
from mobilenets.data import splits as data_module
from mobilenets.evaluation.evaluate import evaluate
from mobilenets.evaluation.metrics import ClassificationMetrics
from mobilenets.evaluation.plots import plot_confusion_matrix
from mobilenets.training.plots import plot_training_curves, read_metrics_log
from mobilenets.weights.card import ModelCard
from mobilenets.weights.files import write_safetensors

from .conftest import imagenet_list

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def is_png(path: Path) -> bool:
    return path.is_file() and path.stat().st_size > 1000 and path.read_bytes()[:8] == PNG_MAGIC


# --- metrics ------------------------------------------------------------------------------------------


def test_metrics_hand_computed_three_classes() -> None:
    # predictions (argmax): 0, 1, 1, 2, 0 ; labels: 0, 1, 0, 2, 2
    logits = torch.tensor(
        [[3.0, 1.0, 0.0], [0.0, 2.0, 1.0], [1.0, 2.0, 0.0], [0.0, 0.5, 4.0], [2.0, 0.0, 1.0]]
    )
    labels = torch.tensor([0, 1, 0, 2, 2])
    metrics = ClassificationMetrics(3)
    metrics.update(logits, labels)
    expected = torch.tensor([[1, 1, 0], [0, 1, 0], [1, 0, 1]])
    assert metrics.confusion.dtype == torch.int64
    assert torch.equal(metrics.confusion, expected)
    assert metrics.num_images == 5
    assert metrics.top1 == pytest.approx(3 / 5)
    assert metrics.topk == 3 and metrics.top5 == 1.0  # top-min(5, 3) of 3 classes always hits
    assert metrics.per_class_accuracy.tolist() == pytest.approx([0.5, 1.0, 0.5])
    assert metrics.mean_loss is None


def test_metrics_top5_of_seven_classes_and_absent_class() -> None:
    logits = torch.tensor(
        [
            [0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0],  # label 1 ranks 6th -> top-5 miss
            [0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0],  # label 2 ranks 5th -> top-5 hit
            [0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0],  # label 6 ranks 1st -> top-1 hit
            [9.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0],  # label 1 ranks 7th -> miss
        ]
    )
    metrics = ClassificationMetrics(7)
    metrics.update(logits, torch.tensor([1, 2, 6, 1]))
    assert metrics.topk == 5
    assert metrics.top1 == pytest.approx(1 / 4)
    assert metrics.top5 == pytest.approx(2 / 4)
    per_class = metrics.per_class_accuracy
    assert per_class[1] == 0.0 and per_class[2] == 0.0 and per_class[6] == 1.0
    assert math.isnan(per_class[0])  # no images of class 0
    result = metrics.to_dict([f"c{i}" for i in range(7)])
    json.dumps(result, allow_nan=False)
    assert result["per_class"]["c0"] is None and result["per_class"]["c6"] == 1.0
    assert result["per_class_images"]["c1"] == 2
    assert result["top1"] == 0.25 and result["top5"] == 0.5 and result["num_images"] == 4
    assert result["confusion"][1] == [1, 0, 0, 0, 0, 0, 1]  # the two class-1 images: predicted 6 and 0
    assert result["confusion"][2] == [0, 0, 0, 0, 0, 0, 1] and result["confusion"][3] == [0] * 7


def test_metrics_loss_scalar_and_per_image() -> None:
    metrics = ClassificationMetrics(2)
    metrics.update(torch.zeros(2, 2), torch.tensor([0, 1]), loss=torch.tensor(1.0))  # mean over 2
    metrics.update(torch.zeros(3, 2), torch.tensor([0, 1, 1]), loss=torch.tensor([2.0, 3.0, 4.0]))
    metrics.update(torch.zeros(1, 2), torch.tensor([0]))  # no loss: not in the mean
    assert metrics.mean_loss == pytest.approx((1.0 * 2 + 9.0) / 5)
    assert metrics.num_images == 6


def test_metrics_empty_is_nan_and_json_null() -> None:
    metrics = ClassificationMetrics(4)
    assert math.isnan(metrics.top1) and math.isnan(metrics.top5)
    assert json.loads(json.dumps(metrics.to_dict(), allow_nan=False))["top1"] is None


@pytest.mark.parametrize("loss", [float("nan"), float("inf")])
def test_metrics_non_finite_loss_is_json_null(loss: float) -> None:
    """A model whose logits overflow gives an infinite or NaN loss: JSON has no such number."""
    metrics = ClassificationMetrics(2)
    metrics.update(torch.zeros(2, 2), torch.tensor([0, 1]), loss=torch.tensor(loss))
    assert json.loads(json.dumps(metrics.to_dict(), allow_nan=False))["loss"] is None


def test_metrics_state_tensor_sums_like_one_process() -> None:
    torch.manual_seed(1)
    logits, labels = torch.randn(40, 12), torch.randint(0, 12, (40,))
    losses = torch.rand(40)
    whole = ClassificationMetrics(12)
    whole.update(logits, labels, loss=losses)
    ranks = [ClassificationMetrics(12) for _ in range(3)]
    for rank, part in enumerate(torch.arange(40).tensor_split(3)):
        ranks[rank].update(logits[part], labels[part], loss=losses[part])
    summed = sum((m.state_tensor() for m in ranks), torch.zeros(ranks[0].state_size, dtype=torch.float64))
    gathered = ClassificationMetrics(12)
    gathered.load_state_tensor(summed)  # what the lead does after dist.all_reduce(SUM)
    merged = ClassificationMetrics(12)
    for m in ranks:
        merged.merge(m)
    for combined in (gathered, merged):
        assert torch.equal(combined.confusion, whole.confusion)
        assert combined.top5 == whole.top5 and combined.num_images == 40
        assert combined.mean_loss == pytest.approx(whole.mean_loss)


@pytest.mark.parametrize(
    ("logits", "labels", "message"),
    [
        (torch.zeros(2, 4), torch.tensor([0, 1]), "logits must be a"),
        (torch.zeros(2, 3), torch.tensor([0, 3]), "label 3 is out of range"),
        (torch.zeros(2, 3), torch.tensor([-1, 0]), "label -1 is out of range"),
        (torch.zeros(2, 3), torch.tensor([0.0, 1.0]), "integer tensor"),
        (torch.zeros(2, 3), torch.tensor([0, 1, 2]), "labels must be a"),
    ],
)
def test_metrics_rejects_bad_batches(logits: torch.Tensor, labels: torch.Tensor, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ClassificationMetrics(3).update(logits, labels)


def test_metrics_rejects_bad_settings() -> None:
    with pytest.raises(ValueError, match="num_classes"):
        ClassificationMetrics(0)
    with pytest.raises(ValueError, match="expected 3 class names"):
        ClassificationMetrics(3).to_dict(["a", "b"])
    with pytest.raises(ValueError, match="state must be a"):
        ClassificationMetrics(3).load_state_tensor(torch.zeros(5))
    with pytest.raises(ValueError, match="cannot merge"):
        ClassificationMetrics(3).merge(ClassificationMetrics(4))


# --- evaluate -----------------------------------------------------------------------------------------


def _tiny_set(n: int = 50, size: int = 32, classes: int = 10) -> TensorDataset:
    generator = torch.Generator().manual_seed(0)
    return TensorDataset(
        torch.randn(n, 3, size, size, generator=generator),
        torch.randint(0, classes, (n,), generator=generator),
    )


def test_evaluate_matches_a_manual_pass_and_restores_mode() -> None:
    model = create_model("mobilenet_v3_small", width_mult=0.35, num_classes=10)
    dataset = _tiny_set()
    model.train()
    metrics = evaluate(
        model, DataLoader(dataset, batch_size=25), device="cpu", criterion=nn.CrossEntropyLoss()
    )
    assert model.training  # mode restored
    images, labels = dataset.tensors
    model.eval()
    with torch.no_grad():
        logits = model(images.contiguous(memory_format=torch.channels_last))  # NCHW is far slower on CPU
    assert isinstance(logits, torch.Tensor)
    assert metrics.num_images == 50
    assert metrics.top1 == pytest.approx(float((logits.argmax(1) == labels).float().mean()))
    assert metrics.mean_loss == pytest.approx(float(nn.functional.cross_entropy(logits, labels)), rel=1e-4)
    assert int(metrics.confusion.sum(dim=1)[3]) == int((labels == 3).sum())


def test_evaluate_autocast_and_plain_layout() -> None:
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 4))
    dataset = _tiny_set(n=20, size=8, classes=4)
    metrics = evaluate(
        model,
        DataLoader(dataset, batch_size=7),
        device="cpu",
        channels_last=False,
        autocast_dtype=torch.bfloat16,
    )
    assert metrics.num_classes == 4 and metrics.num_images == 20
    assert 0.0 <= metrics.top1 <= metrics.top5 <= 1.0


def test_evaluate_flip_tta_scores_the_mean_of_image_and_mirror() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 4))  # not mirror-symmetric
    dataset = _tiny_set(n=60, size=8, classes=4)
    images, labels = dataset.tensors
    with torch.no_grad():
        plain, mirrored = model(images), model(images.flip(-1))
    loader = DataLoader(dataset, batch_size=16)
    loss = nn.CrossEntropyLoss()
    tta = evaluate(model, loader, device="cpu", criterion=loss, flip_tta=True)
    single = evaluate(model, loader, device="cpu", criterion=loss)
    mean = (plain + mirrored) / 2
    assert tta.top1 == pytest.approx(float((mean.argmax(1) == labels).float().mean()))
    assert tta.mean_loss == pytest.approx(float(nn.functional.cross_entropy(mean, labels)), rel=1e-5)
    assert single.mean_loss == pytest.approx(float(nn.functional.cross_entropy(plain, labels)), rel=1e-5)


def test_shifted_moves_the_image_and_reflects_the_border() -> None:
    from mobilenets.evaluation.evaluate import shifted

    image = torch.arange(2 * 5 * 6, dtype=torch.float32).reshape(1, 2, 5, 6)
    down = shifted(image, 2, 0)  # row y shows what row y - 2 showed
    assert down.shape == image.shape
    assert torch.equal(down[..., 2:, :], image[..., :3, :])
    assert torch.equal(down[..., 0, :], image[..., 2, :]) and torch.equal(down[..., 1, :], image[..., 1, :])
    left = shifted(image, 0, -1)  # column x shows what column x + 1 showed
    assert torch.equal(left[..., :5], image[..., 1:]) and torch.equal(left[..., 5], image[..., 4])
    assert shifted(image, 0, 0) is image


def test_evaluate_shift_tta_scores_the_mean_of_the_moved_and_mirrored_views() -> None:
    from mobilenets.evaluation.evaluate import shifted

    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 4))  # sees every move
    dataset = _tiny_set(n=60, size=8, classes=4)
    images, labels = dataset.tensors
    moves = [(0, 0), (1, 0), (-1, 0), (0, 1), (0, -1)]
    with torch.no_grad():
        moved = [model(shifted(images, dy, dx)) for dy, dx in moves]
        mirrored = [model(shifted(images, dy, dx).flip(-1)) for dy, dx in moves]
    loader = DataLoader(dataset, batch_size=16)
    for flip, logits in ((False, moved), (True, moved + mirrored)):
        tta = evaluate(
            model, loader, device="cpu", criterion=nn.CrossEntropyLoss(), flip_tta=flip, shift_tta=1
        )
        mean = torch.stack(logits).mean(0)
        assert tta.top1 == pytest.approx(float((mean.argmax(1) == labels).float().mean()))
        assert tta.mean_loss == pytest.approx(float(nn.functional.cross_entropy(mean, labels)), rel=1e-5)
    with pytest.raises(ValueError, match="smaller than the images' side"):
        evaluate(model, loader, device="cpu", shift_tta=8)
    with pytest.raises(ValueError, match="shift_tta must be a whole number"):
        evaluate(model, loader, device="cpu", shift_tta=-1)


def test_evaluate_rejects_empty_loader_and_wrong_device() -> None:
    model = nn.Sequential(nn.Flatten(), nn.Linear(12, 3))
    with pytest.raises(ValueError, match="no images"):
        evaluate(model, [], device="cpu")

    class Unreadable(list[Any]):
        skipped = ("a.jpg", "b.jpg")

    with pytest.raises(ValueError, match="none of the 2 image files could be read"):
        evaluate(model, Unreadable(), device="cpu")
    with pytest.raises(ValueError, match="model is on cpu"):
        evaluate(model, [], device="meta")


def test_evaluate_refuses_non_finite_logits() -> None:
    """torch.topk ranks NaN first, so a broken model (a NaN weight) would score a plausible top-1."""
    model = nn.Sequential(nn.Flatten(), nn.Linear(12, 3))
    with torch.no_grad():
        model[1].bias[1] = float("nan")
    batch = (torch.randn(4, 3, 2, 2), torch.tensor([0, 1, 2, 1]))
    with pytest.raises(ValueError, match=r"NaN or infinite logits for 4 of 4 images in a batch"):
        evaluate(model, [batch], device="cpu")
    # An overflow: with every class at +inf, topk's order is arbitrary (it scored 9.5% on digits, with
    # exit 0, where `predict` refused the same weights); one infinite class is refused all the same.
    for overflowed in (slice(None), 1):
        with torch.no_grad():
            model[1].bias.zero_()
            model[1].bias[overflowed] = float("inf")
        with pytest.raises(ValueError, match=r"NaN or infinite logits for 4 of 4 images"):
            evaluate(model, [batch], device="cpu")


# --- plots --------------------------------------------------------------------------------------------


def _write_log(path: Path, records: Sequence[dict[str, Any]], tail: str = "") -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in records) + tail)


def test_training_curves_tolerate_missing_keys_resume_and_torn_line(tmp_path: Path) -> None:
    log = tmp_path / "metrics.jsonl"
    records = [
        {"epoch": 1, "train_loss": 2.0, "val_top1": 0.3, "lr": 0.1},
        {
            "epoch": 2,
            "train_loss": 1.5,
            "val_loss": 1.6,
            "train_top1": 0.5,
            "val_top1": 0.45,
            "val_top5": 0.9,
        },
        {
            "epoch": 2,
            "train_loss": 1.4,
            "val_loss": 1.5,
            "train_top1": 0.55,
            "val_top1": 0.5,
            "val_top5": 0.92,
        },
        {"epoch": 3, "train_loss": 1.1, "val_top1": 0.6},
    ]
    _write_log(log, records, tail='{"epoch": 4, "train_lo')
    kept = read_metrics_log(log)
    assert [r["epoch"] for r in kept] == [1, 2, 3] and kept[1]["val_top1"] == 0.5
    written = plot_training_curves(log, tmp_path / "plots")
    assert [p.name for p in written] == ["loss.png", "accuracy.png"]
    assert all(is_png(p) for p in written)


def test_training_curves_errors(tmp_path: Path) -> None:
    log = tmp_path / "metrics.jsonl"
    log.write_text('{"epoch": 1, "train_loss": 1.0}\nnot json\n{"epoch": 2}\n')
    with pytest.raises(ValueError, match=r"metrics.jsonl:2 is not valid JSON"):
        plot_training_curves(log, tmp_path)
    log.write_text('{"epoch": 1, "lr": 0.1}\n')
    with pytest.raises(ValueError, match="none of the keys"):
        plot_training_curves(log, tmp_path)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        plot_training_curves(tmp_path / "missing.jsonl", tmp_path)


@pytest.mark.parametrize(("num_classes", "normalize"), [(10, False), (10, True), (120, True)])
def test_confusion_plot(tmp_path: Path, num_classes: int, normalize: bool) -> None:
    generator = torch.Generator().manual_seed(0)
    confusion = torch.randint(0, 20, (num_classes, num_classes), generator=generator)
    confusion[0] = 0  # an empty row must not divide by zero
    classes = [f"class_{i}" for i in range(num_classes)]
    path = plot_confusion_matrix(confusion, classes, tmp_path / "cm.png", normalize=normalize)
    assert path == tmp_path / "cm.png" and is_png(path)


def test_confusion_plot_rejects_bad_input(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="square"):
        plot_confusion_matrix(torch.zeros(2, 3), ["a", "b"], tmp_path / "x.png")
    with pytest.raises(ValueError, match="expected 2 class names"):
        plot_confusion_matrix(torch.zeros(2, 2), ["a"], tmp_path / "x.png")


# --- the eval command ---------------------------------------------------------------------------------


def run_eval(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    """Run ``mobilenets eval`` in-process; through cli.main once it is registered there."""
    cli_main = importlib.import_module("mobilenets.cli.main")  # the package re-exports main(), shadowing it
    if eval_cli in cli_main.COMMANDS:
        code = cli_main.main(["eval", *argv])
    else:  # same dispatch and error handling as cli.main.main
        parser = argparse.ArgumentParser(prog="mobilenets")
        eval_cli.add_parser(parser.add_subparsers(dest="command", required=True))
        args = parser.parse_args(["eval", *argv])
        try:
            code = int(args.run(args) or 0)
        except (ValueError, TypeError, FileNotFoundError) as error:
            print(f"mobilenets eval: error: {error}", file=sys.stderr)
            code = 2
    captured = capsys.readouterr()
    return code, captured.out, captured.err


DIGITS = tuple(str(i) for i in range(10))


class FakeLoader:
    def __init__(self, dataset: TensorDataset, batch_size: int) -> None:
        self.inner = DataLoader(dataset, batch_size=batch_size)
        self.skipped: list[str] = ["bad.jpg"]

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        return iter(self.inner)


@pytest.fixture
def fake_checkpoint(tmp_path: Path) -> Path:
    """A real checkpoint file of an untrained tiny model, with a card saying it was trained on digits."""
    checkpoint = tmp_path / "run" / "best.safetensors"
    kwargs = {"width_mult": 0.35, "num_classes": 10}
    model = create_model("mobilenet_v3_small", **kwargs).eval()
    card = ModelCard(
        model="mobilenet_v3_small",
        model_kwargs=kwargs,
        classes=DIGITS,
        mean=(0.5, 0.5, 0.5),
        std=(0.5, 0.5, 0.5),
        img_size=32,
        data="digits",
        val_split=0.1,
        seed=0,
    )
    write_safetensors(checkpoint, model.state_dict(), card.to_metadata())
    return checkpoint


@pytest.fixture
def fake_contracts(monkeypatch: pytest.MonkeyPatch, fake_checkpoint: Path) -> Path:
    """``fake_checkpoint`` plus a fake data layer: 30 random images, one skipped file, and for any spec
    but "digits" a class list that differs from the checkpoint's."""

    def load_eval_set(spec: str, **kwargs: Any) -> tuple[TensorDataset, tuple[str, ...]]:
        # The checkpoint's own data is split as its run split it; another folder is taken whole.
        assert kwargs["img_size"] == 32 and kwargs["val_split"] == (0.1 if spec == "digits" else None)
        assert kwargs["seed"] == 0
        classes = DIGITS if spec == "digits" else (*DIGITS[:9], "ten")
        return _tiny_set(n=30), classes

    def build_loader(
        dataset: TensorDataset, *, batch_size: int, train: bool, seed: int, workers: int = 0
    ) -> FakeLoader:
        assert not train and workers == 0
        return FakeLoader(dataset, batch_size)

    monkeypatch.setattr(card_data_module, "load_eval_set", load_eval_set)
    monkeypatch.setattr(data_module, "build_loader", build_loader, raising=False)
    return fake_checkpoint


def test_eval_cli_json(fake_contracts: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    confusion = tmp_path / "out" / "cm.png"
    code, out, err = run_eval(
        ["--checkpoint", str(fake_contracts), "--json", "--batch-size", "8", "--confusion", str(confusion)],
        capsys,
    )
    assert code == 0, err
    report = json.loads(out)  # exactly one JSON object on stdout
    assert report["num_images"] == 30 and 0.0 <= report["top1"] <= report["top5"] <= 1.0
    assert set(report["per_class"]) == set(DIGITS)
    assert report["checkpoint"] == str(fake_contracts) and report["data"] == "digits"
    assert report["flip_tta"] is False and report["shift_tta"] == 0
    assert report["skipped"] == 1 and "skipped 1" in err
    assert report["confusion_png"] == str(confusion) and is_png(confusion)


def test_eval_cli_table_and_default_confusion_path(
    fake_contracts: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run_eval(["--checkpoint", str(fake_contracts), "--data", "digits"], capsys)
    assert code == 0, err
    assert "top-1" in out and "top-5" in out and "per-class accuracy" in out
    assert "test-time augmentation" not in out
    assert is_png(fake_contracts.with_name("best_confusion.png"))
    code, out, err = run_eval(["--checkpoint", str(fake_contracts), "--flip-tta"], capsys)
    assert code == 0, err
    assert "test-time augmentation" in out and "mean of image and mirror" in out
    code, out, err = run_eval(["--checkpoint", str(fake_contracts), "--flip-tta", "--shift-tta", "2"], capsys)
    assert code == 0, err
    assert "mean of image, its ±2 px moves and their mirrors" in out


def test_eval_cli_failures(fake_contracts: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run_eval(
        ["--checkpoint", str(fake_contracts), "--data", "other", "--no-confusion"], capsys
    )
    assert code == 2 and out == ""
    assert "not in the data: '9'" in err and "not in the checkpoint: 'ten'" in err
    assert len(err.strip().splitlines()) == 1
    code, _, err = run_eval(["--checkpoint", str(tmp_path / "nope.safetensors")], capsys)
    assert code == 2 and "nope.safetensors" in err
    code, _, err = run_eval(["--checkpoint", str(fake_contracts), "--batch-size", "0"], capsys)
    assert code == 2 and "--batch-size must be >= 1, got 0" in err
    code, _, err = run_eval(["--checkpoint", str(fake_contracts), "--shift-tta", "-1"], capsys)
    assert code == 2 and "--shift-tta must be >= 0 pixels, got -1" in err


def test_class_mismatch_messages() -> None:
    assert eval_cli.class_mismatch(["a", "b"], ["a", "b"]) is None
    assert eval_cli.class_mismatch(["a", "b"], ["b", "a"]) is None  # matched by name
    assert eval_cli.class_mismatch(["a", "b", "c"], ["c", "a"]) is None  # some of the classes
    assert eval_cli.class_lookup(["a", "b", "c"], ["a", "c"]).tolist() == [0, 2]  # type: ignore[union-attr]
    assert eval_cli.class_lookup(["a", "b"], ["a", "b"]) is None
    lookup = torch.tensor([1, 0])
    assert eval_cli._Relabelled(FakeLoader(_tiny_set(4, classes=2), 2), lookup).skipped == ["bad.jpg"]
    from mobilenets.weights.presets import imagenet_classes

    imagenet = imagenet_classes()
    message = eval_cli.class_mismatch(imagenet, ["n01440764", "n01443537", "stray"]) or ""
    assert "not in the checkpoint: 'stray'" in message and "'tench'" not in message  # found by its ID
    assert "'great white shark'" in message  # the third class is not in the data
    message = eval_cli.class_mismatch(imagenet, ["n01440764", "tench"]) or ""
    assert "classes 'tench' each have two folders" in message
    message = eval_cli.class_mismatch(["a", "b", "c"], ["a", "d"]) or ""
    assert "3 classes, the data 2" in message and "not in the data: 'b', 'c'" in message
    assert "not in the checkpoint: 'd'" in message and "labelled list file" in message


def test_eval_cli_scores_some_classes_in_another_order_by_name(
    fake_checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A folder of two of the checkpoint's ten classes: its labels are the checkpoint's, by name; an
    unwritable default plot is a warning, not a lost evaluation."""
    from PIL import Image

    counts = {"7": 3, "2": 2}
    for name, count in counts.items():
        (tmp_path / "some" / name).mkdir(parents=True)
        for index in range(count):
            Image.new("RGB", (32, 32), (40 * index, 90, 200)).save(tmp_path / "some" / name / f"{index}.png")
    fake_checkpoint.with_name("best_confusion.png").mkdir()  # the default plot cannot be written
    argv = ["--checkpoint", str(fake_checkpoint), "--data", str(tmp_path / "some"), "--json"]
    code, out, err = run_eval(argv, capsys)
    assert code == 0, err
    report = json.loads(out)
    assert report["classes"] == list(DIGITS) and report["num_images"] == 5
    assert report["per_class_images"] == {name: counts.get(name, 0) for name in DIGITS}
    assert report["per_class"]["0"] is None  # no image of class 0
    assert "warning: cannot write the confusion plot" in err and report["confusion_png"] is None


def test_eval_cli_reads_imagenet_class_folders_named_by_wordnet_id(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """ImageNet's own layout names class folders n01440764 and so on: packaged ImageNet weights score
    such a folder (here 20 shared photos in their classes' folders) exactly as the labelled list."""
    import shutil

    from mobilenets.weights.presets import imagenet_classes, imagenet_synsets

    listing = imagenet_list()
    assert len(imagenet_synsets()) == len(set(imagenet_synsets())) == len(imagenet_classes())
    assert imagenet_synsets()[0] == "n01440764" and list(imagenet_synsets()) == sorted(imagenet_synsets())
    lines = listing.read_text().splitlines()[:20]
    (tmp_path / "list.txt").write_text("".join(f"{listing.parent / line}\n" for line in lines))
    for line in lines:
        name, label = line.rsplit(",", 1)
        folder = tmp_path / "folders" / imagenet_synsets()[int(label)]
        folder.mkdir(parents=True, exist_ok=True)
        shutil.copy(listing.parent / name, folder)
    reports = []
    for data in (tmp_path / "folders", tmp_path / "list.txt"):
        argv = ["--pretrained", "--model", "mobilenet_v2", "--data", str(data), "--json", "--no-confusion"]
        code, out, err = run_eval(argv, capsys)
        assert code == 0, err
        reports.append(json.loads(out))
    by_folders, by_list = reports
    assert by_folders["num_images"] == 20 and by_folders["top1"] == by_list["top1"] >= 0.5
    assert by_folders["per_class_images"] == by_list["per_class_images"]


def test_eval_cli_with_the_real_digits_split(
    fake_checkpoint: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run_eval(["--checkpoint", str(fake_checkpoint), "--json", "--no-confusion"], capsys)
    assert code == 0, err
    report = json.loads(out)
    assert report["num_images"] == 179 and report["skipped"] == 0  # digits' 10% held-out split
    assert sum(report["per_class_images"].values()) == 179 and report["confusion_png"] is None
    assert not fake_checkpoint.with_name("best_confusion.png").exists()


def test_eval_cli_refuses_split_options_the_data_would_ignore(
    fake_checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--val-split and --seed draw the held-out images of one folder or digits; data that brings its own
    (a val/ folder, a list file) would ignore them, so they are refused rather than accepted."""
    for folder in ("train/a", "val/a"):
        (tmp_path / "two" / folder).mkdir(parents=True)
    listed = tmp_path / "list.txt"
    listed.write_text("x.png, 0\n")
    base = ["--checkpoint", str(fake_checkpoint), "--no-confusion"]
    code, out, err = run_eval([*base, "--data", str(tmp_path / "two"), "--val-split", "0.2"], capsys)
    assert code == 2 and out == ""
    assert "--val-split chooses which images" in err
    assert f"validation images in {tmp_path / 'two' / 'val'}" in err
    code, _, err = run_eval([*base, "--data", str(listed), "--seed", "1", "--val-split", "0.3"], capsys)
    assert code == 2 and "--val-split and --seed choose" in err and "is a list file, evaluated whole" in err
    # On the data the model trained on, another split or seed would score its training images.
    for options in (["--val-split", "0.2"], ["--seed", "3"], ["--val-split", "0.2", "--seed", "3"]):
        code, out, err = run_eval([*base, "--json", *options], capsys)
        assert code == 2 and out == "", err
        assert "is what this model trained on, with val_split 0.1 and seed 0" in err
    code, out, err = run_eval([*base, "--json", "--val-split", "0.1", "--seed", "0"], capsys)
    assert code == 0 and json.loads(out)["num_images"] == 179, err  # the run's own, said out loud


def test_eval_cli_threads_apply_to_pytorch_and_exported_files_stay_on_the_cpu(
    fake_checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    threads: list[int] = []
    monkeypatch.setattr(torch, "set_num_threads", threads.append)  # (and the suite keeps its own)
    base = ["--checkpoint", str(fake_checkpoint), "--no-confusion", "--json"]
    code, _, err = run_eval([*base, "--threads", "1"], capsys)
    assert code == 0 and threads == [1], err  # accepted, and once ignored for weights run in PyTorch
    onnx = tmp_path / "m.onnx"
    onnx.write_bytes(b"not read")
    code, _, err = run_eval(["--onnx", str(onnx), "--device", "cuda", "--json"], capsys)
    assert code == 2 and "--device cuda: exported files run on the CPU here" in err, err


def test_eval_cli_on_a_real_checkpoint(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from mobilenets.training.engine import TrainConfig, train

    out = tmp_path / "run"
    result = train(
        TrainConfig(
            model="mobilenet_v3_small",
            progress=False,
            width_mult=0.35,
            data="digits",
            epochs=1,
            batch_size=64,
            img_size=32,
            out=str(out),
        )
    )
    capsys.readouterr()
    checkpoint = out / "best.safetensors"
    code, stdout, err = run_eval(["--checkpoint", str(checkpoint), "--json"], capsys)
    assert code == 0, err
    report = json.loads(stdout)
    assert report["num_images"] > 0 and set(report["per_class"]) == set(DIGITS)
    assert 0.0 <= report["top1"] <= report["top5"] <= 1.0
    assert report["top1"] == pytest.approx(result["best_top1"], abs=1e-9)  # same images, same model
    assert is_png(out / "best_confusion.png")
