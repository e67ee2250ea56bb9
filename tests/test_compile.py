"""The training step compiles whole: forward, every loss term and backward, one graph each, no recompilation.

Each check compiles with ``fullgraph=True``: a graph break (a Python branch on a tensor's value, an
unsupported call) is an error, not a silent split. That alone does not rule out a host synchronisation:
Dynamo also captures a boolean index or ``nonzero`` (an output size known only from the data, an "unbacked"
size the device must report back), and a ``.item()`` it cannot fold into tensor arithmetic stays a scalar
read (``_local_scalar_dense``). So the backend here (``GraphCounter``) keeps the forward and backward graphs
AOTAutograd hands it, and the tests also require that no node in them has a data-dependent size or reads a
scalar to the host (:func:`host_reads`). It counts Dynamo frames and forward / backward graphs over several
batches of one shape with different labels (absent classes, ignored pixels, a fully ignored image), with
``error_on_recompile`` on, and runs the graphs as ``aot_eager`` does (no code generation: the CPU check
takes seconds, not the minutes inductor needs here); compiled values are compared with eager ones. The GPU
version with inductor and bf16 is in tests/test_cuda.py.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
import torch._dynamo
from functorch.compile import make_boxed_func
from torch import Tensor, nn
from torch._dynamo.backends.common import aot_autograd
from torch._dynamo.utils import counters

from hrseg.losses import LossConfig
from hrseg.metadata import LabelSet
from hrseg.models import upsample_logits
from hrseg.task import CompileError, SegmentationTask, compile_graph

NUM_CLASSES = 5
IGNORE = 255
BACKEND = "hrseg_graph_counter"


#: aten operators that copy a device value to the host (``.item()``, ``bool(t)``, a size from the data)
HOST_READ_OPS = {"_local_scalar_dense", "nonzero", "masked_select", "_assert_scalar", "item"}


def host_reads(gm: torch.fx.GraphModule) -> list[str]:
    """Nodes of an AOTAutograd graph that need a value from the device: a scalar read, a data-dependent size.

    Shapes are static (``dynamic=False``), so every size must be a plain int; an unbacked ``u0`` size or a
    symbolic scalar is what a boolean index, ``nonzero`` or ``.item()`` leaves in the graph.
    """
    found = []
    for node in gm.graph.nodes:
        if node.op != "call_function":
            continue
        val = node.meta.get("val")
        vals = val if isinstance(val, (list, tuple)) else [val]
        sizes = [d for v in vals if isinstance(v, Tensor) for d in v.shape]
        symbolic = any(isinstance(v, (torch.SymInt, torch.SymBool, torch.SymFloat)) for v in vals)
        op = getattr(node.target, "_opname", getattr(node.target, "__name__", str(node.target)))
        if symbolic or not all(isinstance(d, int) for d in sizes) or op in HOST_READ_OPS:
            found.append(f"{node.name} ({op})")
    return found


class GraphCounter:
    """A ``torch.compile`` backend: counts Dynamo frames, keeps AOTAutograd's forward / backward graphs."""

    def __init__(self) -> None:
        self.frames = 0
        self.forward_graphs: list[torch.fx.GraphModule] = []
        self.backward_graphs: list[torch.fx.GraphModule] = []

    def reset(self) -> None:
        self.frames = 0
        self.forward_graphs.clear()
        self.backward_graphs.clear()

    @property
    def forward(self) -> int:
        return len(self.forward_graphs)

    @property
    def backward(self) -> int:
        return len(self.backward_graphs)

    def host_reads(self) -> list[str]:
        return [r for gm in self.forward_graphs + self.backward_graphs for r in host_reads(gm)]

    def __call__(self, gm: torch.fx.GraphModule, example_inputs: list[Tensor]) -> Callable[..., Any]:
        self.frames += 1
        return aot_autograd(fw_compiler=self._forward, bw_compiler=self._backward)(gm, example_inputs)

    def _forward(self, gm: torch.fx.GraphModule, example_inputs: list[Tensor]) -> Callable[..., Any]:
        self.forward_graphs.append(gm)
        return make_boxed_func(gm.forward)

    def _backward(self, gm: torch.fx.GraphModule, example_inputs: list[Tensor]) -> Callable[..., Any]:
        self.backward_graphs.append(gm)
        return make_boxed_func(gm.forward)


COUNTER = GraphCounter()
# registered by name, so the task takes it as a user would: --model.compile_backend hrseg_graph_counter
torch._dynamo.register_backend(COUNTER, name=BACKEND)


@pytest.fixture
def graphs() -> Iterator[GraphCounter]:
    """The counting backend, zeroed, with Dynamo's caches and counters reset; recompiling is an error."""
    torch._dynamo.reset()
    counters.clear()
    COUNTER.reset()  # the shared instance registered under BACKEND
    with torch._dynamo.config.patch(error_on_recompile=True):
        yield COUNTER
    torch._dynamo.reset()


def _batches(shape: tuple[int, int, int] = (2, 32, 48), n: int = 3) -> list[tuple[Tensor, Tensor]]:
    """``n`` batches of one shape whose labels differ: ignored bands, an absent class, an ignored image."""
    g = torch.Generator().manual_seed(0)
    out = []
    for i in range(n):
        image = torch.randn(shape[0], 3, *shape[1:], generator=g)
        mask = torch.randint(0, NUM_CLASSES, shape, generator=g)
        mask[:, : 2 + 3 * i] = IGNORE
        if i == 1:
            mask[mask == 2] = 0  # class 2 absent from the batch
        if i == 2:
            mask[0] = IGNORE  # the first image has no labelled pixel
        out.append((image, mask))
    return out


def _tiny_net() -> nn.Module:
    """Logits at 1/4 of the input, as the HRNet heads give them (the loss resizes them to the mask)."""
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, stride=4, padding=1),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.Conv2d(8, NUM_CLASSES, 1),
    )


LOSSES: dict[str, LossConfig] = {
    "ce": LossConfig("ce"),
    "ce_class_weights": LossConfig("ce", class_weights=[1.0, 2.0, 0.5, 1.0, 3.0]),
    "ohem": LossConfig([{"name": "ohem", "thresh": 0.7, "min_kept": 300}], class_weights=[1, 2, 1, 1, 1]),
    "dice": LossConfig("dice"),
    "focal": LossConfig([{"name": "focal", "alpha": 0.25, "normalized": True}]),
    "lovasz": LossConfig("lovasz"),
    "lovasz_per_image": LossConfig([{"name": "lovasz", "per_image": True}]),
    "weighted_sum": LossConfig(
        [
            {"name": "ohem", "weight": 1.0, "min_kept": 300},
            {"name": "ce", "weight": 0.5},
            {"name": "dice", "weight": 0.5},
            {"name": "focal", "weight": 0.25},
            {"name": "lovasz", "weight": 0.25},
        ]
    ),
}


@pytest.mark.parametrize("name", list(LOSSES))
def test_each_loss_term_compiles_whole_with_its_backward(name: str, graphs: GraphCounter) -> None:
    """Forward + loss + backward: one frame, one forward and one backward graph for three batches."""
    criterion = LOSSES[name].build(LabelSet.generic(NUM_CLASSES, IGNORE))
    eager_net = _tiny_net()
    net = copy.deepcopy(eager_net)

    def step(image: Tensor, mask: Tensor) -> Tensor:
        return criterion(upsample_logits(net(image), mask.shape[-2:], False), mask)

    def eager_step(image: Tensor, mask: Tensor) -> Tensor:
        return criterion(upsample_logits(eager_net(image), mask.shape[-2:], False), mask)

    compiled = torch.compile(step, backend=BACKEND, fullgraph=True, dynamic=False)
    for image, mask in _batches():
        net.zero_grad(set_to_none=True)
        eager_net.zero_grad(set_to_none=True)
        loss = compiled(image, mask)
        loss.backward()
        expected = eager_step(image, mask)
        expected.backward()
        assert torch.isfinite(loss)
        torch.testing.assert_close(loss, expected, rtol=1e-4, atol=1e-6)
        for (key, p), q in zip(net.named_parameters(), eager_net.parameters(), strict=True):
            assert p.grad is not None, f"{key}: no gradient from the compiled backward"
            torch.testing.assert_close(p.grad, q.grad, rtol=1e-3, atol=1e-6, msg=key)
    assert (graphs.frames, graphs.forward, graphs.backward) == (1, 1, 1)
    assert not counters["graph_break"]
    assert counters["stats"]["unique_graphs"] == 1
    assert graphs.host_reads() == []


def test_a_graph_break_is_a_compile_error_naming_the_step() -> None:
    """A Python branch on a tensor's value cannot be one graph: the error names the step and the reason."""
    torch._dynamo.reset()

    def step(x: Tensor) -> Tensor:
        return x * 2 if x.sum() > 0 else x

    compiled = compile_graph(step, backend="aot_eager", what="the probe step")
    match = r"^the probe step does not compile as one graph.*[Dd]ata-dependent.*test_compile\.py:\d+\)$"
    with pytest.raises(CompileError, match=match):
        compiled(torch.randn(4, 4))
    torch._dynamo.reset()


def test_host_reads_catches_what_fullgraph_lets_through(graphs: GraphCounter) -> None:
    """A boolean index compiles as one graph with an unbacked size; :func:`host_reads` names it."""

    def step(x: Tensor) -> Tensor:
        return x[x > 0].sum()  # a size known only from the data

    torch.compile(step, backend=BACKEND, fullgraph=True)(torch.randn(4, 4, requires_grad=True)).backward()
    found = graphs.host_reads()
    assert any("index" in r for r in found), found


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"compile_backend": "no_such_backend"}, r"unknown compile backend 'no_such_backend'; choose from"),
        ({"compile_mode": "fastest"}, r"unknown compile mode 'fastest'; choose from default"),
        ({"compile_backend": "aot_eager", "compile_mode": "max-autotune"}, r"inductor's"),
    ],
)
def test_bad_compile_options_fail_at_construction(options: dict[str, Any], match: str) -> None:
    for compile_on in (True, False):  # also when compile is off: no option is silently ignored
        with pytest.raises(ValueError, match=match):
            SegmentationTask(labels=LabelSet.generic(3), compile=compile_on, **options)


@pytest.mark.slow  # 20-50 s on 2 busy cores: Dynamo traces HRNet-OCR's step and its evaluation
def test_compile_option_through_the_cli(
    tmp_path: Path, tiny_fit: Callable[..., Path], graphs: GraphCounter
) -> None:
    """``hrseg fit --model.compile true`` on HRNet-OCR: both outputs' losses and the backward, a graph each.

    Two training steps (aux CE + OHEM main) and a validation pass, in process so the counters can be read.
    """
    ckpt = tiny_fit(
        tmp_path,
        "--model.model",
        "hrnetv2_w18_small_v1_ocr",
        "--model.loss.terms",
        "ohem",
        "--model.compile",
        "true",
        "--model.compile_backend",
        BACKEND,
    )
    # the training step (forward and backward); for validation the network and the per-image loss
    assert (graphs.frames, graphs.forward, graphs.backward) == (3, 3, 1)
    assert not counters["graph_break"]
    assert graphs.host_reads() == []
    record = torch.load(ckpt, map_location="cpu", weights_only=True)
    assert record["hyper_parameters"]["compile"] is True
    assert record["global_step"] == 2
    keys = list(record["state_dict"])
    assert any(k.startswith("model.aux_head.") for k in keys)
    assert all(k.startswith("model.") and "_orig_mod" not in k for k in keys)
