"""The optimiser and its learning-rate schedule as one value: :class:`OptimizerConfig`.

``SegmentationTask(optimizer=...)`` takes it, LightningCLI turns its fields into ``--model.optimizer.name`` /
``.lr`` / ``.momentum`` / ``.weight_decay`` / ``.nesterov`` / ``.head_lr_mult`` / ``.warmup_iters`` /
``.poly_power``, and a checkpoint stores it as a plain dict. The official HRNet recipe is the default: SGD, lr
0.01, momentum 0.9, weight decay 5e-4 and a per-iteration poly decay of power 0.9 (docs/reference/recipes.md).

This module builds the parameter groups, the optimiser and the schedule from it; it needs torch only.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import torch
from torch import nn

from hrseg.plain_data import PlainDataGroup

__all__ = [
    "OptimizerConfig",
    "build_optimizer",
    "poly_schedule",
    "poly_warmup_factor",
]


def poly_warmup_factor(step: int, max_steps: int, power: float = 0.9, warmup_iters: int = 0) -> float:
    """Learning-rate factor at ``step``: linear warmup then ``(1 - step / max_steps) ** power``.

    The poly decay is the official HRNet schedule (per iteration); the warmup ramps linearly from
    ``1 / warmup_iters`` to 1 over the first ``warmup_iters`` steps and multiplies the poly factor.
    """
    progress = min(max(step, 0) / max(max_steps, 1), 1.0)
    factor = (1.0 - progress) ** power
    if warmup_iters > 0 and step < warmup_iters:
        factor *= (step + 1) / warmup_iters
    return factor


@dataclass(frozen=True)
class OptimizerConfig(PlainDataGroup):
    """SGD or AdamW over two parameter groups (body, head), with a per-iteration poly schedule.

    Args:
        name: ``"sgd"`` (the official recipe) or ``"adamw"``.
        lr: base learning rate.
        momentum: SGD momentum (AdamW: beta1).
        weight_decay: weight decay of all parameters (official recipe: 5e-4 with SGD).
        nesterov: Nesterov momentum for SGD.
        head_lr_mult: lr multiplier of the segmentation head (the model's ``head_modules``: HRNetV2's
            ``last_layer``, smp's ``segmentation_head``, the whole HRNet-OCR head).
        warmup_iters: linear warmup steps before the poly decay (0: none, as in the official recipe).
        poly_power: exponent of the per-iteration poly decay over the run's optimiser steps.
    """

    group_name: ClassVar[str] = "optimizer"

    name: Literal["sgd", "adamw"] = "sgd"
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 5e-4
    nesterov: bool = False
    head_lr_mult: float = 1.0
    warmup_iters: int = 0
    poly_power: float = 0.9

    def __post_init__(self) -> None:
        """Reject settings the optimiser would refuse later (or silently misuse) at construction."""
        if self.name not in ("sgd", "adamw"):
            raise ValueError(f"optimizer name must be 'sgd' or 'adamw', got {self.name!r}")
        if not self.lr > 0:
            raise ValueError(f"optimizer lr must be > 0, got {self.lr}")
        if self.momentum < 0 or self.weight_decay < 0 or self.head_lr_mult <= 0:
            raise ValueError(
                "optimizer momentum and weight_decay must be >= 0 and head_lr_mult > 0, got "
                f"{self.momentum}, {self.weight_decay}, {self.head_lr_mult}"
            )
        if self.warmup_iters < 0 or self.poly_power < 0:
            raise ValueError(
                "optimizer warmup_iters and poly_power must be >= 0, got "
                f"{self.warmup_iters}, {self.poly_power}"
            )
        if self.nesterov and self.name != "sgd":
            raise ValueError("optimizer nesterov applies to SGD only")

    def parameter_groups(self, model: nn.Module) -> list[dict[str, Any]]:
        """Trainable parameters: the model's ``head_modules`` at ``lr * head_lr_mult``, the rest at ``lr``.

        One group when the multiplier is 1 or the model names no head.
        """
        head_modules = tuple(getattr(model, "head_modules", ()))
        head: list[nn.Parameter] = []
        body: list[nn.Parameter] = []
        for name, param in model.named_parameters():
            if not param.requires_grad:
                continue
            (head if name.split(".")[0] in head_modules else body).append(param)
        if self.head_lr_mult == 1.0 or not head:
            return [{"params": body + head, "lr": self.lr}]
        return [{"params": body, "lr": self.lr}, {"params": head, "lr": self.lr * self.head_lr_mult}]


def build_optimizer(model: nn.Module, config: OptimizerConfig) -> torch.optim.Optimizer:
    """The optimiser of ``config`` over :meth:`OptimizerConfig.parameter_groups` of ``model``."""
    groups = config.parameter_groups(model)
    if config.name == "sgd":
        return torch.optim.SGD(
            groups,
            lr=config.lr,
            momentum=config.momentum,
            weight_decay=config.weight_decay,
            nesterov=config.nesterov,
        )
    return torch.optim.AdamW(
        groups, lr=config.lr, betas=(config.momentum, 0.999), weight_decay=config.weight_decay
    )


def poly_schedule(
    optimizer: torch.optim.Optimizer, config: OptimizerConfig, max_steps: int
) -> torch.optim.lr_scheduler.LambdaLR:
    """Per-step poly decay over ``max_steps`` (after ``config.warmup_iters`` linear warmup steps)."""
    power, warmup = config.poly_power, config.warmup_iters

    def factor(step: int) -> float:
        return poly_warmup_factor(step, max_steps, power, warmup)

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
