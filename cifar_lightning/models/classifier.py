"""The LightningModule base every model shares: loss, metrics, optimizer and schedule, lookahead, TTA, whitening
set from the data, checkpoint extras. Each model (``mlp.py``, ``cnn.py``) subclasses it to build its network.
"""

from __future__ import annotations

from typing import Any, Literal, cast

import lightning as L
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchmetrics import MaxMetric, MeanMetric, MetricCollection

from cifar_lightning.constants import CLASSES, MEAN, NUM_CLASSES, STD, Normalization
from cifar_lightning.models.metrics import TestReport, accuracy
from cifar_lightning.models.optim import Lookahead, OptimizerName, Schedule, build_optimizer, schedule_factor
from cifar_lightning.models.progress import DivergedError, TrainingClock, training_progress, validate_this_epoch
from cifar_lightning.models.tta import TTA_VIEWS, tta_logits, unsure

Stage = Literal["train", "val", "test"]


WHITENING_IMAGES = 5000  # airbench's count: enough for a 12x12 patch covariance and for a 3,072-pixel one


class CIFAR10Classifier(L.LightningModule):
    """Loss, metrics, optimizer and schedule shared by every model; subclasses set ``self.net``.

    Logs ``{train,val,test}/loss`` and ``/acc``, ``val/acc_best`` and, after testing, ``test/acc_top5`` and
    ``test/{acc,precision,f1}_<class>`` per class (per-class accuracy is the class's recall).
    Validation and test loss are plain cross-entropy (an honest NLL) even when training uses label smoothing.
    ``tta_share`` holds the share of images below ``tta_threshold`` at the last single-view validation (1 before
    one, kept in checkpoints): the ones a TTA evaluation gives its extra views, which the cost estimate counts.

    Args:
        num_classes: number of output classes.
        lr: peak learning rate (reached after the warm-up).
        weight_decay: L2 penalty on weights; biases and norm parameters are not decayed.
        momentum: SGD momentum (Nesterov), or AdamW's beta1.
        optimizer: ``sgd``, ``adamw``, or ``muon``: Muon steps for the hidden layers' weights, the CNN's filters
            or the MLP's matrices (``optim.Muon``), Nesterov SGD with ``lr`` and ``momentum`` for every other
            parameter, the output layer's included.
        schedule: learning-rate decay after warm-up: ``linear`` to zero, ``cosine`` to zero, or ``constant``.
        warmup_fraction: share of all training steps spent warming up linearly.
        label_smoothing: cross-entropy label smoothing for the training loss.
        bias_lr_scale: learning-rate multiplier for 1-D parameters (biases, norm shifts); their weight decay is
            divided by it, so every parameter decays by the same fraction per step.
        lookahead: every 5 steps, pull the weights toward a slow running average of themselves, with a pull that
            grows over training (airbench's schedule); the run ends on the averaged weights.
        tta_level: test-time augmentation for test and validation: 0 none, 1 mirror, 2 mirror and 1-pixel shifts
            (6 views, airbench's), 3 mirror and all eight 1-pixel shifts (18 views, equally weighted).
            During fit, only the last epoch's validation uses it (it costs up to 18 forward passes per image); the
            earlier epochs' ``val/acc`` is single-view.
        tta_threshold: only images whose single view is less confident than this (top softmax probability) get the
            extra views (``tta.tta_logits``); 1 gives every image all of them.
        muon_lr: peak learning rate of the Muon-stepped weights, as a fraction of their norm per step.
        muon_momentum: momentum of the Muon-stepped weights.
    """

    net: nn.Module

    def __init__(
        self,
        num_classes: int = NUM_CLASSES,
        lr: float = 0.1,
        weight_decay: float = 5e-4,
        momentum: float = 0.9,
        optimizer: OptimizerName = "sgd",
        schedule: Schedule = "linear",
        warmup_fraction: float = 0.2,
        label_smoothing: float = 0.0,
        bias_lr_scale: float = 1.0,
        lookahead: bool = False,
        tta_level: int = 0,
        tta_threshold: float = 1.0,
        muon_lr: float = 0.24,
        muon_momentum: float = 0.6,
    ) -> None:
        super().__init__()
        if tta_level not in TTA_VIEWS:
            raise ValueError(
                f"tta_level must be 0 (none), 1 (mirror), 2 (mirror and 2 shifts) or 3 (mirror and 8 shifts), got "
                f"{tta_level!r}."
            )
        if not 0.0 < tta_threshold <= 1.0:
            raise ValueError(f"tta_threshold is a probability above 0, at most 1 (every image); got {tta_threshold}.")
        # Captures the subclass's arguments too (its network's, and those it passes on by keyword); all are plain
        # values, so checkpoints load with weights_only=True.
        self.save_hyperparameters()
        self.train_metrics = accuracy(num_classes, "train")
        self.val_metrics = accuracy(num_classes, "val")
        self.test_metrics = accuracy(num_classes, "test")
        self.test_report = TestReport(num_classes)
        self.test_confusion: Tensor | None = None  # (true, predicted) counts of the last test, for the figures
        self.val_acc_best = MaxMetric()
        self.train_loss = MeanMetric()
        # Of the images a single-view validation saw, the share below tta_threshold: the ones the final TTA will give
        # the extra views. The cost estimate reads it (an upper bound: the model only grows more confident).
        self.val_unsure = MeanMetric()
        self.tta_share = 1.0
        self.tta_limit: int | None = None  # a cap on tta_level for this run's evaluations (limit_tta); not saved
        self.class_names = CLASSES if num_classes == NUM_CLASSES else tuple(str(i) for i in range(num_classes))
        self.lookahead = Lookahead()
        self.input_normalization: Normalization = (MEAN, STD)  # the DataModule's, set when fit starts
        self._check_val_every_n_epoch: int | None = None  # the Trainer's, while the last epoch overrides it

    def forward(self, x: Tensor) -> Tensor:
        # Under "16-true"/"bf16-true" Lightning casts the weights and the batch as it leaves the loader; the
        # DataModule's normalization (on_after_batch_transfer) then makes float32 again. A no-op otherwise.
        return self.net(x.to(self.dtype))

    def tta_logits(self, x: Tensor) -> Tensor:
        """Logits averaged over mirrored and shifted views, as ``tta_level`` asks (``tta.tta_logits``)."""
        return tta_logits(self, x, self.tta_level(), self.hparams["tta_threshold"])

    def tta_level(self) -> int:
        """The TTA level evaluations use: ``tta_level``, or lower where ``limit_tta`` capped it."""
        level: int = self.hparams["tta_level"]
        return level if self.tta_limit is None else min(level, self.tta_limit)

    def limit_tta(self, level: int | None) -> None:
        """Evaluate with at most ``level``'s views from now on (None: as ``tta_level`` says). A time budget lowers it
        when the configured level's final evaluation would leave too little time to train; checkpoints keep
        ``tta_level`` as configured, so a later ``test`` of one uses every view."""
        self.tta_limit = level

    def _use_tta(self, stage: Stage) -> bool:
        """TTA multiplies evaluation cost by up to 18: during fit only the last epoch's validation pays for it."""
        if stage == "train":
            return False
        trainer = self.trainer
        if stage == "test" or trainer.state.fn != "fit":
            return True  # test, or a standalone `validate`
        if clock := TrainingClock.of(trainer):
            return clock.final
        return trainer.max_epochs is not None and trainer.current_epoch == trainer.max_epochs - 1

    def _step(self, batch: tuple[Tensor, Tensor], stage: Stage) -> tuple[Tensor, Tensor]:
        x, y = batch
        tta = self._use_tta(stage)
        logits = self.tta_logits(x) if tta else self(x)
        if stage == "val" and not tta and self.hparams["tta_level"]:
            self.val_unsure.update(unsure(logits, self.hparams["tta_threshold"]).float())
        smoothing = self.hparams["label_smoothing"] if stage == "train" else 0.0
        loss = F.cross_entropy(logits, y, label_smoothing=smoothing)
        metrics: MetricCollection = getattr(self, f"{stage}_metrics")
        metrics.update(logits, y)
        if stage == "train":  # accumulated here, logged once per epoch (on_train_epoch_end)
            self.train_loss.update(loss.detach(), weight=len(y))
            return loss, logits
        # Epoch means under stable keys (on_step too would rename them *_step/*_epoch), synced across ranks.
        self.log(f"{stage}/loss", loss, on_epoch=True, on_step=False, prog_bar=True, sync_dist=True)
        self.log_dict(metrics, on_step=False, on_epoch=True, prog_bar=True)
        return loss, logits

    def on_train_epoch_end(self) -> None:
        # Training metrics are logged here, not per step: each self.log call costs Lightning bookkeeping that is
        # measurable against a small model's step (benchmarks/overhead.py). compute() syncs the ranks once.
        self.log("train/loss", self.train_loss.compute())
        self.log_dict(self.train_metrics.compute(), prog_bar=True)
        self.train_loss.reset()
        self.train_metrics.reset()

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        loss = self._step(batch, "train")[0]
        diverged = not torch.isfinite(loss)  # one host sync per step, which the progress bar's loss display pays anyway
        if self.trainer.world_size > 1:  # decided on every rank: one rank stopping alone leaves the others hanging
            diverged = self.trainer.strategy.reduce_boolean_decision(diverged, all=False)
        if diverged:
            value = loss.item() if not torch.isfinite(loss) else None
            raise DivergedError(value, self.global_step, self.current_epoch, self.hparams["lr"], self.trainer.precision)
        # Per-step values only on the steps the loggers write (every log_every_n_steps): each self.log call costs
        # Lightning's bookkeeping, which is measurable against a small model's step (benchmarks/overhead.py).
        if (self.global_step + 1) % self.trainer.log_every_n_steps == 0:  # type: ignore[attr-defined]
            self.log("train/loss_step", loss, on_step=True, on_epoch=False, prog_bar=True)
            self.log("train/lr", self.optimizers().param_groups[0]["lr"], on_step=True, on_epoch=False)  # type: ignore[union-attr]
        return loss

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        self._step(batch, "val")

    def test_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        _, logits = self._step(batch, "test")
        self.test_report.update(logits, batch[1])
        return logits  # callbacks see it as `outputs` (the mistakes grid)

    def predict_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        return self(batch[0]).softmax(dim=-1)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["lookahead"] = self.lookahead.state_dict()  # else a resumed run would restart the average
        checkpoint["input_normalization"] = self.input_normalization
        checkpoint["tta_share"] = self.tta_share  # else a resumed run's estimate would count every image's TTA
        if self.val_acc_best.update_count:  # else a resumed run's val/acc_best would restart from its next validation
            checkpoint["val_acc_best"] = float(self.val_acc_best.compute())

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self.lookahead.load_state_dict(checkpoint.get("lookahead", {}))
        self.input_normalization = checkpoint.get("input_normalization", (MEAN, STD))  # older ones: CIFAR's
        self.tta_share = checkpoint.get("tta_share", 1.0)
        self.val_acc_best.reset()
        if "val_acc_best" in checkpoint:  # older checkpoints: the best is known again after the next validation
            self.val_acc_best.update(torch.tensor(checkpoint["val_acc_best"], device=self.device))

    def on_fit_start(self) -> None:
        # The inputs' scaling has one owner, the DataModule; the network learns on it, so its record travels here.
        datamodule = getattr(self.trainer, "datamodule", None)
        if hasattr(datamodule, "input_normalization"):
            self.input_normalization = datamodule.input_normalization  # type: ignore[union-attr]

    def on_train_start(self) -> None:
        if getattr(self.net, "whiten", False) and not self.net.whitened:
            self._init_whitening()

    @torch.no_grad()
    def _init_whitening(self, max_images: int = WHITENING_IMAGES) -> None:
        """Sets the network's whitening from the first training batches, as the model sees them (augmented).

        Batches go through the strategy's transfer, so the DataModule's ``on_after_batch_transfer`` applies. Under
        DDP the statistics are averaged over ranks, so every rank starts from the same weights.
        """
        net = cast(Any, self.net)  # any network with whitening_statistics/set_whitening, e.g. mlp.MLP, cnn.CNN
        statistics, seen = None, 0
        for batch in self.trainer.train_dataloader:  # type: ignore[union-attr]
            images = self.trainer.strategy.batch_to_device(batch)[0][: max_images - seen]
            batch_stats = net.whitening_statistics(images) * len(images)
            statistics = batch_stats if statistics is None else statistics + batch_stats
            seen += len(images)
            if seen >= max_images:
                break
        if statistics is not None:
            net.set_whitening(self.trainer.strategy.reduce(statistics / seen, reduce_op="mean"))

    def tta_passes(self, level: int | None = None) -> float:
        """Forward passes per image a TTA evaluation at ``level`` (default: ``tta_level()``) is expected to cost (the
        run's cost estimate reads it): all of the level's views for the share of images below ``tta_threshold`` at the
        last single-view validation (all images before the first), one for the rest."""
        return 1 + (TTA_VIEWS[self.tta_level() if level is None else level] - 1) * self.tta_share

    def step_cost(self, progress: float) -> float:
        """A training step's cost at ``progress``, relative to a full-size one; the cost report projects with it."""
        return 1.0

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        progress, final = training_progress(self.trainer)
        if self.hparams["lookahead"]:
            self.lookahead.step(self.net, self.trainer.global_step, progress, final)
        if final and self._check_val_every_n_epoch is None:  # its TTA validation, whatever check_val_every_n_epoch
            self._check_val_every_n_epoch = validate_this_epoch(self.trainer)

    def on_train_end(self) -> None:
        if self._check_val_every_n_epoch is not None:  # a second fit on this Trainer validates as the user set it
            self.trainer.check_val_every_n_epoch, self._check_val_every_n_epoch = self._check_val_every_n_epoch, None

    def on_validation_epoch_end(self) -> None:
        if self.val_unsure.update_count:
            self.tta_share = float(self.val_unsure.compute())  # synced over ranks
            self.val_unsure.reset()
        if self.trainer.sanity_checking:  # a few batches of an untrained model: not a result to keep the best of
            return
        self.val_acc_best.update(self.val_metrics["acc"].compute())
        self.log("val/acc_best", self.val_acc_best.compute(), prog_bar=True, sync_dist=True)

    def on_test_epoch_end(self) -> None:
        logs, confusion = self.test_report.logs(self.class_names)  # already reduced over ranks
        self.test_confusion = confusion.cpu()
        self.log_dict(logs)
        self.test_report.reset()

    def make_optimizer(self) -> torch.optim.Optimizer:
        """The optimizer the hyperparameters name, over this module's parameter groups (``optim.build_optimizer``)."""
        hp = self.hparams
        names = ("optimizer", "lr", "momentum", "weight_decay", "bias_lr_scale", "muon_lr", "muon_momentum")
        return build_optimizer(self, **{name: hp[name] for name in names})

    def configure_optimizers(self) -> Any:
        hp = self.hparams
        opt = self.make_optimizer()
        # Under a training clock (a time budget) it drives the schedule, read every step (the step count is unbounded).
        if clock := TrainingClock.of(self.trainer):
            factor = schedule_factor(hp["warmup_fraction"], hp["schedule"], progress=lambda: clock.progress)
        else:
            total = int(self.trainer.estimated_stepping_batches)
            factor = schedule_factor(hp["warmup_fraction"], hp["schedule"], total_steps=total)
        scheduler = torch.optim.lr_scheduler.LambdaLR(opt, factor)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}


def classifier(pl_module: L.LightningModule) -> CIFAR10Classifier:
    """``pl_module`` as what these callbacks read (``net``, ``class_names``, ``test_confusion``), typed, so that a
    renamed attribute fails type checking and here, instead of a figure or export silently going missing."""
    if not isinstance(pl_module, CIFAR10Classifier):
        raise TypeError(f"These callbacks need a CIFAR10Classifier; got {type(pl_module).__name__}.")
    return pl_module
