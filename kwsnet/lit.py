"""ClassifierModule: frontend + backbone + head, with loss, metrics and optimisation.

The three stages are injected by the config (LightningCLI ``class_path``); the class count
comes from the DataModule. Log keys are ``{stage}/{metric}`` (``train/loss``, ``val/acc``,
``test/f1``).
"""

from __future__ import annotations

import hashlib
import sys
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import lightning.pytorch as pl
import torch
import torch.nn.functional as F
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from torch import nn
from torch.optim.lr_scheduler import ReduceLROnPlateau
from torch.utils.data import DataLoader, DistributedSampler

from kwsnet._compat import cli_hparams_given, eval_dataloaders, should_update_logs
from kwsnet.data.augment import use_data_noise, warn_if_noise_off
from kwsnet.data.features import RawAudio
from kwsnet.init.base import InitStrategy, format_report
from kwsnet.metrics.classification import ClassificationStats
from kwsnet.metrics.verification import verification_metrics
from kwsnet.nn.heads import LinearHead
from kwsnet.optim import WarmupDecay, param_groups

__all__ = ["ClassifierModule"]

# Constructor arguments that are built objects (modules, factories, classes): saved as hparams
# only in the CLI's config form (class_path/init_args), never as the objects themselves.
OBJECT_ARGS = ("backbone", "head", "frontend", "optimizer", "lr_scheduler", "init", "augment")


def _is_compile_failure(exc: BaseException) -> bool:
    """Whether ``exc`` comes from torch.compile's machinery (dynamo, inductor, its C++ build)
    rather than from the model: only those fall back to eager."""
    return type(exc).__module__.startswith(("torch._dynamo", "torch._inductor"))


class ClassifierModule(pl.LightningModule):
    """A classifier built from three injected stages.

    Args:
        backbone: ``backbone(features, lengths) -> [B, embed_dim]``, with ``embed_dim``.
        head: a factory ``head(in_features, num_classes) -> nn.Module`` (default
            ``LinearHead``); in YAML a ``class_path`` with the remaining ``init_args``.
        frontend: ``frontend(wave, lengths) -> (features, lengths)`` (default ``RawAudio``).
        num_classes: number of classes; linked from ``data.num_classes`` by the CLI.
        class_names: class names for reports; linked from ``data.class_names``.
        optimizer: optimizer factory (default Adam; the configs set lr 0.005).
        lr_scheduler: optional scheduler factory; a ``kwsnet.optim.WarmupDecay`` is sized to
            the run (``trainer.estimated_stepping_batches``) and stepped every optimizer step;
            a ``ReduceLROnPlateau`` (torch's, or ``lightning.pytorch.cli.ReduceLROnPlateau``
            with its ``monitor``) is stepped every epoch with the metric
            ``lr_scheduler_monitor`` names.
        lr_scheduler_monitor: the logged metric a ``ReduceLROnPlateau`` steps on (e.g.
            ``val/loss``). Default None: the scheduler's own ``monitor`` (Lightning's CLI
            wrapper has one), else the monitor of the run's ``ModelCheckpoint`` when its mode
            is the scheduler's (``val/acc`` with ``mode: max`` in the configs), else
            ``val/loss`` for ``mode: min`` and ``val/acc`` for ``mode: max``. Set with a
            scheduler that has its own ``monitor``, the two must agree. Ignored by other
            schedulers.
        weight_decay: if set, parameter groups with this decay on weights and none on norm
            scale/shift and biases (``kwsnet.optim.param_groups``); ``None`` (default) passes
            all parameters to the optimizer as they are.
        label_smoothing: cross-entropy label smoothing (default 0).
        init: optional init strategy (``kwsnet.init``, e.g. ``LSUV``, ``SmallInitEmb``): its
            ``prepare`` runs here, its ``apply`` once at fit start on a real training batch,
            before the first optimizer step (never on a resumed run).
        augment: optional batch augmentation ``augment(wave, lengths) -> (wave, lengths)``
            applied to training batches only, on the training device.
        compile: run the backbone through ``torch.compile`` (the module itself is unchanged:
            parameter names, checkpoints and export are the same) (default False). At fit
            start one forward and backward on a real batch builds both graphs; where
            torch.compile cannot build (no C++ compiler, an inductor codegen error) it warns
            in one line and trains eager (``compile_error`` says why). On CPU it can be
            slower than eager; ``docs/performance.md`` has the measured numbers.
        verification_trials: if > 0, test also scores this many seeded speaker-verification
            trials (cosine scoring of backbone embeddings) and logs ``test/eer`` and
            ``test/min_dcf`` (default 0: off; the speaker configs turn it on).
        verification_seed: seed of the trial list, independent of the training seed (0).

    Built by the CLI, the module saves its config as hparams, so a checkpoint the CLI wrote
    loads with ``ClassifierModule.load_from_checkpoint(path)`` alone (``kwsnet.load`` wraps it
    with resampling and class names).
    """

    def __init__(
        self,
        backbone: nn.Module,
        head: Callable[[int, int], nn.Module] = LinearHead,
        frontend: nn.Module | None = None,
        num_classes: int = 2,
        class_names: list[str] | None = None,
        optimizer: OptimizerCallable = torch.optim.Adam,
        lr_scheduler: LRSchedulerCallable | None = None,
        lr_scheduler_monitor: str | None = None,
        weight_decay: float | None = None,
        label_smoothing: float = 0.0,
        init: InitStrategy | None = None,
        augment: nn.Module | None = None,
        compile: bool = False,
        verification_trials: int = 0,
        verification_seed: int = 0,
    ) -> None:
        super().__init__()
        # Built by the CLI, the hparams are its config of every argument (plain data:
        # class_path/init_args dicts, the class names linked from the data), so
        # ``ClassifierModule.load_from_checkpoint(path)`` rebuilds the model through Lightning's
        # instantiator and the checkpoint still loads with ``weights_only=True``. Built in
        # Python, the objects are left out (only the plain arguments are saved); the logger gets
        # the whole resolved config from the CLI instead (kwsnet.cli.KwsSaveConfig).
        self.save_hyperparameters(
            ignore=None if cli_hparams_given() else list(OBJECT_ARGS), logger=False
        )
        if num_classes < 2:
            raise ValueError(f"num_classes must be >= 2, got {num_classes}")
        embed_dim = getattr(backbone, "embed_dim", None)
        if not isinstance(embed_dim, int):
            raise TypeError(
                f"{type(backbone).__name__} has no integer embed_dim; a backbone must expose "
                "the width of its output embedding"
            )
        self.frontend = frontend if frontend is not None else RawAudio()
        self.backbone = backbone
        self.head = head(embed_dim, num_classes)
        fe_dim = getattr(self.frontend, "out_dim", None)
        bb_dim = getattr(backbone, "input_dim", None)
        if fe_dim is not None and bb_dim is not None and fe_dim != bb_dim:
            raise ValueError(
                f"frontend gives {fe_dim} features per frame but the backbone expects "
                f"input_dim={bb_dim}; make model.backbone.init_args.input_dim match"
            )
        self.num_classes = num_classes
        self.class_names = (
            list(class_names) if class_names else [str(i) for i in range(num_classes)]
        )
        self.optimizer_factory = optimizer
        self.scheduler_factory = lr_scheduler
        self.lr_scheduler_monitor = lr_scheduler_monitor
        self.weight_decay = weight_decay
        self.label_smoothing = label_smoothing
        self.augment = augment
        self.verification_trials = verification_trials
        self.verification_seed = verification_seed
        # (embedding, speaker, clip key) per test batch, for verification at epoch end
        self._test_embeddings: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []
        self.compile_error: str | None = None
        # A function, not a registered submodule: the state dict keeps the backbone's names.
        self._compiled_backbone: Callable[..., torch.Tensor] | None = (
            torch.compile(backbone.forward) if compile else None
        )
        self.init_strategy = init
        self.init_report: list[dict] | None = None
        if init is not None:
            init.prepare(self)
        # This process's identity (config, seed, provenance), set by the CLI at setup and
        # saved in every checkpoint; on_load_checkpoint keeps it and records the loaded one.
        self.run_info: dict[str, Any] = {}
        # val/test: how many of this process's remaining items are real, where the
        # DistributedSampler padded the shard with repeats (None: no padding)
        self._real_items_left: dict[str, int | None] = {}

        # One confusion matrix + loss sum per stage, updated on-device every step and turned
        # into {stage}/loss|acc|f1 once per epoch (kwsnet.metrics.classification).
        self.metrics = nn.ModuleDict(
            {f"{s}_": ClassificationStats(num_classes) for s in ("train", "val", "test")}
        )

    def forward(
        self, audio: torch.Tensor, lengths: torch.Tensor, labels: torch.Tensor | None = None
    ) -> torch.Tensor:
        """``audio [B, T] (or [B, T, F]), lengths [B] -> logits [B, num_classes]``."""
        return self.head(self.embed(audio, lengths), labels)

    def embed(self, audio: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """The backbone's pooled embedding ``[B, embed_dim]`` (used for verification)."""
        feats, feat_lengths = self.frontend(audio, lengths)
        return self._run_backbone(feats, feat_lengths)

    @property
    def compile_backbone(self) -> bool:
        """Whether the backbone runs compiled (False when not asked, or after a fallback)."""
        return self._compiled_backbone is not None

    def _run_backbone(self, feats: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """The backbone, compiled where ``compile`` asked and torch.compile could build it."""
        compiled = self._compiled_backbone
        if compiled is None:
            return self.backbone(feats, lengths)
        try:
            return compiled(feats, lengths)
        except Exception as exc:
            if not _is_compile_failure(exc):
                raise
            self._fall_back_to_eager(exc)
            return self.backbone(feats, lengths)

    def _fall_back_to_eager(self, exc: BaseException) -> None:
        first = (str(exc).strip().splitlines() or [""])[0][:200]
        self.compile_error = f"{type(exc).__name__}: {first}"
        self._compiled_backbone = None
        warnings.warn(
            f"model.compile: torch.compile failed ({self.compile_error}); training eager",
            stacklevel=2,
        )

    def _probe_compile(self, feats: torch.Tensor, lengths: torch.Tensor) -> None:
        """Build the compiled forward and backward graphs once, so a compiler failure falls
        back to eager here instead of failing inside a training step's backward."""
        if self._compiled_backbone is None:
            return
        try:
            self._compiled_backbone(feats, lengths).float().sum().backward()
        except Exception as exc:
            if not _is_compile_failure(exc):
                raise
            self._fall_back_to_eager(exc)
        finally:
            for p in self.parameters():
                p.grad = None

    def _step(self, batch: dict[str, Any], stage: str) -> torch.Tensor:
        """Forward, loss and stage statistics of one batch; returns the loss."""
        labels = batch["label"]
        audio, lengths = batch["audio"], batch["lengths"]
        if stage == "train" and self.augment is not None:
            audio, lengths = self.augment(audio, lengths)
        embedding = self.embed(audio, lengths)
        logits = self.head(embedding, labels if stage == "train" else None)
        if stage == "test" and self.verification_trials > 0:
            keys = _clip_keys(batch.get("path"), len(labels))
            self._test_embeddings.append(
                (embedding.detach(), batch["speaker"], keys.to(embedding.device))
            )
        loss = F.cross_entropy(logits, labels, label_smoothing=self.label_smoothing)
        preds = logits.argmax(dim=-1)
        real = self._real_items(stage, labels.numel())
        if real is None:
            self.metrics[f"{stage}_"].update(preds, labels, loss)
        else:  # the batch ends in the sampler's padding: count the real items only
            losses = F.cross_entropy(
                logits, labels, reduction="none", label_smoothing=self.label_smoothing
            )
            kept = losses[:real].sum() / max(real, 1)  # 0 (times 0 items) for an empty rest
            self.metrics[f"{stage}_"].update(preds[:real], labels[:real], kept)
        # Per-step values only on the steps the trainer writes to the logger
        # (log_every_n_steps); the epoch values are logged at epoch end (_log_epoch).
        if stage == "train" and self._logging_step():
            self.log(
                "train/loss_step",
                loss.detach(),
                on_step=True,
                on_epoch=False,
                prog_bar=True,
                batch_size=labels.numel(),
            )
        return loss

    def _real_items(self, stage: str, n: int) -> int | None:
        """How many of this batch's ``n`` items are real, not the ``DistributedSampler``'s
        padding (``None``: all of them); counted down from the epoch start, on the host."""
        left = self._real_items_left.get(stage)
        if left is None:
            return None
        self._real_items_left[stage] = left - n
        return None if left >= n else max(left, 0)

    def _start_eval_epoch(self, stage: str) -> None:
        """Reset ``stage``'s statistics and count the real items of this process's shard."""
        self.metrics[f"{stage}_"].reset()
        trainer = self._trainer
        loaders = eval_dataloaders(trainer, stage) if trainer is not None else None
        sampler = loaders.sampler if isinstance(loaders, DataLoader) else None
        self._real_items_left[stage] = _real_shard_items(sampler)

    def _logging_step(self) -> bool:
        """Whether the trainer writes this training step's values to the logger."""
        trainer = self._trainer
        if trainer is None:
            return False
        return should_update_logs(trainer)

    def _log_epoch(self, stage: str) -> None:
        """Log ``{stage}/loss``, ``/acc`` and ``/f1`` of the epoch (synced across processes)."""
        stats = self.metrics[f"{stage}_"]
        if stats.update_count == 0:
            return  # an empty split: nothing to report
        values = stats.compute()
        self.log_dict(
            {f"{stage}/{k}": v for k, v in values.items()},
            on_step=False,
            on_epoch=True,
            prog_bar=stage == "val",
        )

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        return self._step(batch, "train")

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        return self._step(batch, "val")

    def test_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        return self._step(batch, "test")

    # Stats reset at epoch start, not end: a run resumed mid-epoch skips on_train_epoch_start
    # and keeps the partial sums ResumeState restored, and the test confusion matrix stays
    # readable after `test` (the CLI writes it to the run folder).
    def on_train_epoch_start(self) -> None:
        self.metrics["train_"].reset()

    def on_train_epoch_end(self) -> None:
        self._log_epoch("train")

    # Under DDP the DistributedSampler pads every shard to the same length with repeats of
    # the first items; val/test statistics (loss, acc, f1, the confusion matrix) leave them
    # out, so each item of the split counts once, as in one process.
    def on_validation_epoch_start(self) -> None:
        self._start_eval_epoch("val")

    def on_validation_epoch_end(self) -> None:
        self._log_epoch("val")

    def on_test_epoch_start(self) -> None:
        self._start_eval_epoch("test")
        self._test_embeddings = []

    def confusion_matrix(self, stage: str) -> torch.Tensor:
        """``[C, C]`` counts of ``stage``'s current (or last) epoch, rows label, columns
        prediction, summed over processes under DDP (a collective: every process must call)."""
        stats = self.metrics[f"{stage}_"]
        with stats.sync_context():  # a no-op in one process
            return stats.confmat.clone()

    def prediction_counts(self, stage: str) -> torch.Tensor | None:
        """Predictions per class ``[C]`` in ``stage``'s epoch (``None`` before any batch);
        ``CollapseMonitor`` reads them at epoch end."""
        if self.metrics[f"{stage}_"].update_count == 0:
            return None
        return self.confusion_matrix(stage).sum(dim=0)

    def target_counts(self, stage: str) -> torch.Tensor | None:
        """Labels per class ``[C]`` in ``stage``'s epoch (``None`` before any batch): which
        classes the split holds, for ``CollapseMonitor``."""
        if self.metrics[f"{stage}_"].update_count == 0:
            return None
        return self.confusion_matrix(stage).sum(dim=1)

    @property
    def test_confusion_matrix(self) -> torch.Tensor:
        """``confusion_matrix("test")``: what the CLI writes after ``test``."""
        return self.confusion_matrix("test")

    def _gathered_test_embeddings(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The test embeddings ``[N, D]`` and speaker labels ``[N]`` of every process, in the
        test split's order, each clip once (a collective under DDP: every process calls it).

        Lightning's ``DistributedSampler`` (no shuffle) gives rank ``r`` of ``W`` the clips
        ``r, r + W, r + 2W, ...`` and pads the last round with repeats of the first clips, so
        every rank has as many. The shards are gathered (padded to the longest, as
        ``all_gather`` needs equal shapes), interleaved back into the split's order, and a clip
        seen again (same path: the sampler's padding) is dropped, so the trials are drawn over
        exactly the list one process sees. In one process this changes nothing, unless the
        split lists one file twice (it counts once, in every world size); batches without
        ``path`` are never de-duplicated.
        """
        parts = self._test_embeddings
        self._test_embeddings = []
        dim = int(self.backbone.embed_dim)
        if parts:
            emb = torch.cat([e for e, _, _ in parts])
            spk = torch.cat([s for _, s, _ in parts]).to(emb.device)
            key = torch.cat([k for _, _, k in parts]).to(emb.device)
        else:  # an empty shard still joins the collectives
            emb = torch.zeros(0, dim, device=self.device)
            spk = torch.zeros(0, dtype=torch.long, device=self.device)
            key = torch.zeros(0, dtype=torch.long, device=self.device)
        world = self.trainer.world_size if self._trainer is not None else 1
        if world > 1:
            counts = self.all_gather(torch.tensor(len(emb), device=emb.device)).flatten()
            longest = int(counts.max())

            def padded(t: torch.Tensor) -> torch.Tensor:
                return torch.cat([t, t.new_zeros(longest - len(t), *t.shape[1:])])

            # [W, longest, ...] -> [longest, W, ...] -> rank r's i-th clip at i * W + r
            emb, spk, key = (
                self.all_gather(padded(t)).transpose(0, 1).flatten(0, 1) for t in (emb, spk, key)
            )
            valid = torch.arange(longest, device=counts.device)[:, None] < counts[None, :]
            valid = valid.flatten().to(emb.device)
            emb, spk, key = emb[valid], spk[valid], key[valid]
        first = _first_occurrences(key)
        return emb[first], spk[first]

    def on_test_epoch_end(self) -> None:
        self._log_epoch("test")
        if self.verification_trials <= 0:
            return
        emb, spk = self._gathered_test_embeddings()
        known = spk >= 0
        if int(known.sum()) < 2 or spk[known].unique().numel() < 2:
            return  # verification needs at least two speakers with labels
        result = verification_metrics(
            emb[known].float(), spk[known], self.verification_trials, self.verification_seed
        )
        self.log_dict({f"test/{k}": v for k, v in result.items()})

    def predict_step(self, batch: dict[str, Any], batch_idx: int) -> list[dict[str, Any]]:
        probs = self(batch["audio"], batch["lengths"]).softmax(dim=-1)
        conf, pred = probs.max(dim=-1)
        return [
            {"path": p, "pred": int(c), "label": self.class_names[int(c)], "prob": float(q)}
            for p, c, q in zip(batch["path"], pred, conf, strict=True)
        ]

    def setup(self, stage: str) -> None:
        """At fit: a ``BackgroundNoise`` without a noise folder mixes the data's own
        (``AudioDataModule.noise_dir``: Speech Commands' ``_background_noise_``) and says so;
        without one either, warn once that noise mixing is off."""
        if stage != "fit":
            return
        datamodule = self._trainer.datamodule if self._trainer is not None else None
        own = datamodule.noise_dir() if hasattr(datamodule, "noise_dir") else None
        filled = use_data_noise(self.augment, own)
        if self.global_rank == 0:
            if filled:
                print(
                    f"kwsnet: {', '.join(filled)} has no noise_dir: mixing the data's own "
                    f"noise recordings, {own} (set model.augment.init_args.noise_dir to "
                    "choose another folder)",
                    file=sys.stderr,
                )
            warn_if_noise_off(self.augment)

    def on_fit_start(self) -> None:
        # A resumed run already has trained weights: never re-initialise them.
        init = self.init_strategy is not None and self.trainer.ckpt_path is None
        if not init and self._compiled_backbone is None:
            return
        batch = next(iter(self.trainer.datamodule.train_dataloader()))
        batch = self.transfer_batch_to_device(batch, self.device, 0)

        # Features once, outside the calibration loop: a training-mode front end (SpecAugment)
        # would draw new masks at every LSUV measurement.
        with torch.no_grad():
            feats, feat_lengths = self.frontend(batch["audio"], batch["lengths"])
        self._probe_compile(feats, feat_lengths)
        if not init:
            return
        assert self.init_strategy is not None

        def forward() -> torch.Tensor:
            return self.head(self.backbone(feats, feat_lengths))

        rows = self.init_strategy.apply(self, forward)
        # Under DDP each rank calibrated on its own batch, after DDP's start-up broadcast:
        # give every rank rank 0's weights, or the replicas would train different models.
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            for tensor in [*self.parameters(), *self.buffers()]:
                torch.distributed.broadcast(tensor.data, src=0)
        self.init_report = rows
        name = type(self.init_strategy).__name__
        print(f"{name} init at fit start:\n{format_report(rows)}" if rows else f"{name}: no layers")
        logger = self.logger
        if rows and logger is not None and hasattr(logger, "log_table"):
            cols = list(rows[0])
            logger.log_table(
                key="init/report", columns=cols, data=[[r.get(c) for c in cols] for r in rows]
            )

    def configure_optimizers(self) -> Any:
        params = (
            param_groups(self, self.weight_decay)
            if self.weight_decay is not None
            else self.parameters()
        )
        optimizer = self.optimizer_factory(params)
        if self.scheduler_factory is None:
            return optimizer
        scheduler = self.scheduler_factory(optimizer)
        if isinstance(scheduler, WarmupDecay):  # sized from the run, stepped every step
            if scheduler.total_steps is None:
                scheduler.set_total_steps(max(1, int(self.trainer.estimated_stepping_batches)))
            return {
                "optimizer": optimizer,
                "lr_scheduler": {"scheduler": scheduler, "interval": "step"},
            }
        if isinstance(scheduler, ReduceLROnPlateau):  # stepped with a metric, every epoch
            monitor = self._plateau_monitor(scheduler)
            return {
                "optimizer": optimizer,
                "lr_scheduler": {"scheduler": scheduler, "monitor": monitor},
            }
        return {"optimizer": optimizer, "lr_scheduler": scheduler}

    def _plateau_monitor(self, scheduler: ReduceLROnPlateau) -> str:
        """The metric a ``ReduceLROnPlateau`` steps on (see ``lr_scheduler_monitor``)."""
        own = getattr(scheduler, "monitor", None)  # lightning.pytorch.cli.ReduceLROnPlateau
        chosen = self.lr_scheduler_monitor
        if own and chosen and own != chosen:
            raise ValueError(
                f"model.lr_scheduler monitors {own!r} but model.lr_scheduler_monitor is "
                f"{chosen!r}; set one of them"
            )
        if own or chosen:
            return str(own or chosen)
        mode = getattr(scheduler, "mode", "min")
        trainer = self._trainer
        for cb in trainer.checkpoint_callbacks if trainer is not None else []:
            if isinstance(cb, ModelCheckpoint) and cb.monitor and cb.mode == mode:
                return str(cb.monitor)
        return "val/loss" if mode == "min" else "val/acc"

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["kwsnet"] = dict(self.run_info)

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Keep this process's ``run_info`` (the CLI sets it at setup, before Lightning
        restores a checkpoint) and record the loaded one under ``resumed_from``: the list of
        earlier identities, oldest first, each without its own ``resumed_from`` (a chain of
        resumes stays flat; an identity equal to this one or already listed is not repeated).
        A module without one (built in Python, not by the CLI) takes the loaded one."""
        loaded = dict(checkpoint.get("kwsnet", {}))
        if not self.run_info:
            self.run_info = loaded
            return
        if not loaded:
            return
        current = _identity(self.run_info)
        chain = list(self.run_info.get("resumed_from", []))
        for earlier in [*loaded.get("resumed_from", []), _identity(loaded)]:
            if earlier != current and earlier not in chain:
                chain.append(earlier)
        if chain:
            self.run_info = {**self.run_info, "resumed_from": chain}


def _identity(run_info: dict[str, Any]) -> dict[str, Any]:
    """A ``run_info`` without its ``resumed_from`` history."""
    return {k: v for k, v in run_info.items() if k != "resumed_from"}


def _real_shard_items(sampler: Any) -> int | None:
    """How many items of this process's shard are real, when ``sampler`` pads it (else None).

    A ``DistributedSampler`` of ``N`` items and ``W`` processes (torch's, Lightning's wrapper
    or kwsnet's ``ResumableSampler``; shuffled or not) pads its order to ``ceil(N / W) * W``
    with repeats of its first items and gives rank ``r`` the positions ``r, r + W, ...``: the
    ``i``-th item of rank ``r`` is padding iff ``i * W + r >= N``, so the first
    ``ceil((N - r) / W)`` items of the shard are real and the rest are repeats.
    """
    if not isinstance(sampler, DistributedSampler) or sampler.drop_last:
        return None
    world, rank = int(sampler.num_replicas), int(sampler.rank)
    size = getattr(sampler, "size", None)  # ResumableSampler has no dataset
    if size is None:
        size = len(sampler.dataset)  # type: ignore[arg-type]
    real = max(0, -(-(int(size) - rank) // world))
    return real if real < int(sampler.num_samples) else None


def _clip_keys(paths: Sequence[str] | None, n: int) -> torch.Tensor:
    """A key ``>= 0`` per clip of a test batch, the same in every process: 63 bits of a digest
    of its path (``hash`` is salted per process); ``-1`` (never a duplicate) without paths."""
    if paths is None or len(paths) != n:
        return torch.full((n,), -1, dtype=torch.long)
    digests = [hashlib.blake2b(p.encode(), digest_size=8).digest() for p in paths]
    return torch.tensor([int.from_bytes(d, "little") >> 1 for d in digests], dtype=torch.long)


def _first_occurrences(keys: torch.Tensor) -> torch.Tensor:
    """``[N]`` bool: True at the first occurrence of each key ``>= 0`` and at every ``-1``."""
    if keys.numel() == 0:
        return keys.new_zeros(0, dtype=torch.bool)
    _, inverse = torch.unique(keys, return_inverse=True)
    pos = torch.arange(keys.numel(), device=keys.device)
    first = torch.full((int(inverse.max()) + 1,), keys.numel(), device=keys.device)
    first = first.scatter_reduce(0, inverse, pos, reduce="amin")
    return (first[inverse] == pos) | (keys < 0)
