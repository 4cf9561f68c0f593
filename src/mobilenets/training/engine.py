"""The training loop: one process or many under ``torchrun``, checkpoints every epoch, exact resume.

A run's directory holds ``config.json``, ``metrics.jsonl`` (one record per epoch), ``last`` and
``best`` checkpoints (see :mod:`.checkpoint`) and, at the end, ``loss.png`` / ``accuracy.png``. The
shuffle and augmentation of epoch ``e`` depend only on ``(seed, e)`` and the RNG state is saved, so a
resumed run — after an epoch, or after SIGINT/SIGTERM mid-epoch — continues the same trajectory.
"""

from __future__ import annotations

import contextlib
import math
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from ..data.folders import absolute_data_spec, check_split_listing, split_listing
from ..data.splits import build_loader, load_splits
from ..data.transforms import check_pad_crop_applies
from ..errors import TrainingError, UsageError
from ..evaluation.evaluate import evaluate
from ..evaluation.metrics import ClassificationMetrics
from ..layers import fast_depthwise_gradients, keep_relu6_outputs, set_inplace_activations
from ..models import MobileNet, create_model
from ..weights.finetune import load_for_finetuning, resolve_pretrained
from .checkpoint import ModelCard, load_training_state, save_checkpoint
from .config import TrainConfig
from .data_init import fit_to_data
from .distributed import (
    DistContext,
    all_reduce_sum,
    any_process,
    barrier,
    broadcast_buffers,
    gather_objects,
    init_distributed,
    is_lost_peer,
    lost_peer_error,
    shutdown_distributed,
)
from .optim import build_ema, build_optimizer, build_scheduler
from .progress import EpochProgress
from .resize import check_resizing_applies, resize_batch, train_size
from .resume import EpochSums, restore_training_state, rng_states, run_has_finished, training_state
from .run_log import (
    append_metrics,
    config_record,
    keep_metrics_before,
    last_val_top1,
    resumes_run,
    write_json,
)
from .runtime import configure_reproducibility, kernel_settings_restored, resolve_precision
from .stop import StopRequest
from .storage import (
    check_free_space,
    check_writable,
    checkpoint_bytes,
    failed_write_explained,
    kept_checkpoint,
    remove_stale_temp_files,
    removed_if_left_empty,
)

EVAL_BATCH_SIZE = 256
MIN_TRAIN_BATCH = 2  # BatchNorm's statistics need two images (the loader empties smaller batches)


class Trainer:
    """Builds data, model and recipe from a :class:`TrainConfig`, then :meth:`run` trains."""

    def __init__(self, config: TrainConfig, context: DistContext) -> None:
        self.config = config
        self.context = context
        self.out = Path(config.out)
        self.device = context.device
        world = context.world_size
        if config.batch_size % world or config.batch_size // world < MIN_TRAIN_BATCH:
            raise UsageError(
                f"batch_size {config.batch_size} must divide evenly over {world} processes into at least "
                f"{MIN_TRAIN_BATCH} images each (it is the global batch; batch norm needs two)"
            )
        self.resuming = resumes_run(self.out, config, announce=context.is_main)
        if context.is_main:  # before the data is read: a bad --out fails in the first second
            check_writable(self.out)
        if config.sync_bn and self.device.type != "cuda":
            raise UsageError("sync_bn needs CUDA (torch's SyncBatchNorm has no CPU kernel); drop --sync-bn")
        self.amp_dtype = resolve_precision(config.precision, self.device)
        # Checked before the data is read; a resumed run takes its weights from its own checkpoint.
        pretrained = None
        if config.pretrained is not None and not self.resuming:
            pretrained = resolve_pretrained(config.pretrained, model=config.model)
        configure_reproducibility(config)

        splits = load_splits(
            config.data,
            img_size=config.resolution,
            val_split=config.val_split,
            augment=config.augmentation,
            seed=config.seed,
            workers=config.workers,
        )
        self.classes = splits.classes
        check_pad_crop_applies(
            splits.train, crop_padding=config.crop_padding, padding_mode=config.padding_mode
        )
        self.train_loader = build_loader(
            splits.train,
            batch_size=config.batch_size // world,
            train=True,
            seed=config.seed,
            workers=config.workers,
            rank=context.rank,
            world_size=world,
        )
        self.val_loader = build_loader(  # each process scores its shard; see _evaluate
            splits.val,
            batch_size=EVAL_BATCH_SIZE,
            train=False,
            seed=config.seed,
            workers=config.workers,
            rank=context.rank,
            world_size=world,
        )
        self.steps_per_epoch = len(self.train_loader)
        self.train_images = len(splits.train)  # a resume on other training images is refused
        if self.steps_per_epoch == 0:
            raise UsageError(f"batch_size {config.batch_size} leaves no full batch of training images")

        model_kwargs = config.model_kwargs(len(self.classes))
        model: MobileNet = create_model(config.model, **model_kwargs)
        if pretrained is not None:  # the same file on every process, before DDP compares them
            start = load_for_finetuning(model, pretrained)
            if context.is_main:
                print(start.describe(pretrained), flush=True)
        elif not self.resuming:  # (a resumed run's checkpoint holds the fitted stem)
            fit_to_data(model, splits.train)
        keep_relu6_outputs(model)  # no copy of each ReLU6's input for the backward
        fast_depthwise_gradients(model)  # oneDNN's slow weight gradient on maps smaller than the kernel
        set_inplace_activations(model, False)  # hard-swish & co: faster backward; see its docstring
        memory_format = torch.channels_last if config.channels_last else torch.contiguous_format
        self.min_input_size = model.min_input_size  # the smallest progressive resizing may train at
        if config.resize_start < 1:
            check_resizing_applies(config.model, self.min_input_size, config.resolution)
        self.model: nn.Module = model.to(device=self.device, memory_format=memory_format)  # type: ignore[call-overload]
        if config.sync_bn:
            self.model = nn.SyncBatchNorm.convert_sync_batchnorm(self.model)
        # Different dropout / drop-path draws per process; the weights above are identical on all of them.
        torch.manual_seed(config.seed + 1_000_003 * context.rank)
        self.ema = build_ema(self.model, config.ema_decay) if config.ema_decay > 0 else None
        self.train_module: nn.Module = self.model
        if context.distributed:
            device_ids = [self.device.index] if self.device.type == "cuda" else None
            self.train_module = DistributedDataParallel(self.model, device_ids=device_ids)
        if config.compile:
            self.train_module = torch.compile(self.train_module)  # type: ignore[assignment]
        if context.is_main:
            check_free_space(self.out, checkpoint_bytes(self.model, config.optimizer, self.ema is not None))
        loss_scaling = self.amp_dtype == torch.float16
        self.optimizer = build_optimizer(self.model, config, loss_scaling=loss_scaling)
        self.scheduler = build_scheduler(self.optimizer, config, self.steps_per_epoch)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=loss_scaling)
        self.criterion = nn.CrossEntropyLoss(label_smoothing=config.label_smoothing)
        self.card = ModelCard(
            model=config.model,
            model_kwargs=model_kwargs,
            classes=self.classes,
            mean=splits.mean,
            std=splits.std,
            img_size=config.resolution,
            data=absolute_data_spec(config.data),
            val_split=config.val_split,
            seed=config.seed,
            config=config.to_dict(),
            data_listing=split_listing(config.data),
        )
        # Position: the next epoch to run and how many of its steps are already done.
        self.epoch, self.step_in_epoch, self.best_top1 = 1, 0, -1.0
        self.partial = EpochSums()
        self.carried_images = 0  # every process's images of a resumed epoch, which the main one holds

    # ----------------------------------------------------------------------------- checkpoints
    @property
    def eval_model(self) -> nn.Module:
        """The model that is evaluated and saved as weights: the EMA when there is one."""
        return self.ema.module if self.ema is not None else self.model

    def _writing(self, what: str) -> contextlib.AbstractContextManager[None]:
        return failed_write_explained(self.out, what)

    def _save(self, name: str, completed_epoch: int) -> None:
        """Checkpoint ``name``: every process calls it (each saves its RNG state), the main one writes."""
        mine = (rng_states(self.device), self.partial)
        gathered = cast(list[tuple[dict[str, torch.Tensor], EpochSums]], gather_objects(mine, self.context))
        process_rng, process_sums = [rng for rng, _ in gathered], [sums for _, sums in gathered]
        if not self.context.is_main:
            return
        with self._writing(f"checkpoint {name!r} after epoch {completed_epoch}"):
            save_checkpoint(
                self.out,
                name,
                weights=self.eval_model.state_dict(),
                card=self.card,
                state={
                    **training_state(self, completed_epoch, process_rng, process_sums),
                    "data_listing": self.card.data_listing,
                },
            )

    # ----------------------------------------------------------------------------- the loop
    @property
    def epoch_image_size(self) -> int:
        """The side of this epoch's training images (smaller early on with progressive resizing)."""
        config = self.config
        return train_size(
            self.epoch,
            epochs=config.epochs,
            full=config.resolution,
            start=config.resize_start,
            until=config.resize_until,
            minimum=self.min_input_size,
        )

    def _batches(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """This epoch's batches on the device, from the step a resumed run stopped at."""
        memory_format = torch.channels_last if self.config.channels_last else torch.contiguous_format
        size = self.epoch_image_size
        self.train_loader.set_epoch(self.epoch, start_step=self.step_in_epoch)
        for images, labels in self.train_loader:
            if len(labels) < MIN_TRAIN_BATCH:  # unreadable files emptied it: see run()
                yield images, labels
                continue
            images = images.to(self.device, non_blocking=True).contiguous(memory_format=memory_format)
            yield resize_batch(images, size), labels.to(self.device, non_blocking=True)

    def _step(self, images: torch.Tensor, labels: torch.Tensor) -> tuple[float, int]:
        """One optimizer step; returns (summed loss, correct predictions) of the batch."""
        with torch.autocast(
            self.device.type, dtype=self.amp_dtype or torch.float32, enabled=self.amp_dtype is not None
        ):
            logits = self.train_module(images)
        loss = self.criterion(logits.float(), labels)
        loss_value = float(loss.detach())
        if not math.isfinite(loss_value):
            fp32 = "" if self.amp_dtype is None else ", or --precision fp32"  # (only if autocast was on)
            raise TrainingError(
                f"loss became {loss_value} at epoch {self.epoch}, step {self.step_in_epoch + 1}; try a lower "
                f"--lr (now {self.config.peak_lr:g}) or --grad-clip 1.0{fp32}. {kept_checkpoint(self.out)}"
            )
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        if self.config.grad_clip > 0:
            self.scaler.unscale_(self.optimizer)
            nn.utils.clip_grad_norm_(self.model.parameters(), self.config.grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        with warnings.catch_warnings():
            # A step the fp16 scaler skipped (an overflow) still counts on the schedule; torch warns of it.
            warnings.filterwarnings(
                "ignore", r"Detected call of `lr_scheduler\.step\(\)` before", UserWarning
            )
            self.scheduler.step()
        if self.ema is not None:
            self.ema.update_parameters(self.model)
        correct = int((logits.detach().argmax(dim=1) == labels).sum())
        return loss_value * labels.numel(), correct

    def _epoch_start_lr(self) -> float:
        """The learning rate of this epoch's first step (also after resuming part-way through it)."""
        first_step = (self.epoch - 1) * self.steps_per_epoch
        return float(self.scheduler.base_lrs[0] * self.scheduler.lr_lambdas[0](first_step))

    def _check_finite_weights(self) -> None:
        """Refuse to checkpoint weights that became NaN/inf (the loss of the last step was still finite)."""
        bad = [name for name, value in self.model.state_dict().items() if not bool(value.isfinite().all())]
        if bad:
            raise TrainingError(
                f"weights became non-finite during epoch {self.epoch} (first: {bad[0]!r}, {len(bad)} "
                f"tensors); try a lower --lr (now {self.config.peak_lr:g}) or --grad-clip 1.0. "
                f"{kept_checkpoint(self.out)}"
            )

    def run(self) -> dict[str, Any]:
        """Train to ``config.epochs``; returns best/final val top-1 (fractions) and what happened."""
        config, context = self.config, self.context
        metrics_path = self.out / "metrics.jsonl"
        if self.resuming:
            state = load_training_state(self.out, "last")
            saved_listing = state.get("data_listing", "")
            if saved_listing and saved_listing != self.card.data_listing:
                check_split_listing(config.data, saved_listing, f"the run in {str(self.out)!r}")
            restore_training_state(self, state)
            self.carried_images = self.partial.images if context.is_main else 0
            finished = run_has_finished(self.out, self.epoch, self.step_in_epoch, config.epochs)
            if context.is_main and not finished:
                with self._writing("metrics.jsonl"):
                    remove_stale_temp_files(self.out)
                    keep_metrics_before(metrics_path, self.epoch)
                print(
                    f"resuming {self.out} at epoch {self.epoch}, step {self.step_in_epoch} "
                    f"(best val top-1 {100 * max(self.best_top1, 0):.2f}%)",
                    flush=True,
                )
            if finished:  # its files stay as the run left them: config.json too, nothing ran on this one
                if context.is_main:
                    print(
                        f"{self.out} has finished its {config.epochs} epochs: nothing to train (a larger "
                        "--epochs trains on)",
                        flush=True,
                    )
                return self._summary(last_val_top1(metrics_path), epochs_run=0, interrupted=False, skipped=[])
        elif context.is_main:
            with self._writing("metrics.jsonl"):
                remove_stale_temp_files(self.out)  # a run killed before its first checkpoint
                metrics_path.write_text("")
        if context.is_main:
            record = config_record(
                self.out, config, epoch=self.epoch, step=self.step_in_epoch, resuming=self.resuming
            )
            with self._writing("config.json"):
                write_json(self.out / "config.json", record)
        barrier(context)

        final_top1: float | None = None  # of the last epoch this call ran
        epochs_run, interrupted = 0, False
        stopping = StopRequest(ignore_sigterm_after_error=context.distributed)  # see StopRequest
        with stopping as stop, EpochProgress(enabled=config.progress and context.is_main) as progress:
            while self.epoch <= config.epochs:
                if any_process(stop.requested, context):  # signalled while evaluating: epoch is saved
                    interrupted = True
                    break
                lr = self._epoch_start_lr()
                progress.start_epoch(
                    f"epoch {self.epoch}/{config.epochs}", self.steps_per_epoch, self.step_in_epoch
                )
                self.train_module.train()
                started = time.perf_counter()
                for images, labels in self._batches():
                    # A batch that unreadable files left with under 2 images is skipped by every
                    # process at once: a step in one alone would leave the others waiting for it.
                    too_small = len(labels) < MIN_TRAIN_BATCH
                    if context.distributed:
                        too_small = any_process(too_small, context)
                    if too_small:
                        self.step_in_epoch += 1
                        continue
                    loss_sum, correct = self._step(images, labels)
                    self.step_in_epoch += 1
                    self.partial.loss += loss_sum
                    self.partial.correct += correct
                    self.partial.images += labels.numel()
                    elapsed = self.partial.seconds + time.perf_counter() - started
                    progress.advance(
                        loss=loss_sum / labels.numel(),
                        top1=correct / labels.numel(),
                        images_per_s=(
                            (self.partial.images - self.carried_images) * context.world_size
                            + self.carried_images
                        )
                        / max(elapsed, 1e-9),
                    )
                    if any_process(stop.requested, context):
                        interrupted = True
                        break
                if self.device.type == "cuda":
                    torch.cuda.synchronize(self.device)
                self.partial.seconds += time.perf_counter() - started
                if interrupted:
                    self._check_finite_weights()
                    self._save("last", completed_epoch=self.epoch - 1)
                    break
                final_top1 = self._finish_epoch(lr, metrics_path)
                epochs_run += 1
        if interrupted and context.is_main:
            print(
                f"stopped by {stop.signal_name or 'request'} at epoch {self.epoch}, step "
                f"{self.step_in_epoch}/{self.steps_per_epoch}; saved "
                f"{self.out / 'last.safetensors'} — continue with --resume",
                flush=True,
            )
        # Each process reads its share of the images, so each found its own unreadable ones.
        mine = set(self.train_loader.skipped) | set(self.val_loader.skipped)
        skipped = sorted(set[str]().union(*cast(list[set[str]], gather_objects(mine, context))))
        if context.is_main and skipped:
            print(f"skipped {len(skipped)} unreadable image(s); the warnings name them", flush=True)
        if context.is_main and not interrupted:
            self._plot(metrics_path)
        barrier(context)
        return self._summary(final_top1, epochs_run=epochs_run, interrupted=interrupted, skipped=skipped)

    def _summary(
        self, final_top1: float | None, *, epochs_run: int, interrupted: bool, skipped: list[str]
    ) -> dict[str, Any]:
        return {
            "best_top1": self.best_top1 if self.best_top1 >= 0 else None,  # None: no epoch finished yet
            "final_top1": final_top1,  # of the last epoch trained (for a finished run, its last one)
            "epochs_run": epochs_run,
            "interrupted": interrupted,
            "skipped_images": len(skipped),
            "out": str(self.out),
        }

    def _finish_epoch(self, lr: float, metrics_path: Path) -> float | None:
        """Log and checkpoint the epoch just trained, scoring it if it is due (``eval_every``, and always
        the last epoch); returns its val top-1, or None for an epoch not scored."""
        self._check_finite_weights()
        summary = self.partial.report(self.device, self.context)
        epoch, size = self.epoch, self.epoch_image_size
        scored = epoch % self.config.eval_every == 0 or epoch >= self.config.epochs
        started = time.perf_counter()
        result = self._evaluate() if scored else None
        val_top1 = None if result is None else result.top1
        if self.context.is_main:
            scores: dict[str, Any] = {}
            if result is not None:
                scores = {
                    "val_loss": result.mean_loss,
                    "val_top1": result.top1,
                    "val_top5": result.top5,
                    "val_images": result.num_images,
                }
            timing = {} if result is None else {"eval_seconds": time.perf_counter() - started}
            record = {"epoch": epoch, **summary, **scores, "lr": lr, **timing, "train_size": size}
            with self._writing(f"the metrics of epoch {epoch}"):
                append_metrics(metrics_path, record)
        improved = False
        if val_top1 is not None and val_top1 > self.best_top1:  # the same in every process: they all save
            self.best_top1, improved = val_top1, True
        self.epoch, self.step_in_epoch, self.partial = epoch + 1, 0, EpochSums()
        self.carried_images = 0
        if improved:  # best first: a crash between the two repeats this epoch, which rewrites both
            self._save("best", completed_epoch=epoch)
        self._save("last", completed_epoch=epoch)
        if self.context.is_main:
            scored_text = "not scored" if val_top1 is None else f"val top-1 {100 * val_top1:.2f}%"
            print(
                f"epoch {epoch}/{self.config.epochs}  loss {summary['train_loss']:.4f}  "
                f"train {100 * summary['train_top1']:.2f}%  {scored_text}  "
                f"{summary['images_per_s']:,.0f} images/s"
                f"{f'  at {size}×{size}' if size != self.config.resolution else ''}"
                f"{'  *best' if improved else ''}",
                flush=True,
            )
        barrier(self.context)
        return val_top1

    def _evaluate(self) -> ClassificationMetrics:
        """The eval model's metrics over the whole validation set, returned in every process.

        Under ``torchrun`` each process scores its shard (split, not padded: every image counts once)
        and the counts are summed, so evaluation runs on all the processes' cores. Rank 0's BatchNorm
        statistics, the ones it saves, are copied to the others first: the score is the saved model's.
        """
        model = self.eval_model
        broadcast_buffers(model, self.context)
        metrics = evaluate(
            model,
            self.val_loader,
            device=self.device,
            channels_last=self.config.channels_last,
            autocast_dtype=self.amp_dtype,
            criterion=nn.CrossEntropyLoss(),
            into=ClassificationMetrics(len(self.classes)),
        )
        if self.context.distributed:
            metrics.load_state_tensor(all_reduce_sum(metrics.state_tensor(self.device), self.context))
        if metrics.num_images == 0:
            raise UsageError("the validation set yielded no readable image; expected at least one")
        return metrics

    def _plot(self, metrics_path: Path) -> None:
        from .plots import plot_training_curves

        # ValueError: nothing to plot yet (e.g. interrupted in epoch 1).
        with contextlib.suppress(ValueError), self._writing("the training plots"):
            plot_training_curves(metrics_path, self.out)


def train(config: TrainConfig) -> dict[str, Any]:
    """Train ``config.model`` on ``config.data`` into ``config.out``; see :class:`Trainer`.

    Under ``torchrun`` every process calls this; they join one process group (gloo on CPU, NCCL on
    GPU) and only rank 0 writes files and prints.
    """
    context = init_distributed(config.device)
    try:
        with kernel_settings_restored(), removed_if_left_empty(Path(config.out), context.is_main):
            return Trainer(config, context).run()
    except RuntimeError as error:
        if context.distributed and not isinstance(error, TrainingError) and is_lost_peer(error):
            raise lost_peer_error(error, context) from error
        raise
    finally:
        shutdown_distributed(context)
