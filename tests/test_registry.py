"""The head and model registries: listing, resolving, unknown names, refused duplicates, a new head."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import pytest
import torch
from test_models import TINY_SPEC
from torch import Tensor, nn

from hrseg.models import (
    SegmentationHead,
    build_model,
    get_head,
    list_heads,
    list_models,
    register_head,
    resolve_model,
)
from hrseg.models import registry as reg


@pytest.fixture
def scratch_registry(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Registrations made in the test are undone afterwards (other tests list the shipped names only)."""
    monkeypatch.setattr(reg._HEADS, "_entries", dict(reg._HEADS._entries))
    monkeypatch.setattr(reg._HEADS, "_origins", dict(reg._HEADS._origins))
    monkeypatch.setattr(reg._FAMILIES, "_entries", dict(reg._FAMILIES._entries))
    monkeypatch.setattr(reg._FAMILIES, "_origins", dict(reg._FAMILIES._origins))
    yield


def test_shipped_heads_and_families_are_listed() -> None:
    assert list_heads()[:2] == ["v2", "ocr"]
    assert get_head("ocr").head_modules[0] == "aux_head"  # type: ignore[attr-defined]
    assert resolve_model("hrnetv2_w48").key == "hrnetv2"
    assert resolve_model("hrnetv2_w48_ocr").key == "hrnetv2"
    assert resolve_model("hrnetv2_ocr").key == "hrnetv2"  # hidden: needs spec=, not listed
    assert "hrnetv2_ocr" not in list_models()
    assert resolve_model("smp:Unet:resnet18").prefix == "smp:"  # an open family, by prefix


def test_unknown_names_list_the_registered_ones() -> None:
    with pytest.raises(ValueError, match=r"unknown model 'nope'.*hrnetv2_w48_ocr.*smp:<Arch>:<encoder>"):
        build_model("nope", num_classes=3)
    with pytest.raises(ValueError, match=r"unknown head 'nope'; registered: v2, ocr"):
        get_head("nope")
    with pytest.raises(ValueError, match=r"needs spec="):
        build_model("hrnetv2_ocr", num_classes=3)
    with pytest.raises(TypeError):
        build_model("hrnetv2_w18")  # type: ignore[call-arg]  # num_classes has no default


def test_duplicate_registration_is_refused(scratch_registry: None) -> None:
    with pytest.raises(
        ValueError, match=r"head 'v2' is already registered by hrseg\.models\.heads\.v2\.HRNetV2Head"
    ):

        @register_head("v2")
        class Impostor(SegmentationHead):
            head_modules = ("impostor",)

    assert get_head("v2").__name__ == "HRNetV2Head"
    with pytest.raises(TypeError, match="head_modules"):

        @register_head("nameless")
        class NoModules(SegmentationHead):
            pass


def test_a_registered_head_is_a_model_with_its_own_options(scratch_registry: None) -> None:
    @register_head("probe")
    class ProbeHead(SegmentationHead):
        head_modules = ("probe_conv",)

        def __init__(
            self, branch_channels: Sequence[int], num_classes: int, *, probe_bias: bool = True, **network: Any
        ) -> None:
            super().__init__(branch_channels, num_classes, **network)
            self.probe_conv = nn.Conv2d(self.branch_channels[-1], num_classes, 1, bias=probe_bias)

        def forward(self, features: Sequence[Tensor]) -> Tensor:
            return self.probe_conv(features[-1])

    assert ProbeHead.head_name == "probe" and ProbeHead.option_names() == ("probe_bias",)
    assert "hrnetv2_w18_probe" in list_models() and "hrnetv2_w48_probe" in list_models()
    model = build_model("hrnetv2_probe", num_classes=5, spec=TINY_SPEC, probe_bias=False).eval()
    assert [k for k in model.state_dict() if k.startswith("probe")] == ["probe_conv.weight"]  # flat, no bias
    assert model.head_modules == ("probe_conv",) and model.checkpoint_head_modules()[-1] == "probe_conv"
    with torch.no_grad():
        assert model(torch.randn(1, 3, 64, 64)).shape == (1, 5, 2, 2)  # the 1/32 branch
    with pytest.raises(ValueError, match=r"unknown option\(s\) \['ocr_dropout'\].*probe_bias"):
        build_model("hrnetv2_probe", num_classes=5, spec=TINY_SPEC, ocr_dropout=0.1)
    # the HRNet options are the network's; the smp baselines refuse every head's options
    with pytest.raises(ValueError, match="probe_bias"):
        build_model("smp:Unet:resnet18", num_classes=5, probe_bias=False)
