"""``SegmentationTask``: the LightningModule that trains and evaluates any hrseg model.

Every hyper-parameter is an explicit typed argument, so LightningCLI turns each into a documented option and
checkpoints carry everything needed to rebuild the network (``model``, ``model_options``, the label
set). What belongs together is one value: the loss (:class:`~hrseg.losses.LossConfig`,
``--model.loss.*``), the optimiser and its schedule (:class:`~hrseg.optim.OptimizerConfig`,
``--model.optimizer.*``) and the evaluation protocol (:class:`~hrseg.eval_protocol.EvalProtocol`,
``--model.eval_protocol.*``); checkpoints store each as a plain dict. The task knows nothing about files:
batches come from a DataModule as ``{"image", "mask", "name"}``; predictions leave as ``{"pred", "name",
"path"}``.
"""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar, cast

import lightning as L
import torch
from lightning.fabric.utilities.data import AttributeDict
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn
from lightning.pytorch.utilities.types import OptimizerLRSchedulerConfig
from torch import Tensor, nn

from hrseg.colors import denormalize
from hrseg.eval_protocol import EvalProtocol
from hrseg.inference.protocol import class_argmax, infer
from hrseg.loggers import log_image
from hrseg.losses import CrossEntropy, LossConfig, resolve_class_weights
from hrseg.metadata import IMAGENET_MEAN, IMAGENET_STD, LabelSet, black_pixel
from hrseg.metrics import SegmentationMetrics, scores_to_log_dict
from hrseg.models import build_model, load_pretrained, upsample_logits
from hrseg.optim import OptimizerConfig, build_optimizer, poly_schedule
from hrseg.viz import plot_panels, save_evaluation_plots

__all__ = [
    "CompileError",
    "NonFiniteLossError",
    "SegmentationTask",
    "check_compile_options",
    "compile_graph",
]

_R = TypeVar("_R")


#: side of the square image in ``example_input_array`` (before rounding up to the model's ``size_divisor``)
EXAMPLE_INPUT_SIZE = 64


def _example_input(model: nn.Module) -> Tensor:
    """One small image for Lightning's model summary: the model's channels, a size every model accepts.

    The summary runs the network on it once (eval mode, no grad) for its "Total FLOPs" and the layers' in /
    out sizes, so the figure is for this input: FLOPs grow with the pixel count.
    """
    divisor = int(getattr(model, "size_divisor", 1))
    side = max(EXAMPLE_INPUT_SIZE, int(getattr(model, "min_export_size", 1)))
    side = math.ceil(side / divisor) * divisor
    return torch.zeros(1, int(getattr(model, "in_channels", 3)), side, side)


def _inputs_to_channels_last(module: nn.Module, args: tuple[Any, ...]) -> tuple[Any, ...]:
    """Forward pre-hook: give a 4-D image batch the channels_last layout of the weights (one copy)."""
    if args and isinstance(args[0], Tensor) and args[0].dim() == 4:
        return (args[0].contiguous(memory_format=torch.channels_last), *args[1:])
    return args


class NonFiniteLossError(RuntimeError):
    """Training produced non-finite losses (or weights) and cannot go on; the message names where."""


class CompileError(RuntimeError):
    """A compiled function does not compile as one graph (a graph break under ``fullgraph=True``)."""


def check_compile_options(backend: str, mode: str | None) -> None:
    """Refuse an unknown ``torch.compile`` backend or inductor mode before anything is compiled.

    Raises:
        ValueError: naming the valid choices.
    """
    import torch._dynamo
    import torch._inductor

    backends = torch._dynamo.list_backends(exclude_tags=())
    if backend not in backends:
        raise ValueError(f"unknown compile backend {backend!r}; choose from {', '.join(sorted(backends))}")
    if mode is not None:
        modes = [m for m in torch._inductor.list_mode_options() if m]
        if backend != "inductor":
            raise ValueError(f"compile mode {mode!r} is inductor's; backend {backend!r} takes none")
        if mode not in modes:
            raise ValueError(f"unknown compile mode {mode!r}; choose from {', '.join(modes)}")


def compile_graph(
    fn: Callable[..., _R],
    *,
    backend: str = "inductor",
    mode: str | None = None,
    dynamic: bool | None = False,
    what: str = "the function",
) -> Callable[..., _R]:
    """``torch.compile(fn, fullgraph=True)``: one graph (and, under autograd, one backward graph) or an error.

    ``fullgraph=True`` turns every graph break into an error instead of a silent split; here that error
    becomes a :class:`CompileError` whose first line names ``what``, the reason and the line of user code
    where tracing stopped. Compilation happens on
    the first call, and again only for inputs the guards reject (another shape with ``dynamic=False``).

    Args:
        fn: the function or module to compile.
        backend: a ``torch.compile`` backend (``inductor``; ``aot_eager`` traces forward and backward and
            runs them eagerly, which checks the graph without generating code).
        mode: inductor's mode (``reduce-overhead``, ``max-autotune``, ...); None: its default.
        dynamic: False: one static graph per input shape (fixed training crops); None: torch's default
            (static first, symbolic sizes after a shape changes).
        what: how error messages name ``fn``.
    """
    import torch._dynamo

    compiled = torch.compile(fn, fullgraph=True, dynamic=dynamic, backend=backend, mode=mode)

    @functools.wraps(fn, updated=())  # a module's __dict__ (its parameters) stays its own
    def run(*args: Any, **kwargs: Any) -> _R:
        try:
            return compiled(*args, **kwargs)
        except torch._dynamo.exc.Unsupported as err:
            text = str(err).strip()
            reason = text.splitlines()[0] if text else type(err).__name__
            # Dynamo's message ends with the user code it traced, innermost frame last: name that line
            frames = re.findall(r'File "([^"]+)", line (\d+)', text)
            where = f" (at {frames[-1][0]}:{frames[-1][1]})" if frames else ""
            raise CompileError(
                f"{what} does not compile as one graph (torch.compile fullgraph=True): {reason}{where}"
            ) from err

    return run


class SegmentationTask(L.LightningModule):
    """Semantic segmentation with HRNetV2 (or an smp baseline): loss, optimizer, schedule, metrics, plots.

    Args:
        model: network name for :func:`hrseg.build_model` (``hrnetv2_w48``, ``smp:Unet:resnet18``, ...).
        model_options: extra ``build_model`` keywords (``fuse_mode``, ``bn_momentum``, ``spec``...).
        labels: the classes (:class:`~hrseg.metadata.LabelSet`, its dict form or a registered name; linked
            from the DataModule by the CLI): the head's class count, the ignore value the loss and the metrics
            skip, the names of the metric keys (``val/iou_road``) and the plot colours.
        mean: normalization mean of the inputs, to draw images (linked).
        std: normalization std of the inputs (linked).
        weights: pretrained weights to initialise from: a file (official / timm ImageNet / safetensors /
            Lightning) or a Hugging Face Hub reference (``timm/hrnet_w48.ms_in1k``,
            ``hf-hub:org/name@revision``; cached, ``HF_HUB_OFFLINE=1`` reads the cache only); see
            :func:`hrseg.load_pretrained`. Loaded in :meth:`setup`, i.e. when training or evaluation
            starts; skipped when the CLI restores a ``--ckpt_path``, so resuming does not need this file.
        weights_ignore_head: skip the checkpoint's ``last_layer`` (fine-tuning to another class count).
        align_corners: ``align_corners`` of every bilinear resize (model fusion/head and logits upsampling).
        loss: what training minimises (:class:`~hrseg.losses.LossConfig`: ``terms`` of the main output, e.g.
            ``ce``, ``ohem`` or a weighted list with per-term options; ``class_weights``; ``output_weights``
            of auxiliary and main outputs). Metrics and evaluation use the main output only.
        optimizer: the optimiser and its per-iteration poly schedule over
            ``trainer.estimated_stepping_batches`` (:class:`~hrseg.optim.OptimizerConfig`: ``name`` sgd /
            adamw, ``lr``, ``momentum``, ``weight_decay``, ``nesterov``, ``head_lr_mult``, ``warmup_iters``,
            ``poly_power``; the official recipe by default).
        eval_protocol: how validation, test and predict run the network
            (:class:`~hrseg.eval_protocol.EvalProtocol`: ``mode`` whole / slide / official, ``window``,
            ``stride``, ``scales``, ``flip``, and the official pipeline's ``base_size`` / ``variant``;
            :func:`hrseg.inference.infer`; a flip swaps the label set's ``flip_pairs``). Stored in the
            checkpoint, so ``Segmenter`` and ``hrseg predict`` use it too unless told otherwise.
        log_images: image / ground truth / prediction panels logged per validation epoch (0 disables), to
            every logger through its own image call (TensorBoard ``add_image``, a PNG in a CSV run folder,
            W&B ``log_image``, MLflow ``log_image``; :mod:`hrseg.loggers`), like the test plots.
        channels_last: run the network and its inputs in channels_last (NHWC) memory format. None (auto):
            on for CUDA, where cuDNN's NHWC convolutions (tensor cores under bf16-mixed) are the fast ones,
            off on CPU, where it did not speed up training (``benchmarks/README.md``, finding 7).
        nonfinite_patience: a training step whose loss is NaN or infinite is skipped (no backward, no update)
            and counted in ``nonfinite_steps``; this many in a row stop training with
            :class:`NonFiniteLossError`, naming the step and the samples.
        compile: ``torch.compile`` the training step as one graph: the network's forward and every loss term
            (:meth:`forward_loss`, ``fullgraph=True``, static shapes) and with it, through AOTAutograd, the
            backward; for validation, test and predict the network and the per-image loss (shapes may
            vary there). Off by default: the first step compiles (W18-Small-v1: about a minute on 2 CPU
            cores), which can pay back over a long GPU run only (docs/cli.md, "Compiled training").
        compile_backend: the ``torch.compile`` backend: ``inductor`` (generates kernels; needs a C++ compiler
            on the CPU, Triton on the GPU); ``aot_eager`` traces forward and backward and runs them eagerly,
            which checks that the step compiles whole in seconds.
        compile_mode: inductor's mode: ``default`` (None), ``reduce-overhead`` (CUDA graphs),
            ``max-autotune`` ...
    """

    def __init__(
        self,
        model: str = "hrnetv2_w18_small_v1",
        model_options: dict[str, Any] | None = None,
        labels: LabelSet | str | dict[str, Any] | None = None,
        mean: tuple[float, float, float] = IMAGENET_MEAN,
        std: tuple[float, float, float] = IMAGENET_STD,
        weights: str | None = None,
        weights_ignore_head: bool = False,
        align_corners: bool = False,
        loss: LossConfig | None = LossConfig(),
        optimizer: OptimizerConfig | None = OptimizerConfig(),
        eval_protocol: EvalProtocol | None = EvalProtocol(),
        log_images: int = 4,
        channels_last: bool | None = None,
        nonfinite_patience: int = 5,
        compile: bool = False,
        compile_backend: str = "inductor",
        compile_mode: str | None = None,
    ) -> None:
        """Save hyper-parameters, then build the network, the loss and the metrics."""
        super().__init__()
        if labels is None:
            raise ValueError(
                "SegmentationTask needs labels: a LabelSet, a registered name "
                "(hrseg.metadata.list_label_sets()) or its dict form (the command line links the data's)"
            )
        #: the classes (a checkpoint stores the dict form, which load_from_checkpoint hands back)
        self.labels = LabelSet.coerce(labels)
        if nonfinite_patience < 1:
            raise ValueError(f"nonfinite_patience must be >= 1, got {nonfinite_patience}")
        if compile or compile_backend != "inductor" or compile_mode is not None:  # none goes unchecked
            check_compile_options(compile_backend, compile_mode)
        self.loss_config = LossConfig.coerce(loss)
        self.optimizer_config = OptimizerConfig.coerce(optimizer)
        self.eval_protocol = EvalProtocol.coerce(eval_protocol)
        # a checkpoint stores plain data (weights_only loading refuses dataclasses): each group as a dict;
        # a dict also comes back here from load_from_checkpoint
        self.save_hyperparameters(ignore=["labels", "loss", "optimizer", "eval_protocol"])
        self.hparams["labels"] = self.labels.to_dict()
        self.hparams["loss"] = self.loss_config.to_dict()
        self.hparams["optimizer"] = self.optimizer_config.to_dict()
        self.hparams["eval_protocol"] = self.eval_protocol.to_dict()
        # a plain attribute, not hparams: the compiled training step reads it (Dynamo cannot trace hparams)
        self._align_corners = bool(align_corners)
        self._pretrained_done = False
        self._channels_last = False
        self._panels: list[tuple[Tensor, Tensor, Tensor, str]] = []
        #: compiled functions by name, built on first use (never pickled: see __getstate__)
        self._compiled: dict[str, Callable[..., Any]] = {}
        #: training steps skipped for a non-finite loss, and how many of the latest ones were in a row
        self.nonfinite_steps = 0
        self._nonfinite_streak = 0
        self.configure_models()
        # Lightning's model summary reports FLOPs (0 without it) by running the network once on this
        self.example_input_array = _example_input(self.model)
        self.configure_losses()
        self.configure_metrics()

    @property
    def hparams(self) -> AttributeDict:
        """The saved hyper-parameters (Lightning's type also allows any mapping; this task saves a dict)."""
        return cast(AttributeDict, super().hparams)

    @classmethod
    def from_checkpoint(cls, path: str | Path, map_location: str | torch.device = "cpu") -> SegmentationTask:
        """Load an ``hrseg fit`` checkpoint, ``weights_only``: plain data and tensors, no pickled objects."""
        return cls.load_from_checkpoint(path, map_location=map_location, weights_only=True)

    def __getstate__(self) -> dict[str, Any]:
        """Lightning's state without the compiled functions (they do not pickle; rebuilt on first use)."""
        state = super().__getstate__()
        state["_compiled"] = {}
        return state

    def _maybe_compiled(self, name: str, fn: Callable[..., _R], dynamic: bool | None) -> Callable[..., _R]:
        """``fn`` itself, or with ``compile`` its :func:`compile_graph` (built once, on first use)."""
        hp = self.hparams
        if not hp.compile:
            return fn
        found = self._compiled.get(name)
        if found is None:
            if not self._compiled:
                rank_zero_info(
                    f"torch.compile (backend {hp.compile_backend}, mode {hp.compile_mode or 'default'}, "
                    "fullgraph): the first step of each kind compiles"
                )
            found = compile_graph(
                fn,
                backend=hp.compile_backend,
                mode=hp.compile_mode,
                dynamic=dynamic,
                what=f"the {name} of model {hp.model!r}",
            )
            self._compiled[name] = found
        return found

    # ------------------------------------------------------------------ construction
    def configure_models(self) -> None:
        """Build ``self.model`` (checkpoint keys are ``model.<official key>``)."""
        hp = self.hparams
        options = dict(hp.model_options or {})
        options.setdefault("align_corners", hp.align_corners)
        self.model: nn.Module = build_model(hp.model, num_classes=self.labels.num_classes, **options)

    def configure_losses(self) -> None:
        """Build ``self.criterion`` (the main output's loss terms) and ``self.aux_criterion`` (auxiliary CE).

        Also resolves ``self.loss_weights``, one per training output (the model's ``num_outputs``).
        """
        hp, config, labels = self.hparams, self.loss_config, self.labels
        self.criterion = config.build(labels)
        num_outputs = int(getattr(self.model, "num_outputs", 1))
        # as the official HRNet-OCR criterion: CE on auxiliary outputs, the configured loss (OHEM) on the main
        self.aux_criterion: CrossEntropy | None = None
        if num_outputs > 1:
            weights_table = resolve_class_weights(config.class_weights, labels)
            self.aux_criterion = CrossEntropy(labels.ignore_index, weights_table)
        try:
            self.loss_weights: list[float] = config.weights_for(num_outputs)
        except ValueError as err:
            raise ValueError(f"{err} (model {hp.model!r})") from None

    def configure_metrics(self) -> None:
        """One confusion-matrix metric per evaluation split (states sum across processes)."""
        labels = self.labels
        self.val_metrics = SegmentationMetrics(labels.num_classes, labels.ignore_index)
        self.test_metrics = SegmentationMetrics(labels.num_classes, labels.ignore_index)
        # eval loss: mean over images of the per-image loss, summed across processes (exact under DDP)
        from torchmetrics import MeanMetric

        self.val_loss = MeanMetric(nan_strategy="ignore")
        self.test_loss = MeanMetric(nan_strategy="ignore")

    def load_pretrained_weights(self) -> None:
        """Load ``weights`` into the network now (the CLI path calls this from :meth:`setup`)."""
        if self.hparams.weights is None or self._pretrained_done:
            return
        report = load_pretrained(
            self.model, self.hparams.weights, ignore_head=self.hparams.weights_ignore_head
        )
        rank_zero_info(f"pretrained weights: {report}")
        self._pretrained_done = True

    def skip_pretrained_weights(self) -> None:
        """Do not load ``weights``: a Lightning checkpoint will restore the whole network anyway.

        The CLI calls this whenever ``--ckpt_path`` is given, so resuming or evaluating a checkpoint on a
        machine without the (ImageNet) pretrained file works.
        """
        self._pretrained_done = True

    def setup(self, stage: str) -> None:
        """Pick the memory format; initialise from ``weights`` (once) unless a checkpoint restores the net."""
        self._setup_memory_format()
        if self.hparams.weights is None or self._pretrained_done:
            return
        trainer = self._trainer
        if trainer is not None and trainer.ckpt_path:
            return
        self.load_pretrained_weights()

    def _setup_memory_format(self) -> None:
        """Resolve ``channels_last`` (auto: CUDA only); convert the weights and, by a hook, every input."""
        wanted = self.hparams.channels_last
        if wanted is None:
            trainer = self._trainer
            wanted = trainer is not None and trainer.strategy.root_device.type == "cuda"
        if not wanted or self._channels_last:
            return
        self._channels_last = True
        self.model.to(memory_format=torch.channels_last)
        # a pre-hook, not on_after_batch_transfer: it also covers sliding-window crops and evaluate_logits,
        # and Lightning warns about batch-transfer hooks on a LightningModule trained from a DataModule
        self.model.register_forward_pre_hook(_inputs_to_channels_last)

    # ------------------------------------------------------------------ forward / inference
    def forward(self, image: Tensor) -> Tensor:
        """Raw network logits (HRNetV2: 1/4 resolution; multi-output models in training: a list)."""
        return self.model(image)

    def evaluate_logits(self, image: Tensor, size: Sequence[int] | None = None) -> Tensor:
        """Evaluation logits at ``size`` (default: the input size) with the configured protocol.

        The path of validation, test and predict: :func:`hrseg.inference.infer` with ``eval_protocol`` (the
        same function and protocol as ``Segmenter`` and ``hrseg predict``), or a plain forward when that is
        one whole-image pass.
        """
        hp = self.hparams
        out_size = tuple(size) if size is not None else tuple(image.shape[-2:])
        # evaluation images (and the last batch) may differ in size: symbolic sizes after the first change
        network = self._maybe_compiled("evaluation network", self.model, dynamic=None)
        if self.eval_protocol.single_pass:
            return upsample_logits(network(image), out_size, hp.align_corners)
        return infer(
            network,
            image,
            self.eval_protocol,
            align_corners=hp.align_corners,
            num_classes=self.labels.num_classes,
            size_divisor=int(getattr(self.model, "size_divisor", 1)),
            flip_permutation=self.labels.flip_permutation(),
            pad_value=black_pixel(hp.mean, hp.std),
            size=out_size,
        )

    # ------------------------------------------------------------------ steps
    def training_loss(
        self, outputs: Tensor | Sequence[Tensor], mask: Tensor
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """Weighted loss of the training outputs (one tensor, or auxiliary ones first and the main one last).

        Each output is resized to the mask; the main one goes through ``criterion`` (the ``loss`` spec, e.g.
        OHEM), auxiliary ones through ``aux_criterion`` (CE); returns the total and, for several outputs, the
        unweighted terms (``loss_aux``, ``loss_aux_1``, ..., ``loss_main``).
        """
        outs: list[Tensor] = [outputs] if isinstance(outputs, Tensor) else list(outputs)
        if len(outs) != len(self.loss_weights):
            raise ValueError(
                f"the model returned {len(outs)} outputs for {len(self.loss_weights)} loss weights"
            )
        size, ac = mask.shape[-2:], self._align_corners
        terms: dict[str, Tensor] = {}
        total: Tensor | None = None
        for i, (weight, out) in enumerate(zip(self.loss_weights, outs, strict=True)):
            logits = upsample_logits(out, size, ac)
            if i == len(outs) - 1:
                name, term = "loss_main", self.criterion(logits, mask)
            else:
                name = "loss_aux" if i == 0 else f"loss_aux_{i}"
                assert self.aux_criterion is not None  # built whenever the model has several outputs
                term = self.aux_criterion(logits.float(), mask)
            terms[name] = term
            total = weight * term if total is None else total + weight * term
        assert total is not None
        return total, (terms if len(outs) > 1 else {})

    def forward_loss(self, image: Tensor, mask: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        """The training step's computation: the network on ``image``, then :meth:`training_loss` on ``mask``.

        With ``compile`` this is what compiles as one graph: no host synchronisation and no shape that
        depends on the data in it, so it runs batch after batch without a recompilation or a wait.
        """
        return self.training_loss(self.model(image), mask)

    def training_forward(self) -> Callable[[Tensor, Tensor], tuple[Tensor, dict[str, Tensor]]]:
        """What :meth:`training_step` runs: :meth:`forward_loss`, compiled as one graph with ``compile``.

        Training crops have one size (and the last partial batch is dropped): one static graph.
        """
        return self._maybe_compiled("training step", self.forward_loss, dynamic=False)

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> Tensor | None:
        """Forward, logits resized to the mask, loss; logs ``train/loss`` (and its terms), ``train/lr``."""
        image, mask = batch["image"], batch["mask"]
        # BN running statistics change in the forward itself; keep a copy (a few KB, on the device) so a
        # skipped step leaves no trace of a NaN batch in them
        buffers = list(self.model.buffers())
        saved = [b.detach().clone() for b in buffers]
        loss, terms = self.training_forward()(image, mask)
        if not self._loss_is_finite(loss, batch):
            with torch.no_grad():
                for buffer, value in zip(buffers, saved, strict=True):
                    buffer.copy_(value)
            return None  # Lightning skips backward and the update; the schedule still advances
        batch_size = image.shape[0]
        self.log("train/loss", loss, prog_bar=True, batch_size=batch_size)
        for name, term in terms.items():
            self.log(f"train/{name}", term.detach(), batch_size=batch_size)
        if self._trainer is not None and self.trainer.optimizers:
            self.log(
                "train/lr", float(self.trainer.optimizers[0].param_groups[0]["lr"]), batch_size=batch_size
            )
        return loss

    def _loss_is_finite(self, loss: Tensor, batch: dict[str, Any]) -> bool:
        """Whether this step's loss is finite on every process; count, report or stop when it is not.

        Reading the flag costs one host sync per step, the same as ``torch.amp.GradScaler``'s skip test; the
        processes then agree through one tiny all-reduce, so under DDP all of them skip together (a lone
        skipping rank would leave the others waiting in the gradient all-reduce).
        """
        finite = bool(torch.isfinite(loss.detach()).all())
        if self._trainer is not None:
            finite = self.trainer.strategy.reduce_boolean_decision(finite, all=True)
        if finite:
            self._nonfinite_streak = 0
            return True
        self.nonfinite_steps += 1
        self._nonfinite_streak += 1
        names = list(batch.get("name") or [])
        where = f"step {self.global_step} (epoch {self.current_epoch}), samples {names}"
        if self._nonfinite_streak >= self.hparams.nonfinite_patience:
            raise NonFiniteLossError(
                f"{self._nonfinite_streak} consecutive training steps had a non-finite loss; the last at "
                f"{where}. Check those samples, lower the learning rate or clip gradients "
                "(--trainer.gradient_clip_val)."
            )
        rank_zero_warn(
            f"non-finite loss at {where}: step skipped ({self.nonfinite_steps} skipped so far, "
            f"training stops after {self.hparams.nonfinite_patience} in a row)"
        )
        return False

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Refuse to write non-finite weights: a NaN network must never become ``best`` or ``last``."""
        bad = [
            key
            for key, value in checkpoint.get("state_dict", {}).items()
            if isinstance(value, Tensor)
            and value.is_floating_point()
            and not bool(torch.isfinite(value).all())
        ]
        if bad:
            raise NonFiniteLossError(
                f"refusing to save a checkpoint at step {self.global_step}: non-finite values in "
                f"{len(bad)} tensors ({', '.join(bad[:5])}{', ...' if len(bad) > 5 else ''})"
            )

    def per_image_loss(self, logits: Tensor, mask: Tensor) -> Tensor:
        """``(B,)``: the main criterion per image (the epoch mean ignores batching and process count)."""
        return torch.stack([self.criterion(logits[i : i + 1], mask[i : i + 1]) for i in range(len(mask))])

    def _eval_step(self, batch: dict[str, Any], metrics: SegmentationMetrics, split: str) -> Tensor:
        """Shared validation / test step: logits at mask size, loss, confusion-matrix update."""
        image, mask = batch["image"], batch["mask"]
        logits = self.evaluate_logits(image, mask.shape[-2:])
        loss = self._maybe_compiled("evaluation loss", self.per_image_loss, dynamic=None)(logits, mask)
        mean_loss = self.val_loss if split == "val" else self.test_loss
        mean_loss.update(loss.detach())
        self.log(f"{split}/loss", mean_loss, on_step=False, on_epoch=True, batch_size=image.shape[0])
        preds = class_argmax(logits)
        metrics.update(preds, mask)
        return preds

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        """Accumulate validation metrics; keep a few samples for the epoch's panels."""
        preds = self._eval_step(batch, self.val_metrics, "val")
        self._collect_panels(batch, preds)

    def test_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        """Accumulate test metrics."""
        self._eval_step(batch, self.test_metrics, "test")

    def predict_step(self, batch: dict[str, Any], batch_idx: int, dataloader_idx: int = 0) -> dict[str, Any]:
        """Label maps ``(B, H, W)`` int64 at the input size, with the batch's names, paths and read errors.

        A batch made only of unreadable images (the dataset's ``error`` entries) is not run: ``pred`` is None.
        """
        names = batch.get("name")
        out = {"name": names, "path": batch.get("path", names), "error": batch.get("error")}
        if out["error"] and all(out["error"]):
            return {"pred": None, **out}
        return {"pred": class_argmax(self.evaluate_logits(batch["image"])), **out}

    # ------------------------------------------------------------------ epoch ends
    def _log_scores(self, metrics: SegmentationMetrics, split: str) -> dict[str, Tensor]:
        """Compute (synced across processes), log and reset one split's metrics."""
        scores = metrics.compute()
        self.log_dict(scores_to_log_dict(scores, split, self.labels.class_names), sync_dist=False)
        metrics.reset()
        return scores

    def on_validation_epoch_start(self) -> None:
        """Start a fresh set of panels."""
        self._panels = []

    def on_validation_epoch_end(self) -> None:
        """Log mIoU, per-class IoU, pixel and mean accuracy; draw the panels."""
        self._log_scores(self.val_metrics, "val")
        self._log_panels()

    def on_test_epoch_end(self) -> None:
        """Log the scores, print a per-class table and save the confusion matrix / IoU plots."""
        scores = self._log_scores(self.test_metrics, "test")
        self.test_scores = {k: v.detach().cpu() for k, v in scores.items()}
        out_dir = self._report_dir()  # collective under DDP (trainer.log_dir broadcasts): call on every rank
        if self.trainer.is_global_zero:
            self._print_table(self.test_scores, "test")
            if out_dir is not None:
                paths = save_evaluation_plots(
                    out_dir,
                    scores["confmat"].cpu(),
                    scores["iou"].cpu(),
                    self.labels.class_names,
                    self.labels.palette,
                )
                self.print(f"saved plots: {', '.join(str(p) for p in paths)}")
                for path in paths:  # and to every logger's image API (a CSV run folder has them already)
                    log_image(
                        self.trainer.loggers,
                        f"test/{path.stem.removeprefix('test_')}",
                        path,
                        self.global_step,
                        written_to=out_dir,
                    )

    # ------------------------------------------------------------------ reporting helpers
    def _report_dir(self) -> Path | None:
        """Where evaluation figures go: the logger's run directory, else the trainer's root directory."""
        trainer = self._trainer
        if trainer is None:
            return None
        log_dir = trainer.log_dir
        return Path(log_dir) if log_dir else Path(trainer.default_root_dir)

    def _print_table(self, scores: dict[str, Tensor], split: str) -> None:
        """Per-class IoU / accuracy table on the console (rich)."""
        from rich.console import Console
        from rich.table import Table

        table = Table(title=f"{split}: per-class IoU ({self.hparams.model})")
        table.add_column("class")
        table.add_column("IoU", justify="right")
        table.add_column("acc", justify="right")
        for name, iou, acc in zip(
            self.labels.class_names, scores["iou"].tolist(), scores["acc"].tolist(), strict=True
        ):
            table.add_row(name, f"{iou:.4f}", f"{acc:.4f}")
        table.add_section()
        table.add_row("mIoU", f"{float(scores['mIoU']):.4f}", f"{float(scores['mean_acc']):.4f}")
        table.add_row("mIoU (classes present)", f"{float(scores['mIoU_present']):.4f}", "")
        table.add_row("pixel acc", "", f"{float(scores['pixel_acc']):.4f}")
        Console().print(table)

    def _collect_panels(self, batch: dict[str, Any], preds: Tensor) -> None:
        """Keep the first ``log_images`` validation samples (on the CPU) for the epoch's figure."""
        wanted = self.hparams.log_images
        trainer = self._trainer
        if wanted <= 0 or len(self._panels) >= wanted or trainer is None or trainer.sanity_checking:
            return
        if not trainer.is_global_zero:
            return
        image, mask = batch["image"], batch["mask"]
        if image.shape[-2:] != mask.shape[-2:]:
            image = torch.nn.functional.interpolate(image.float(), size=mask.shape[-2:], mode="bilinear")
        names = batch.get("name") or [str(i) for i in range(image.shape[0])]
        for i in range(image.shape[0]):
            if len(self._panels) >= wanted:
                break
            self._panels.append(
                (image[i].detach().cpu(), mask[i].detach().cpu(), preds[i].detach().cpu(), names[i])
            )

    def _log_panels(self) -> None:
        """Draw the collected panels and send them to every logger (:func:`hrseg.loggers.log_image`)."""
        panels, self._panels = self._panels, []
        trainer = self._trainer
        if not panels or trainer is None or not trainer.loggers:
            return
        images = [denormalize(p[0], self.hparams.mean, self.hparams.std) for p in panels]
        fig = plot_panels(
            images,
            [p[1] for p in panels],
            [p[2] for p in panels],
            self.labels.palette,
            self.labels.ignore_index,
            names=[p[3] for p in panels],
            class_names=self.labels.class_names,
        )
        log_image(trainer.loggers, "val/predictions", fig, self.global_step)

    # ------------------------------------------------------------------ optimization
    def parameter_groups(self) -> list[dict[str, Any]]:
        """Head parameters (the model's ``head_modules``) get ``lr * head_lr_mult``."""
        return self.optimizer_config.parameter_groups(self.model)

    def configure_optimizers(self) -> OptimizerLRSchedulerConfig:
        """SGD or AdamW with a per-iteration poly schedule (and optional warmup), from ``optimizer``."""
        optimizer = build_optimizer(self.model, self.optimizer_config)
        total = self.trainer.estimated_stepping_batches
        if not math.isfinite(total) or total <= 0:
            raise ValueError(
                "the poly schedule needs a finite step count: set trainer.max_steps or trainer.max_epochs"
            )
        scheduler = poly_schedule(optimizer, self.optimizer_config, int(total))
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
