"""Hub references, resolved by the real huggingface_hub code from a cache built here in the real layout.

No network: ``HF_HUB_OFFLINE=1`` (conftest) and ``HF_HUB_CACHE`` pointing at a temporary folder that holds
``models--<org>--<name>/{blobs,refs,snapshots}`` as ``hf_hub_download`` would have left it, with a small
timm-format state dict (timm's own ``hrnet_w18_small`` classifier, random init) and an hrseg model folder
(``hrseg export --format hub`` of the tiny checkpoint).
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch

import hrseg
from hrseg.checkpoint import CheckpointError, CheckpointNotFoundError
from hrseg.hub import HubError, HubNotFoundError, HubReference, parse_reference, push_to_hub
from hrseg.models import build_model, load_pretrained

TIMM_REPO = "timm/hrnet_w18_small.ms_in1k"
BUNDLE_REPO = "hrseg-test/tiny-demo"
COMMIT_1 = "1" * 40
COMMIT_2 = "2" * 40


def add_to_cache(
    cache: Path, repo_id: str, files: dict[str, bytes], commit: str, refs: tuple[str, ...]
) -> Path:
    """Lay ``files`` out as huggingface_hub's cache does: blobs by hash, snapshot symlinks, refs."""
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    snapshot = repo / "snapshots" / commit
    snapshot.mkdir(parents=True, exist_ok=True)
    (repo / "blobs").mkdir(exist_ok=True)
    (repo / "refs").mkdir(exist_ok=True)
    for name, data in files.items():
        blob = repo / "blobs" / hashlib.sha256(data).hexdigest()
        blob.write_bytes(data)
        link = snapshot / name
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(os.path.relpath(blob, link.parent))
    for ref in refs:
        (repo / "refs" / ref).write_text(commit)
    return snapshot


@pytest.fixture(scope="module")
def timm_state() -> dict[str, torch.Tensor]:
    timm = pytest.importorskip("timm")
    torch.manual_seed(0)
    return {k: v.contiguous() for k, v in timm.create_model("hrnet_w18_small").state_dict().items()}


@pytest.fixture(scope="module")
def hub_folder(tiny_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``hrseg export --format hub`` of the tiny checkpoint."""
    from hrseg.commands import main

    out = tmp_path_factory.mktemp("hub_export") / "tiny_hub"
    assert main(["export", "--ckpt", str(tiny_checkpoint), "--format", "hub", "--out", str(out)]) == 0
    return out


@pytest.fixture
def cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, timm_state: dict[str, torch.Tensor], hub_folder: Path
) -> Path:
    from safetensors.torch import save

    root = tmp_path / "hf-cache"
    monkeypatch.setenv("HF_HUB_CACHE", str(root))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    config = json.dumps({"architecture": "hrnet_w18_small", "num_classes": 1000}).encode()
    add_to_cache(
        root, TIMM_REPO, {"model.safetensors": save(timm_state), "config.json": config}, COMMIT_1, ("main",)
    )
    bundle = {
        name: (hub_folder / name).read_bytes() for name in ("config.json", "model.safetensors", "README.md")
    }
    add_to_cache(root, BUNDLE_REPO, bundle, COMMIT_2, ("main", "v1"))
    return root


def test_parse_reference(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert parse_reference("timm/hrnet_w48.ms_in1k") == HubReference("timm/hrnet_w48.ms_in1k")
    assert parse_reference("hf-hub:timm/hrnet_w48.ms_in1k@v2") == HubReference("timm/hrnet_w48.ms_in1k", "v2")
    assert parse_reference("org/name@" + COMMIT_1) == HubReference("org/name", COMMIT_1)
    # local paths stay local: weights-file suffixes, absolute / relative paths, deeper folders
    for local in ("pretrained/hrnetv2_w48_imagenet_pretrained.pth", "runs/best.ckpt", "/abs/w", "a/b/c", "w"):
        assert parse_reference(local) is None, local
    monkeypatch.chdir(tmp_path)
    (tmp_path / "org" / "name").mkdir(parents=True)
    assert parse_reference("org/name") is None  # an existing folder wins
    with pytest.raises(HubError, match="expected hf-hub:<org>/<name>"):
        parse_reference("hf-hub:not-a-repo")


@pytest.mark.parametrize(
    "reference", [TIMM_REPO, f"hf-hub:{TIMM_REPO}", f"hf-hub:{TIMM_REPO}@main", f"{TIMM_REPO}@{COMMIT_1}"]
)
def test_timm_weights_from_the_hub_cache(
    cache: Path, timm_state: dict[str, torch.Tensor], reference: str
) -> None:
    model = build_model("hrnetv2_w18_small_v1", num_classes=19)
    report = load_pretrained(model, reference)
    # timm's key names are hrseg's backbone names: everything but the classifier head loads
    assert report.hub is not None
    assert report.hub.repo_id == TIMM_REPO and report.hub.filename == "model.safetensors"
    assert report.hub.commit == COMMIT_1
    assert Path(report.path).is_relative_to(cache) and f"snapshots/{COMMIT_1}" in report.path
    text = str(report)
    assert f"hf-hub:{TIMM_REPO}@" in text and "model.safetensors" in text and COMMIT_1[:12] in text
    assert all(
        k.startswith(("incre_modules.", "downsamp_modules.", "final_layer.", "classifier."))
        for k in report.dropped
    )
    assert report.missing and all(k.startswith("last_layer.") for k in report.missing)
    sd = model.state_dict()
    assert len(report.loaded) == len(sd) - len(report.missing)
    for key in report.loaded:
        assert torch.equal(sd[key], timm_state[key]), key


def test_hrseg_bundle_from_the_hub_cache(cache: Path, tiny_checkpoint: Path, demo_images_dir: Path) -> None:
    image = next(iter(sorted(demo_images_dir.glob("*.png"))))
    reference = hrseg.Segmenter.from_checkpoint(tiny_checkpoint).predict(image)
    for name, kwargs in ((BUNDLE_REPO, {}), (f"hf-hub:{BUNDLE_REPO}", {"revision": "v1"})):
        seg = hrseg.Segmenter.from_pretrained(name, **kwargs)
        np.testing.assert_array_equal(seg.predict(image), reference)
        assert seg.class_names[0] == "road"
    # the same repository as `weights:` (fine-tuning from a shared model): a report naming its source
    model = build_model("hrnetv2_w18_small_v1", num_classes=19)
    report = load_pretrained(model, f"{BUNDLE_REPO}@v1")
    assert report.hub is not None and report.hub.repo_id == BUNDLE_REPO and report.hub.revision == "v1"
    assert report.hub.commit == COMMIT_2 and report.missing == [] and report.dropped == []
    assert f"hf-hub:{BUNDLE_REPO}@v1 (commit {COMMIT_2[:12]}) file model.safetensors" in str(report)


def test_task_weights_from_the_hub_cache(cache: Path) -> None:
    task = hrseg.SegmentationTask(model="hrnetv2_w18_small_v1", weights=TIMM_REPO)
    task.load_pretrained_weights()
    assert task._pretrained_done


def test_timm_repository_is_no_hrseg_model(cache: Path) -> None:
    with pytest.raises(HubError, match=r"not an hrseg model.*timm 'hrnet_w18_small'.*load_pretrained"):
        hrseg.Segmenter.from_pretrained(TIMM_REPO)


def test_uncached_reference_offline_names_it_and_the_way_out(cache: Path) -> None:
    model = build_model("hrnetv2_w18_small_v1", num_classes=19)
    with pytest.raises(HubNotFoundError) as info:
        load_pretrained(model, "timm/hrnet_w48.ms_in1k")
    err = info.value
    assert isinstance(err, FileNotFoundError) and isinstance(err, CheckpointNotFoundError)
    message = str(err)
    assert "hf-hub:timm/hrnet_w48.ms_in1k" in message and "HF_HUB_OFFLINE" in message
    assert "hf download timm/hrnet_w48.ms_in1k" in message and "huggingface-cli download" in message
    assert "local path" in message and str(cache) in message
    # a pinned revision that the cache lacks, and a model folder that is neither local nor cached
    with pytest.raises(HubNotFoundError, match="@v9"):
        load_pretrained(model, f"hf-hub:{TIMM_REPO}@v9")
    with pytest.raises(CheckpointNotFoundError, match="No local file or folder 'someone/model'"):
        hrseg.Segmenter.from_pretrained("someone/model")


def test_local_paths_keep_working(tmp_path: Path, timm_state: dict[str, torch.Tensor]) -> None:
    from safetensors.torch import save_file

    path = tmp_path / "hrnet_w18_small.safetensors"
    save_file(timm_state, str(path))
    report = load_pretrained(build_model("hrnetv2_w18_small_v1", num_classes=19), str(path))
    assert report.hub is None and report.path == str(path)
    with pytest.raises(FileNotFoundError):
        load_pretrained(build_model("hrnetv2_w18_small_v1"), "pretrained/hrnetv2_w48_imagenet_pretrained.pth")


def test_hub_folder_layout_and_model_card(hub_folder: Path, tiny_checkpoint: Path) -> None:
    assert sorted(p.name for p in hub_folder.iterdir()) == ["README.md", "config.json", "model.safetensors"]
    config = json.loads((hub_folder / "config.json").read_text())
    assert config["model"] == "hrnetv2_w18_small_v1" and config["num_classes"] == 19
    card = (hub_folder / "README.md").read_text()
    assert card.startswith("---\nlibrary_name: hrseg\n")
    assert "hrnetv2_w18_small_v1" in card and "| 0 | road |" in card and "| 18 | bicycle |" in card
    assert "DemoDataModule" in card  # training data, from the checkpoint and the run's config.yaml
    assert "best `val/mIoU` (checkpoint callback)" in card  # metrics from the checkpoint's callback state
    assert "Segmenter.from_pretrained" in card
    # the folder loads locally like the checkpoint
    seg = hrseg.Segmenter.from_pretrained(hub_folder)
    ref = hrseg.Segmenter.from_checkpoint(tiny_checkpoint)
    x = torch.rand(1, 3, 40, 56)
    torch.testing.assert_close(seg.probabilities(x), ref.probabilities(x))


def test_push_to_hub_uploads_the_folder(hub_folder: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import huggingface_hub

    calls: dict[str, dict] = {}

    class Info:
        commit_url = "https://hub.example/org/name/commit/abc"
        pr_url = None

    monkeypatch.setattr(
        huggingface_hub,
        "create_repo",
        lambda repo_id, **kw: calls.setdefault("create", {"repo_id": repo_id, **kw}),
    )
    monkeypatch.setattr(
        huggingface_hub, "upload_folder", lambda **kw: calls.setdefault("upload", kw) and Info()
    )
    url = push_to_hub(hub_folder, "org/name", private=True)
    assert url == Info.commit_url
    assert calls["create"] == {"repo_id": "org/name", "private": True, "token": None, "exist_ok": True}
    assert calls["upload"]["repo_id"] == "org/name" and calls["upload"]["folder_path"] == str(hub_folder)
    with pytest.raises(CheckpointError, match="not an hrseg model folder"):
        push_to_hub(hub_folder.parent, "org/name")
