"""The LightningModule: the science of training (model, loss, metrics, optimiser choice).

Engineering — devices, DDP, checkpoints, early stopping, progress — lives in the Lightning
``Trainer`` and callbacks built by ``kinetoscope.train.fit``.
"""

from __future__ import annotations

import functools
import math

import lightning.pytorch as pl
import torch
import torch.nn.functional as F
from torchmetrics.classification import MulticlassAccuracy, MulticlassF1Score

from kinetoscope.config import OptimConfig
from kinetoscope.models.inference import clip_logits, model_inputs


class VideoClassifier(pl.LightningModule):
    """Cross-entropy training of any registered model; per-frame models get the clip label at every
    frame (Broomé 2022 §3.2: the video label is copied to every clip and frame)."""

    def __init__(
        self, model: torch.nn.Module, num_classes: int, optim: OptimConfig, loss: str = "ce"
    ) -> None:
        super().__init__()
        if loss not in ("ce", "bce"):
            raise ValueError(f"train.loss must be 'ce' or 'bce', got {loss!r}")
        self.model = model
        self.num_classes = num_classes
        self.loss_name = loss
        self.optim_config = optim
        self.val_acc = MulticlassAccuracy(num_classes, average="micro")
        self.val_f1 = MulticlassF1Score(num_classes, average="macro")
        self.train_acc = MulticlassAccuracy(num_classes, average="micro")
        self.nonfinite_step: int | None = None

    def forward(self, batch: dict) -> torch.Tensor:
        return self.model(*model_inputs(self.model, batch))

    def _loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        if self.loss_name == "bce":  # Broomé 2022: sigmoid units + BCE on one-hot targets (docs/deviations.md)
            target = F.one_hot(labels, logits.shape[-1]).to(logits.dtype)
            if logits.ndim == 3:
                target = target[:, None].expand_as(logits)
            return F.binary_cross_entropy_with_logits(logits, target)
        if logits.ndim == 3:  # [B, T, K] per-frame
            b, t, k = logits.shape
            return F.cross_entropy(logits.reshape(b * t, k), labels.repeat_interleave(t))
        return F.cross_entropy(logits, labels)

    def training_step(self, batch: dict, batch_idx: int):
        towers = getattr(self.model, "forward_towers", None)
        if towers is not None:
            # Two-stream networks with several towers: one loss per tower, summed (Feichtenhofer 2017 §3.3.4);
            # the clip score is the towers' mean, as in the model's forward.
            outputs = list(towers(*model_inputs(self.model, batch)).values())
            loss = sum(self._loss(o, batch["label"]) for o in outputs)
            logits = torch.stack(outputs).mean(dim=0)
        else:
            logits = self(batch)
            loss = self._loss(logits, batch["label"])
        nonfinite = not bool(torch.isfinite(loss))
        if self._distributed:
            # Under DDP every rank must skip together: a rank that runs backward alone would wait
            # forever in the gradient all-reduce. One boolean all-reduce per step.
            nonfinite = self.trainer.strategy.reduce_boolean_decision(nonfinite, all=False)
        if nonfinite:
            # Skip the update so the weights (and every checkpoint) stay the last good ones.
            self.nonfinite_step = int(self.global_step)
            if self._trainer is not None:
                self.trainer.should_stop = True
            if not self._distributed:
                return None
            # Lightning refuses a skipped step under DDP: every rank backpropagates a zero loss (so the
            # all-reduce completes) and optimizer_step leaves the weights alone.
            return torch.stack([p.sum() for p in self.parameters() if p.requires_grad]).sum() * 0.0
        self.train_acc(clip_logits(logits).argmax(-1), batch["label"])
        bs = len(batch["label"])
        self.log("train_loss", loss, on_step=False, on_epoch=True, sync_dist=True, batch_size=bs)
        self.log("train_acc", self.train_acc, on_step=False, on_epoch=True, batch_size=bs)
        return loss

    @property
    def _distributed(self) -> bool:
        return self._trainer is not None and self.trainer.world_size > 1

    def optimizer_step(self, epoch: int, batch_idx: int, optimizer, optimizer_closure=None) -> None:
        if not self._distributed:
            return super().optimizer_step(epoch, batch_idx, optimizer, optimizer_closure)
        loss = optimizer_closure()  # training_step + backward (and DDP's gradient all-reduce) on every rank
        if self.nonfinite_step is None:  # a non-finite loss on any rank: no update anywhere
            # hand the loss on: the precision plugin runs clipping after the closure, and AMP's GradScaler
            # treats a closure returning None as a skipped backward and would not step
            optimizer.step(closure=lambda: loss)

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        logits = self(batch)
        loss = self._loss(logits, batch["label"])
        preds = clip_logits(logits).argmax(-1)
        self.val_acc(preds, batch["label"])
        self.val_f1(preds, batch["label"])
        bs = len(batch["label"])
        self.log("val_loss", loss, on_epoch=True, sync_dist=True, batch_size=bs)
        self.log("val_acc", self.val_acc, on_epoch=True, batch_size=bs)
        self.log("val_f1", self.val_f1, on_epoch=True, batch_size=bs)

    def configure_optimizers(self):
        o = self.optim_config
        optimizer = self._optimizer(o)
        if o.schedule == "constant":
            return optimizer
        if o.schedule == "step":  # Stergiou 2021 §4.4.1: lr0 · gamma^k per epoch
            from kinetoscope.train.schedules import step_lr_factor

            step = functools.partial(step_lr_factor, milestones=o.milestones, every=o.step_every, gamma=o.gamma)
            scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, step)
            return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "epoch"}}
        total = max(int(self.trainer.estimated_stepping_batches), 1)
        warmup = o.warmup_steps

        def factor(step: int) -> float:
            """Stergiou 2021: lr0 * 1/2 (1 + cos(pi n / n_max)), after a linear warm-up of ``warmup`` steps."""
            ramp = min(1.0, (step + 1) / warmup) if warmup else 1.0
            return ramp * 0.5 * (1.0 + math.cos(math.pi * min(step, total) / total))

        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def _optimizer(self, o: OptimConfig) -> torch.optim.Optimizer:
        params = self.model.parameters()
        if o.name == "sgd":
            return torch.optim.SGD(params, lr=o.lr, momentum=o.momentum, weight_decay=o.weight_decay)
        if o.name == "adam":
            return torch.optim.Adam(params, lr=o.lr, weight_decay=o.weight_decay)
        if o.name == "adamw":
            return torch.optim.AdamW(params, lr=o.lr, weight_decay=o.weight_decay)
        if o.name == "adadelta":
            return torch.optim.Adadelta(params, lr=o.lr, weight_decay=o.weight_decay)
        if o.name == "rmsprop":
            return torch.optim.RMSprop(params, lr=o.lr, momentum=o.momentum, weight_decay=o.weight_decay)
        raise ValueError(f"optim.name {o.name!r} is not supported")
