"""The OCR head (``ocr``): HRNet-OCR's object-contextual representations (docs/reference/ocr.md).

Module and attribute names follow the official ``seg_hrnet_ocr.py`` (HRNet-Semantic-Segmentation, HRNet-OCR
branch) exactly, so released HRNet-OCR checkpoints load without renaming:
``aux_head.{0,1,3}``, ``conv3x3_ocr.{0,1}``, ``ocr_distri_head.object_context_block.{f_pixel,f_object,f_down,
f_up}``, ``ocr_distri_head.conv_bn_dropout`` and ``cls_head``; every BN+ReLU of the OCR block is its own
``Sequential(BatchNorm2d, ReLU)`` (keys ``f_pixel.1.0.weight`` ...), as there.

Free of any Lightning import so it can be used (and exported) as a plain ``nn.Module``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from hrseg.models.heads.common import SegmentationHead, concat_upsample
from hrseg.models.heads.v2 import HRNetV2Head, hrnetv2_head
from hrseg.models.hrnet import CheckpointRemap
from hrseg.models.registry import register_head

__all__ = ["OCRHead", "ObjectAttentionBlock", "SpatialGather", "SpatialOCR"]


def _fp32_region(device_type: str) -> contextlib.AbstractContextManager[Any]:
    """Disable autocast for the enclosed ops (only when it is on, so eager fp32 and export see no context)."""
    try:
        enabled = torch.is_autocast_enabled(device_type)
    except RuntimeError:  # a device type without autocast (meta: FLOP counting)
        return contextlib.nullcontext()
    if enabled:
        return torch.autocast(device_type=device_type, enabled=False)
    return contextlib.nullcontext()


def _bn_relu(channels: int, bn_momentum: float) -> nn.Sequential:
    """The official ``ModuleHelper.BNReLU``: its own Sequential, hence keys ``<i>.0.*``."""
    return nn.Sequential(nn.BatchNorm2d(channels, momentum=bn_momentum), nn.ReLU(inplace=True))


def _conv1x1_bn_relu(in_ch: int, out_ch: int, bn_momentum: float) -> list[nn.Module]:
    return [nn.Conv2d(in_ch, out_ch, kernel_size=1, bias=False), _bn_relu(out_ch, bn_momentum)]


class SpatialGather(nn.Module):
    """Object-region representations: pixel features weighted by each class map's softmax over the pixels.

    Parameter-free (official ``SpatialGather_Module``). ``forward(feats (B, C, H, W), logits (B, K, H, W))``
    returns ``(B, C, K, 1)``; the softmax and the weighted sum run in fp32 even under autocast. The
    auxiliary logits are not detached, as in the official code.
    """

    def __init__(self, num_classes: int, scale: float = 1.0) -> None:
        """``scale`` multiplies the logits before the softmax (official: 1)."""
        super().__init__()
        self.cls_num = num_classes
        self.scale = scale

    def forward(self, feats: Tensor, logits: Tensor) -> Tensor:
        """Region vectors ``(B, C, K, 1)``."""
        b, k = logits.shape[0], logits.shape[1]
        with _fp32_region(feats.device.type):
            probs = (self.scale * logits.float()).reshape(b, k, -1).softmax(dim=2)  # over the pixels
            pixels = feats.float().flatten(2).transpose(1, 2)  # (B, HW, C)
            regions = torch.matmul(probs, pixels)  # (B, K, C)
        return regions.transpose(1, 2).unsqueeze(3).to(feats.dtype)  # a bf16 / fp16 network goes on in it


class ObjectAttentionBlock(nn.Module):
    """Pixel-region attention (official ``ObjectAttentionBlock2D`` with ``scale=1``).

    query = ``f_pixel(x)``, key = ``f_object(regions)``, value = ``f_down(regions)``; each pixel's attention
    is a softmax over the K regions of ``query . key / sqrt(key_channels)`` (fp32 under autocast); the
    context ``attention . value`` goes through ``f_up`` back to ``in_channels``.
    """

    def __init__(self, in_channels: int, key_channels: int, bn_momentum: float = 0.1) -> None:
        """Build the four projections."""
        super().__init__()
        self.in_channels = in_channels
        self.key_channels = key_channels
        kc = key_channels
        self.f_pixel = nn.Sequential(
            *_conv1x1_bn_relu(in_channels, kc, bn_momentum), *_conv1x1_bn_relu(kc, kc, bn_momentum)
        )
        self.f_object = nn.Sequential(
            *_conv1x1_bn_relu(in_channels, kc, bn_momentum), *_conv1x1_bn_relu(kc, kc, bn_momentum)
        )
        self.f_down = nn.Sequential(*_conv1x1_bn_relu(in_channels, kc, bn_momentum))
        self.f_up = nn.Sequential(*_conv1x1_bn_relu(kc, in_channels, bn_momentum))

    def attention(self, query: Tensor, key: Tensor) -> Tensor:
        """``(B, HW, Ck) x (B, Ck, K) -> (B, HW, K)`` weights, a softmax over the regions, in fp32."""
        with _fp32_region(query.device.type):
            sim = torch.matmul(query.float(), key.float()) * (self.key_channels**-0.5)
            return sim.softmax(dim=-1)

    def forward(self, x: Tensor, proxy: Tensor) -> Tensor:
        """Context ``(B, in_channels, H, W)`` for pixel features ``x`` and region vectors ``proxy``."""
        b, h, w = x.shape[0], x.shape[2], x.shape[3]
        query = self.f_pixel(x).flatten(2).transpose(1, 2)  # (B, HW, Ck)
        key = self.f_object(proxy).flatten(2)  # (B, Ck, K)
        value = self.f_down(proxy).flatten(2).transpose(1, 2)  # (B, K, Ck)
        attn = self.attention(query, key)
        with _fp32_region(x.device.type):
            context = torch.matmul(attn, value.float()).to(x.dtype)  # (B, HW, Ck)
        context = context.transpose(1, 2).reshape(b, self.key_channels, h, w)
        return self.f_up(context)


class SpatialOCR(nn.Module):
    """Official ``SpatialOCR_Module``: object attention, then ``conv_bn_dropout`` on ``[context, feats]``."""

    def __init__(
        self,
        in_channels: int,
        key_channels: int,
        out_channels: int,
        dropout: float = 0.05,
        bn_momentum: float = 0.1,
    ) -> None:
        """Build the attention block and the 1x1 fusion (concatenation order: context, then features)."""
        super().__init__()
        self.object_context_block = ObjectAttentionBlock(in_channels, key_channels, bn_momentum)
        self.conv_bn_dropout = nn.Sequential(
            *_conv1x1_bn_relu(2 * in_channels, out_channels, bn_momentum), nn.Dropout2d(dropout)
        )

    def forward(self, feats: Tensor, proxy: Tensor) -> Tensor:
        """Augmented pixel features ``(B, out_channels, H, W)``."""
        context = self.object_context_block(feats, proxy)
        return self.conv_bn_dropout(torch.cat([context, feats], dim=1))


@register_head("ocr")
class OCRHead(SegmentationHead):
    """The OCR head (HRNet-OCR); logits at 1/4 of the input resolution.

    ``forward`` returns ``[out_aux, out]`` (both ``(B, K, H/4, W/4)``, the official order: auxiliary first,
    main last); the network hands both on in training and ``out`` alone in eval, so evaluation, inference and
    export treat HRNet-OCR like HRNetV2. ``num_outputs = 2`` tells the training task so (it reads no names).

    The head keeps PyTorch's default initialization, as in the official code (which applies its
    ``normal(0.001)`` init to the backbone only); ``aux_head`` is laid out like HRNetV2's ``last_layer``
    (:func:`~hrseg.models.heads.v2.hrnetv2_head`), so an HRNetV2 segmentation checkpoint initialises it
    (:meth:`remap_checkpoint_keys`, applied by :func:`hrseg.load_pretrained`).
    """

    num_outputs = 2
    head_modules = ("aux_head", "conv3x3_ocr", "ocr_gather_head", "ocr_distri_head", "cls_head")
    #: The auxiliary head, laid out like HRNetV2's ``last_layer``.
    _AUX_HEAD = "aux_head"

    def __init__(
        self,
        branch_channels: Sequence[int],
        num_classes: int,
        *,
        ocr_mid_channels: int = 512,
        ocr_key_channels: int = 256,
        ocr_dropout: float = 0.05,
        **network: Any,
    ) -> None:
        """Build the OCR head.

        Args:
            branch_channels: the backbone's branch channels (the head reads their concatenation).
            num_classes: output classes K.
            ocr_mid_channels: width of ``conv3x3_ocr`` and the region/pixel features (official 512).
            ocr_key_channels: query/key/value width of the attention (official 256).
            ocr_dropout: ``Dropout2d`` rate after the fusion conv (official 0.05).
            **network: ``align_corners`` (official OCR configs: True) and ``bn_momentum`` (official 0.1).
        """
        if ocr_mid_channels < 1 or ocr_key_channels < 1:
            raise ValueError(f"OCR channels must be >= 1, got {ocr_mid_channels}, {ocr_key_channels}")
        super().__init__(branch_channels, num_classes, **network)
        c = sum(self.branch_channels)
        self.ocr_mid_channels = ocr_mid_channels
        self.ocr_key_channels = ocr_key_channels
        mid, mom = ocr_mid_channels, self.bn_momentum
        # Built in the official order, which is the order of the keys in its checkpoints.
        self.conv3x3_ocr = nn.Sequential(
            nn.Conv2d(c, mid, kernel_size=3, padding=1, bias=True),
            nn.BatchNorm2d(mid, momentum=mom),
            nn.ReLU(inplace=True),
        )
        self.ocr_gather_head = SpatialGather(num_classes)
        self.ocr_distri_head = SpatialOCR(mid, ocr_key_channels, mid, dropout=ocr_dropout, bn_momentum=mom)
        self.cls_head = nn.Conv2d(mid, num_classes, kernel_size=1, bias=True)
        self.aux_head = hrnetv2_head(c, num_classes, mom)

    @classmethod
    def remap_checkpoint_keys(cls, state: dict[str, Tensor]) -> CheckpointRemap:
        """An HRNetV2 checkpoint's ``last_layer.*`` initialises ``aux_head.*``; the OCR modules stay fresh.

        Checkpoints that hold any OCR head key (official HRNet-OCR files) are used as they are.
        """
        seg_heads = tuple(f"{m}." for m in HRNetV2Head.head_modules)
        own_heads = tuple(f"{m}." for m in cls.head_modules)
        if not any(k.startswith(seg_heads) for k in state) or any(k.startswith(own_heads) for k in state):
            return CheckpointRemap(state)
        renamed = {k: f"{cls._AUX_HEAD}.{k.split('.', 1)[1]}" for k in state if k.startswith(seg_heads)}
        fresh = tuple(m for m in cls.head_modules if m != cls._AUX_HEAD)
        note = (
            f"HRNetV2 head mapped: {len(renamed)} last_layer.* keys initialise aux_head.*; "
            f"{', '.join(m for m in fresh if m != 'ocr_gather_head')} keep their initialisation"
        )
        return CheckpointRemap({renamed.get(k, k): v for k, v in state.items()}, [note], fresh)

    def forward(self, features: Sequence[Tensor]) -> list[Tensor]:
        """``[out_aux, out]``, each ``(B, num_classes, H/4, W/4)``."""
        feats = concat_upsample(features, self.align_corners)
        out_aux = self.aux_head(feats)
        feats = self.conv3x3_ocr(feats)
        regions = self.ocr_gather_head(feats, out_aux)
        feats = self.ocr_distri_head(feats, regions)
        return [out_aux, self.cls_head(feats)]
