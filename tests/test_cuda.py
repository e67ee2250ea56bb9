"""GPU paths on a real CUDA device: device selection, the fast path per precision, channels_last training, DDP
over NCCL and ONNX Runtime's CUDA provider.

Every test here is marked ``cuda`` and skipped where ``torch.cuda.is_available()`` is False (the 2-core CPU
development machine and CI); ``benchmarks/gpu_check.sh`` runs them on a lent GPU and keeps their output as a
record. Tolerances, against the eager fp32 model with TF32 off (exact fp32 convolutions):

- fast path fp32, TF32 off: max |logit difference| <= 1e-4 x max(1, max |logit|), as on the CPU (BN folding
  and channels_last only reorder fp32 rounding);
- fast path fp32 with TF32 on (PyTorch's default for cuDNN convolutions on Ampere or newer): 10-bit mantissa
  products, so <= 5e-2 x scale and the same argmax on 99 % of the pixels whose top-2 logits differ by more
  than 0.05 x scale (the benchmark's 1e-4 parity check failed at 1.1e-2 on an H200 for this reason);
- fp16 (10-bit mantissa, fp32 accumulation): <= 5e-2 x scale, argmax as above on 99 %;
- bf16 (7-bit mantissa): <= 0.25 x scale, argmax on 97 % of those pixels.

The printed differences are the measurement; the bounds are set from the number formats, not yet from a run.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from hrseg.deploy import Segmenter
from hrseg.inference import prepare_for_inference
from hrseg.inference.device import describe_device, resolve_device

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(
        not torch.cuda.is_available(), reason="no CUDA GPU (torch.cuda.is_available() is False)"
    ),
]

SIZE = (256, 512)


@pytest.fixture
def exact_fp32() -> Iterator[None]:
    """TF32 off for the block (the reference must be exact fp32), restored after."""
    saved = (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32)
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    yield
    torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


def _scene_batch(n: int = 2) -> torch.Tensor:
    from hrseg.data.synthetic import generate_scene

    images = [generate_scene(i, SIZE)[0] for i in range(n)]
    x = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float() / 255.0
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    return ((x - mean) / std).cuda()


def _eager(tiny_checkpoint: Path) -> torch.nn.Module:
    from hrseg.inference.loading import load_checkpoint

    model, _ = load_checkpoint(tiny_checkpoint)
    return model.cuda().eval()


def test_auto_device_is_the_gpu_and_predictions_come_back_on_the_host(tiny_checkpoint: Path) -> None:
    device = resolve_device("auto")
    assert device.type == "cuda" and torch.cuda.get_device_name(device.index) in describe_device(device)
    seg = Segmenter.from_checkpoint(tiny_checkpoint)
    assert seg.device.type == "cuda" and seg.backend == "torch"  # auto on CUDA: the torch fast path
    assert next(seg.model.parameters()).is_cuda
    from hrseg.data.synthetic import generate_scene

    image = generate_scene(0, (96, 160))[0]
    gpu = seg.predict(image)
    cpu = Segmenter.from_checkpoint(tiny_checkpoint, device="cpu").predict(image)
    assert gpu.shape == (96, 160) and isinstance(gpu, np.ndarray)
    agreement = float((gpu == cpu).mean())
    print(f"GPU / CPU label agreement {agreement:.4f}")
    assert agreement >= 0.99


@pytest.mark.parametrize(
    ("dtype", "tf32", "max_rel", "min_agree"),
    [
        (None, False, 1e-4, 1.0),
        (None, True, 5e-2, 0.99),
        (torch.float16, False, 5e-2, 0.99),
        (torch.bfloat16, False, 0.25, 0.97),
    ],
    ids=["fp32", "fp32-tf32", "fp16", "bf16"],
)
def test_fast_path_matches_eager_fp32(
    tiny_checkpoint: Path,
    exact_fp32: None,
    dtype: torch.dtype | None,
    tf32: bool,
    max_rel: float,
    min_agree: float,
) -> None:
    eager = _eager(tiny_checkpoint)
    x = _scene_batch()
    with torch.no_grad():
        ref = eager(x).float()
    fast = prepare_for_inference(eager, dtype=dtype)
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = tf32
    with torch.inference_mode():
        out = fast(x)
    assert out.dtype == torch.float32 and out.shape == ref.shape
    scale = max(1.0, float(ref.abs().max()))
    diff = float((out - ref).abs().max()) / scale
    top2 = ref.topk(2, dim=1).values
    confident = (top2[:, 0] - top2[:, 1]) > 0.05 * scale
    agree = float((out.argmax(1) == ref.argmax(1))[confident].float().mean())
    name = f"{dtype or 'fp32'} tf32={tf32}"
    print(f"{name}: max |diff| / scale {diff:.2e} (scale {scale:.2f}), argmax agreement {agree:.4f}")
    assert diff <= max_rel
    assert agree >= min_agree


def _demo_fit_args(root: Path, *extra: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "hrseg",
        "fit",
        "--config=demo",
        f"--trainer.default_root_dir={root}",
        "--trainer.accelerator=gpu",
        "--trainer.devices=1",
        "--trainer.max_steps=4",
        "--trainer.max_epochs=1",
        "--trainer.num_sanity_val_steps=0",
        "--trainer.enable_progress_bar=false",
        "--model.log_images=0",
        "--data.init_args.num_train=8",
        "--data.init_args.num_val=2",
        "--data.init_args.batch_size=2",
        "--data.init_args.num_workers=2",
        *extra,
    ]


def test_channels_last_training_steps_on_the_gpu(tmp_path: Path) -> None:
    """Four steps with channels_last (auto on CUDA): weights and inputs NHWC, losses finite, weights moved."""
    import lightning as L

    from hrseg.data import DemoDataModule
    from hrseg.task import SegmentationTask

    dm = DemoDataModule(num_train=8, num_val=2, image_size=(64, 128), batch_size=2)
    task = SegmentationTask(model="hrnetv2_w18_small_v1", labels=dm.labels, log_images=0)
    before = {k: v.detach().clone() for k, v in task.state_dict().items()}
    trainer = L.Trainer(
        accelerator="gpu",
        devices=1,
        max_steps=4,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        num_sanity_val_steps=0,
        default_root_dir=tmp_path,
    )
    trainer.fit(task, datamodule=dm)
    convs = [m.weight for m in task.modules() if isinstance(m, torch.nn.Conv2d) and m.weight.dim() == 4]
    assert convs and all(w.is_cuda and w.is_contiguous(memory_format=torch.channels_last) for w in convs)
    assert trainer.global_step == 4
    assert all(torch.isfinite(v).all() for v in task.state_dict().values() if v.is_floating_point())
    moved = [
        k
        for k, v in task.state_dict().items()
        if v.is_floating_point() and not torch.equal(v.cpu(), before[k])
    ]
    assert moved


def test_ddp_on_one_gpu_uses_nccl(tmp_path: Path) -> None:
    """``strategy: ddp`` on one GPU: the NCCL process group, a checkpoint, a clean exit."""
    env = {**os.environ, "NO_ALBUMENTATIONS_UPDATE": "1"}
    proc = subprocess.run(
        _demo_fit_args(tmp_path, "--trainer.strategy=ddp", "--trainer.sync_batchnorm=true"),
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]
    assert "distributed_backend=nccl" in out, out[-4000:]
    assert list(tmp_path.rglob("last.ckpt"))


def test_onnxruntime_runs_on_its_cuda_provider(
    tiny_checkpoint: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ort = pytest.importorskip("onnxruntime")
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        pytest.skip(
            f"onnxruntime without the CUDA provider ({ort.get_available_providers()}): onnxruntime-gpu"
        )
    from hrseg.data.synthetic import generate_scene

    sessions: list[Any] = []

    class Recorded(ort.InferenceSession):  # type: ignore[misc]  # the real session, noted for the check
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            sessions.append(self)

    monkeypatch.setattr(ort, "InferenceSession", Recorded)
    seg = Segmenter.from_checkpoint(tiny_checkpoint, backend="onnxruntime", device="cuda", cache_dir=tmp_path)
    image = generate_scene(1, (96, 160))[0]
    got = seg.predict(image)
    providers = sessions[-1].get_providers() if sessions else []
    print(f"ONNX Runtime providers: {providers}")
    assert providers and providers[0] in ("TensorrtExecutionProvider", "CUDAExecutionProvider")
    ref = Segmenter.from_checkpoint(tiny_checkpoint, device="cuda").predict(image)
    assert float((got == ref).mean()) >= 0.99


def test_compiled_bf16_training_step_is_one_graph_without_host_syncs() -> None:
    """``--model.compile`` on the GPU (inductor, bf16 autocast, channels_last): HRNet-OCR, OHEM and Lovasz.

    The step compiles once, runs more batches of the same shape without a recompilation and without a single
    host synchronisation (``torch.cuda.set_sync_debug_mode("error")`` around forward and backward), and its
    losses follow the eager ones.
    """
    import copy

    import torch._dynamo
    from torch._dynamo.utils import counters

    from hrseg.losses import LossConfig
    from hrseg.metadata import LabelSet
    from hrseg.task import SegmentationTask

    torch._dynamo.reset()
    counters.clear()
    task = SegmentationTask(
        model="hrnetv2_w18_small_v1_ocr",
        model_options={"ocr_dropout": 0.0},  # no dropout: compiled and eager see the same network
        labels=LabelSet.generic(5, 255),
        loss=LossConfig([{"name": "ohem", "min_kept": 5000}, {"name": "lovasz", "weight": 0.5}]),
        log_images=0,
        compile=True,
    )
    eager = copy.deepcopy(task)
    eager.hparams.compile = False
    for t in (task, eager):
        t.cuda().train().model.to(memory_format=torch.channels_last)
    g = torch.Generator().manual_seed(0)
    batches = []
    for i in range(4):
        image = torch.randn(2, 3, 128, 256, generator=g).cuda().contiguous(memory_format=torch.channels_last)
        mask = torch.randint(0, 5, (2, 128, 256), generator=g)
        mask[:, : 8 * (i + 1)] = 255
        batches.append((image, mask.cuda()))
    step, eager_step = task.training_forward(), eager.training_forward()
    with torch._dynamo.config.patch(error_on_recompile=True):
        for i, (image, mask) in enumerate(batches):
            sync_mode = "error" if i > 0 else "default"  # the first call compiles (which may synchronise)
            torch.cuda.set_sync_debug_mode(sync_mode)
            try:
                with torch.autocast("cuda", dtype=torch.bfloat16):
                    loss, terms = step(image, mask)
                loss.backward()
            finally:
                torch.cuda.set_sync_debug_mode("default")
            with torch.autocast("cuda", dtype=torch.bfloat16):
                expected, _ = eager_step(image, mask)
            got, ref = float(loss.detach()), float(expected.detach())
            print(f"batch {i}: compiled loss {got:.4f}, eager {ref:.4f}, terms {sorted(terms)}")
            assert abs(got - ref) <= 0.05 * max(1.0, abs(ref))
    assert counters["stats"]["unique_graphs"] == 1 and not counters["graph_break"]
    grads = [p.grad for p in task.model.parameters()]
    assert all(g is not None and bool(torch.isfinite(g).all()) for g in grads)
    torch._dynamo.reset()
