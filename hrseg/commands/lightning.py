"""LightningCLI for ``hrseg fit|validate|test|predict``: defaults, argument links and config-name lookup.

What this adds to plain LightningCLI:

- the DataModule's label set (``labels``) and input normalisation (``mean``, ``std``) flow into
  :class:`~hrseg.task.SegmentationTask`, so no config repeats (or contradicts) them;
- ``--data cityscapes`` names a registered dataset (:mod:`hrseg.data.registry`; class names and class paths
  work too);
- default callbacks that fit segmentation: the best-``val/mIoU`` checkpoint (``--checkpoint.*``),
  ``last.ckpt`` rewritten at every save (``--last_checkpoint.*``), a learning-rate monitor
  (``--lr_monitor.*``) and Lightning's rich progress bar;
- ``hrseg predict`` writes PNGs (:class:`hrseg.callbacks.PredictionWriter`) to
  ``<default_root_dir>/predictions`` unless the config brings its own prediction writer;
- ``--config demo`` or ``--config cityscapes/hrnetv2_w48`` find the configs shipped inside the package, so an
  installed ``hrseg`` works outside a checkout;
- ``--ckpt_path last`` finds the newest ``last.ckpt`` of earlier runs (Lightning alone only looks in the
  new run's version directory, where there is none yet) and resumes optimizer, schedule and step from it;
- OmegaConf interpolation (``${...}``) inside config files, resolved after the command line
  (``parser_mode="omegaconf+"``: ``--model.model X`` moves a ``runs/${..model.model}`` folder too); a fixed
  default seed;
- one optimiser switch, the task's ``--model.optimizer`` (with its poly schedule, warmup and head lr):
  LightningCLI's own ``--optimizer`` / ``--lr_scheduler`` are not offered
  (``auto_configure_optimizers=False``);
- mistakes end in one line (:class:`hrseg.commands.options.UsageError` for the command line, exit 2): an
  unknown config name lists the shipped ones, an unreadable ``--ckpt_path`` is diagnosed before any Trainer
  work, a launch that fails before its first step leaves no empty ``version_N`` folder behind, and
  evaluating without ``--ckpt_path`` or ``--model.weights`` warns that the network is untrained;
- preemption safety: ``last.ckpt`` also every N training steps or minutes
  (``--last_checkpoint.every_n_train_steps`` / ``--last_checkpoint.train_time_interval``, besides every
  validation), written atomically (:class:`hrseg.checkpoint_io.AtomicCheckpointIO`: temp file in the same
  folder, fsync, rename); SIGTERM saves ``last.ckpt`` at the end of the current step and exits with code 143
  (:class:`hrseg.callbacks.LastCheckpoint`); the training loader position is part of every checkpoint, so
  ``--ckpt_path last`` continues bit-identically (:class:`hrseg.data.resume.ResumableDataLoader`).

Clusters. Any scheduler that sends SIGTERM before killing (Kubernetes, most batch systems, SLURM's
``scancel``/preemption with ``GraceTime``): rerun the same command with ``--ckpt_path last``; the exit code
143 marks the stop as a failure so restart policies restart it. SLURM requeue goes through Lightning's
``SLURMEnvironment`` (detected automatically inside an ``sbatch`` job; ``auto_requeue`` on by default): submit
with ``#SBATCH --requeue`` and ``#SBATCH --signal=SIGUSR1@90``; on SIGUSR1 Lightning writes
``<default_root_dir>/hpc_ckpt_<n>.ckpt`` and runs ``scontrol requeue``; the requeued job's
``--ckpt_path last`` picks the newest of ``last.ckpt`` and ``hpc_ckpt_*.ckpt``. Explicitly:
``--trainer.plugins+=lightning.pytorch.plugins.environments.SLURMEnvironment
--trainer.plugins.auto_requeue=true --trainer.plugins.requeue_signal=SIGUSR1``. Lightning saves the hpc
checkpoint from inside the signal handler (possibly mid-step); the SIGTERM path stops at a step boundary.
Multi-node: ``torchrun`` or Lightning's variables (``MASTER_ADDR``, ``MASTER_PORT``, ``NODE_RANK``,
``WORLD_SIZE``, ``LOCAL_RANK``) with ``--trainer.num_nodes N --trainer.devices D`` (tests/test_ddp.py).
"""

from __future__ import annotations

import logging
import shutil
import sys
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch.distributed as dist
from lightning.fabric.plugins import CheckpointIO
from lightning.pytorch import Trainer
from lightning.pytorch.callbacks import (
    BasePredictionWriter,
    Callback,
    LearningRateMonitor,
    ModelCheckpoint,
    RichProgressBar,
)
from lightning.pytorch.callbacks.progress import ProgressBar
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn
from lightning.pytorch.utilities.exceptions import SIGTERMException
from lightning.pytorch.utilities.rank_zero import rank_zero_module

from hrseg.callbacks import LastCheckpoint
from hrseg.checkpoint import read_lightning_record
from hrseg.checkpoint_io import AtomicCheckpointIO
from hrseg.commands.configs import resolve_config_args
from hrseg.commands.options import UsageError
from hrseg.data.datamodule import SegmentationDataModule
from hrseg.data.registry import get_dataset, list_datasets
from hrseg.task import SegmentationTask

__all__ = [
    "SIGTERM_EXIT_CODE",
    "HRSegCLI",
    "find_last_checkpoint",
    "resolve_dataset_names",
    "run_lightning_cli",
    "silence_lightning_adverts",
]

#: DataModule attributes linked into the task's hyper-parameters: the label set and the input normalisation.
LINKED_METADATA = ("labels", "mean", "std")

DEFAULT_SEED = 42

#: ``ckpt_path`` values Lightning resolves itself (or ``last``, resolved here): no file to check.
LIGHTNING_CKPT_NAMES = ("last", "best", "hpc", "registry")

#: exit status of a fit stopped by SIGTERM after saving ``last.ckpt`` (128 + 15, as a shell reports it):
#: not 0, so schedulers and job controllers that restart failed jobs restart it.
SIGTERM_EXIT_CODE = 143

#: what Lightning's "💡 Tip" lines advertise (2.6: litlogger at every Trainer start, litmodels beside its
#: default checkpoint callback); no Trainer option or environment variable turns them off
LIGHTNING_ADVERTS = ("pypi.org/project/litlogger", "pypi.org/project/litmodels")


class LightningAdvertFilter(logging.Filter):
    """Drops Lightning's advertisements of its cloud services (:data:`LIGHTNING_ADVERTS`); the rest passes."""

    def filter(self, record: logging.LogRecord) -> bool:
        """False for an advertisement."""
        message = record.getMessage()
        return not any(link in message for link in LIGHTNING_ADVERTS)


def silence_lightning_adverts() -> None:
    """Filter Lightning's advertisements out of its rank-zero log (once; ``hrseg fit|validate|test|predict``).

    Lightning logs them through the logger of its rank-zero helpers, as it does "GPU available", so a filter
    on that logger drops them before any handler prints and leaves its other messages alone.
    """
    log = rank_zero_module.log
    if not any(isinstance(f, LightningAdvertFilter) for f in log.filters):
        log.addFilter(LightningAdvertFilter())


def find_last_checkpoint(trainer: Trainer) -> str | None:
    """Newest ``last*.ckpt`` written by earlier runs of this configuration (None when there is none).

    Looks in every ``ModelCheckpoint.dirpath``, in all version directories of each logger
    (``<save_dir>/<name>/*/checkpoints``) and in ``<default_root_dir>/checkpoints``.
    """
    folders: list[Path] = []
    for callback in trainer.checkpoint_callbacks:
        dirpath = getattr(callback, "dirpath", None)
        if dirpath:
            folders.append(Path(dirpath))
    root = Path(trainer.default_root_dir)
    for logger in trainer.loggers:
        save_dir = Path(logger.save_dir) if logger.save_dir is not None else root
        base = save_dir / str(logger.name) if logger.name else save_dir
        folders.extend(p / "checkpoints" for p in base.glob("*") if p.is_dir())
    folders.append(root / "checkpoints")
    found = [p for folder in folders if folder.is_dir() for p in folder.glob("last*.ckpt") if p.is_file()]
    # Lightning's SLURM auto-requeue (SIGUSR1) saves `hpc_ckpt_<n>.ckpt` in the root directory
    found += [p for p in root.glob("hpc_ckpt_*.ckpt") if p.is_file()]
    if not found:
        return None
    return str(max(found, key=lambda p: p.stat().st_mtime))


class HRSegCLI(LightningCLI):
    """LightningCLI with hrseg's links, callbacks and checkpoint lookup."""

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        """Default callbacks as configurable groups and the DataModule -> task metadata links."""
        parser.add_lightning_class_args(ModelCheckpoint, "checkpoint")
        parser.set_defaults(
            {
                "checkpoint.monitor": "val/mIoU",
                "checkpoint.mode": "max",
                "checkpoint.save_last": False,
                "checkpoint.save_top_k": 1,
                "checkpoint.filename": "best-epoch{epoch:03d}-step{step:06d}",
                "checkpoint.auto_insert_metric_name": False,
            }
        )
        # `last.ckpt` comes from a second, unmonitored checkpoint that overwrites itself at every save: since
        # Lightning 2.6, `save_last=True` on the monitored one only writes last.ckpt when the best improves.
        parser.add_lightning_class_args(LastCheckpoint, "last_checkpoint")
        parser.set_defaults(
            {
                "last_checkpoint.monitor": None,
                "last_checkpoint.save_top_k": 1,
                "last_checkpoint.filename": "last",
                "last_checkpoint.save_last": False,
            }
        )
        parser.add_lightning_class_args(LearningRateMonitor, "lr_monitor")
        parser.set_defaults({"lr_monitor.logging_interval": "step"})
        for name in LINKED_METADATA:
            parser.link_arguments(f"data.{name}", f"model.{name}", apply_on="instantiate")

    #: set by run_lightning_cli: whether ``--model.eval_protocol.*`` was given on the command line
    protocol_on_command_line = False

    def _parse_ckpt_path(self) -> None:
        """Apply a ``--ckpt_path`` checkpoint's hyper-parameters to the config, as LightningCLI does.

        Unlike LightningCLI, it is read ``weights_only`` (:func:`hrseg.checkpoint.read_lightning_record`:
        tensors memory-mapped, no pickled objects), and a protocol given on the command line wins (Lightning
        applies the checkpoint's values over everything else).
        """
        if not self.config.get("subcommand"):
            return
        ckpt_path = self.config[self.config.subcommand].get("ckpt_path")
        if not ckpt_path or not Path(ckpt_path).is_file():
            return
        hparams = dict(read_lightning_record(ckpt_path).get("hyper_parameters") or {})
        hparams.pop("_instantiator", None)
        if not hparams:
            return
        if self.protocol_on_command_line:
            hparams.pop("eval_protocol", None)
        if "_class_path" in hparams:
            hparams = {"class_path": hparams.pop("_class_path"), "dict_kwargs": hparams}
        self.config = self.parser.parse_object({self.config.subcommand: {"model": hparams}}, self.config)

    def instantiate_classes(self) -> None:
        """Build model, data and trainer; a value their constructors refuse is a usage error (one line)."""
        from hrseg.checkpoint import CheckpointError
        from hrseg.data.checks import DatasetError

        try:
            super().instantiate_classes()
        except (CheckpointError, DatasetError):
            raise
        except (ValueError, TypeError) as err:
            raise UsageError(f"invalid configuration: {_one_line(str(err))}") from err

    def instantiate_trainer(self, **kwargs: Any) -> Trainer:
        """Add the rich progress bar (unless disabled or replaced) and, for predict, a prediction writer."""
        config = self._get(self.config_init, "trainer", default={})
        given = config.get("callbacks")
        callbacks = list(given) if isinstance(given, list) else [] if given is None else [given]
        extra: list[Callback] = []
        if config.get("enable_progress_bar") is not False and not any(
            isinstance(cb, ProgressBar) for cb in callbacks
        ):
            extra.append(RichProgressBar())
        if self.subcommand == "predict" and not any(isinstance(cb, BasePredictionWriter) for cb in callbacks):
            extra.append(self._default_prediction_writer(config))
        if extra:
            kwargs.setdefault("callbacks", [*callbacks, *extra])
        plugins = config.get("plugins")
        plugins = list(plugins) if isinstance(plugins, list) else [] if plugins is None else [plugins]
        if not any(isinstance(p, CheckpointIO) for p in plugins):
            kwargs.setdefault("plugins", [*plugins, AtomicCheckpointIO()])
        return super().instantiate_trainer(**kwargs)

    @staticmethod
    def _default_prediction_writer(config: dict[str, Any]) -> Callback:
        """``hrseg predict`` writes PNGs to ``<default_root_dir>/predictions`` unless configured otherwise."""
        from hrseg.callbacks import PredictionWriter

        root = Path(config.get("default_root_dir") or ".")
        out = root / "predictions"
        rank_zero_info(f"predictions will be written to {out}")
        return PredictionWriter(output_dir=str(out))

    def _prepare_checkpoint(self) -> None:
        """Turn ``ckpt_path: last`` into the newest ``last.ckpt`` of earlier runs.

        When a checkpoint will be restored, the task skips its ``weights`` file (the checkpoint replaces
        the whole network), so resuming or evaluating does not need the pretrained file.
        """
        if self.subcommand is None:
            return
        sub = self.config_init[self.subcommand]
        if sub.get("ckpt_path") == "last":
            path = find_last_checkpoint(self.trainer)
            if path is None:
                rank_zero_warn(
                    "ckpt_path=last: no last.ckpt from an earlier run was found; starting from scratch"
                )
            else:
                self.trainer.print(f"Resuming from {path}")
            sub["ckpt_path"] = path
        ckpt_path = sub.get("ckpt_path")
        if ckpt_path and isinstance(self.model, SegmentationTask):
            self.model.skip_pretrained_weights()
        if (
            not ckpt_path
            and self.subcommand in ("validate", "test", "predict")
            and isinstance(self.model, SegmentationTask)
            and not self.model.hparams.get("weights")
        ):
            print(
                f"hrseg {self.subcommand}: warning: no --ckpt_path and no --model.weights: this scores an "
                "untrained (randomly initialised) network",
                file=sys.stderr,
            )
        self._check_inputs()

    def _check_inputs(self) -> None:
        """Fail in the launching process, once, on a missing data root or weights file.

        Under DDP the launcher starts one process per device after this hook; an error raised later (in
        ``setup``) would print once per process. So with several processes the DataModule lists its split
        here first, and the task loads its pretrained ``weights`` here in every case (``setup`` then skips
        them); both are needed anyway and cost no extra work.
        """
        stage = self.subcommand
        if stage not in ("fit", "validate", "test", "predict"):
            return
        if self.trainer.world_size > 1 and isinstance(self.datamodule, SegmentationDataModule):
            self.datamodule.setup(stage)
        if stage == "fit" and isinstance(self.model, SegmentationTask):
            self.model.load_pretrained_weights()

    def _run_subcommand(self, subcommand: str) -> None:
        """Run the subcommand; a launch that fails before its first step leaves no empty run folder."""
        existed = self._run_folders()
        try:
            super()._run_subcommand(subcommand)
        except BaseException:
            if self.trainer.global_step == 0 and self.trainer.is_global_zero:
                self._remove_new_run_folders(existed)
            raise

    def _run_folders(self) -> set[Path]:
        """The run folders that exist now: ``default_root_dir``, each logger's folder and its versions."""
        found = {Path(self.trainer.default_root_dir)}
        for logger in self.trainer.loggers:
            if logger.save_dir is None:
                continue
            base = Path(logger.save_dir) / str(logger.name) if logger.name else Path(logger.save_dir)
            found.add(base)
            found.update(p for p in base.glob("*") if p.is_dir())
        return {p for p in found if p.is_dir()}

    def _remove_new_run_folders(self, existed: set[Path]) -> None:
        """Delete the run folders this launch created, unless they hold a checkpoint."""
        for folder in sorted(self._run_folders() - existed, key=lambda p: len(p.parts)):
            if folder.is_dir() and not any(p.suffix == ".ckpt" for p in folder.rglob("*")):
                shutil.rmtree(folder, ignore_errors=True)

    def before_fit(self) -> None:
        """Resolve ``--ckpt_path last`` before training; start the clock for the summary."""
        self._prepare_checkpoint()
        self._fit_started = time.perf_counter()

    def after_fit(self) -> None:
        """Print what a newcomer looks for: duration, final and best val mIoU, where the checkpoints are."""
        trainer = self.trainer
        log_dir = trainer.log_dir  # a collective call under DDP: every process must make it
        if not trainer.is_global_zero:
            return
        elapsed = time.perf_counter() - getattr(self, "_fit_started", time.perf_counter())
        lines = [f"fit finished in {elapsed / 60:.1f} min ({elapsed:.0f} s), {trainer.global_step} steps"]
        last = trainer.callback_metrics.get("val/mIoU")
        present = trainer.callback_metrics.get("val/mIoU_present")
        if last is not None:
            line = f"val/mIoU (last epoch): {float(last):.4f}"
            if present is not None and abs(float(present) - float(last)) > 1e-6:
                line += f" (over the classes present in val: {float(present):.4f})"
            lines.append(line)
        for ckpt in trainer.checkpoint_callbacks:
            if not isinstance(ckpt, ModelCheckpoint):
                continue
            if ckpt.monitor is not None and ckpt.best_model_score is not None:
                score = float(ckpt.best_model_score)
                lines.append(f"best {ckpt.monitor}: {score:.4f} -> {ckpt.best_model_path}")
            elif ckpt.monitor is None and ckpt.best_model_path:
                lines.append(f"last checkpoint: {ckpt.best_model_path}")
            if ckpt.last_model_path:
                lines.append(f"last checkpoint: {ckpt.last_model_path}")
        if log_dir:
            lines.append(f"logs: {log_dir} (tensorboard --logdir {log_dir})")
        trainer.print("\n".join(lines))

    def before_validate(self) -> None:
        """Resolve ``--ckpt_path last`` before validating."""
        self._prepare_checkpoint()

    def before_test(self) -> None:
        """Resolve ``--ckpt_path last`` before testing."""
        self._prepare_checkpoint()

    def before_predict(self) -> None:
        """Resolve ``--ckpt_path last`` before predicting."""
        self._prepare_checkpoint()


def _option_value(args: Sequence[str], option: str) -> str | None:
    """The last value given to ``option`` (``--opt value`` or ``--opt=value``), None when absent."""
    value = None
    for i, arg in enumerate(args):
        if arg == option and i + 1 < len(args):
            value = args[i + 1]
        elif arg.startswith(option + "="):
            value = arg.split("=", 1)[1]
    return value


def _check_lightning_checkpoint(path: str) -> None:
    """Fail with one line when ``--ckpt_path`` is missing, unreadable or not a Lightning checkpoint.

    Lightning would otherwise fail deep inside ``trainer.fit/validate/test`` with a long traceback.
    """
    from hrseg.checkpoint import CheckpointError, read_state_dict

    state, is_safetensors = read_state_dict(path)
    if is_safetensors or "state_dict" not in state:
        raise CheckpointError(
            f"{path}: not a Lightning checkpoint (no 'state_dict'; a trainer checkpoint written by "
            f"`hrseg fit` was expected); to start from plain weights use --model.weights {path}"
        )
    hparams = state.get("hyper_parameters") or {}
    if "model" in hparams and "labels" in hparams:  # an hrseg checkpoint: its metadata must fit its weights
        from hrseg.inference.loading import check_weights_fit
        from hrseg.metadata import ModelMeta

        try:
            meta = ModelMeta.from_dict(hparams)
        except (TypeError, ValueError) as err:
            raise CheckpointError(f"{path}: invalid model config: {err}") from err
        network = {
            k.removeprefix("model."): v for k, v in state["state_dict"].items() if k.startswith("model.")
        }
        check_weights_fit(meta, network, path)


def _one_line(message: str, limit: int = 400) -> str:
    """The multi-line parse errors of jsonargparse as one line (long ones cut, the option stays named)."""
    text = " ".join(message.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def run_lightning_cli(argv: Sequence[str] | None = None, run: bool = True) -> HRSegCLI:
    """Run ``hrseg fit|validate|test|predict`` on ``argv`` (e.g. ``["fit", "--config", "demo"]``).

    Raises:
        UsageError: the command line does not parse (unknown option, wrong value, unknown config name).
    """
    from jsonargparse import ArgumentError

    args = resolve_config_args(list(argv) if argv is not None else [])
    args = resolve_dataset_names(args)
    ckpt_path = _option_value(args, "--ckpt_path")
    if ckpt_path and ckpt_path not in LIGHTNING_CKPT_NAMES:
        # LightningCLI itself loads the file while parsing (its hyper-parameters): check it before
        _check_lightning_checkpoint(ckpt_path)
    # `hrseg` always passes its (rewritten) argv explicitly; Lightning would warn that sys.argv is also set.
    warnings.filterwarnings("ignore", message="LightningCLI's args parameter", category=UserWarning)
    silence_lightning_adverts()
    # omegaconf+: interpolations resolve on the merged config, after the command-line overrides.
    # exit_on_error=False: a parse error is raised, reported by `hrseg` as one line instead of the full usage.
    parser_kwargs: dict[str, Any] = {"parser_mode": "omegaconf+", "exit_on_error": False}
    if run:
        for sub in ("fit", "validate", "test", "predict"):
            parser_kwargs[sub] = {"parser_mode": "omegaconf+", "exit_on_error": False}
    try:
        cli = _make_cli(args, parser_kwargs, run)
    except ArgumentError as exc:
        raise UsageError(_one_line(str(exc))) from exc
    except SIGTERMException as exc:
        # Lightning stops at the end of the step after SIGTERM; `LastCheckpoint` saved last.ckpt
        _destroy_process_group()  # every rank stops at the same step (Lightning shares the signal)
        raise SystemExit(SIGTERM_EXIT_CODE) from exc
    if run:
        _destroy_process_group()
    return cli


def resolve_dataset_names(args: list[str]) -> list[str]:
    """``--data NAME`` of a registered dataset as its class path (LightningCLI resolves class names only).

    Looking the names up imports every registered DataModule, which is also what lets LightningCLI resolve
    ``--data FolderDataModule`` and a config's short ``class_path``.
    """
    names = list_datasets()
    out = list(args)
    for i, arg in enumerate(out):
        value = arg.split("=", 1)[1] if arg.startswith("--data=") else None
        if arg == "--data" and i + 1 < len(out):
            value, at = out[i + 1], i + 1
        elif value is not None:
            at = i
        else:
            continue
        if value in names:
            cls = get_dataset(value).datamodule
            path = f"{cls.__module__}.{cls.__qualname__}"
            out[at] = path if at != i else f"--data={path}"
    return out


def _destroy_process_group() -> None:
    """Tear down the DDP process group of a run that finished, while the interpreter is still whole.

    Lightning leaves the group initialised after ``fit`` / ``validate`` / ``test`` / ``predict``. A process
    that exits with it still alive can abort in interpreter finalisation ("terminate called without an active
    exception", exit -6) when Gloo's worker threads release their last tensors, so a run that finished well
    would report a crash (or a SIGTERM stop would exit -6 instead of 143). Not called after an error: the
    other ranks may then be mid-collective, and a teardown could hang them.
    """
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def _make_cli(args: list[str], parser_kwargs: dict[str, Any], run: bool) -> HRSegCLI:
    # the protocol given on this command line wins over the checkpoint's (HRSegCLI._parse_ckpt_path)
    HRSegCLI.protocol_on_command_line = any(a.startswith("--model.eval_protocol") for a in args)
    return HRSegCLI(
        model_class=SegmentationTask,
        datamodule_class=SegmentationDataModule,
        subclass_mode_data=True,
        seed_everything_default=DEFAULT_SEED,
        auto_configure_optimizers=False,  # one optimiser switch: the task's --model.optimizer
        save_config_kwargs={"overwrite": True},
        trainer_defaults={"accelerator": "auto"},
        parser_kwargs=parser_kwargs,
        args=args,
        run=run,
    )
