"""Hub references, resolved by the real huggingface_hub code from a cache built here in the real layout.

No network: ``HF_HUB_OFFLINE=1`` (conftest) and ``HF_HUB_CACHE`` pointing at a temporary folder that holds
``models--<org>--<name>/{blobs,refs,snapshots}`` as ``hf_hub_download`` would have left it, with a small
timm-format state dict (timm's own ``hrnet_w18_small`` classifier, random init) and an hrseg model folder
(``hrseg export --format hub`` of the tiny checkpoint).
"""

from __future__ import annotations

import csv
import hashlib
import inspect
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from huggingface_hub import ModelCard

import hrseg
from hrseg.checkpoint import CheckpointError, CheckpointNotFoundError
from hrseg.hub import (
    HubError,
    HubNotFoundError,
    HubReference,
    ModelFolder,
    parse_reference,
    push_to_hub,
    save_model_folder,
)
from hrseg.metadata import LabelSet
from hrseg.modelcard import DATASET_LICENSES, DEFAULT_LICENSE
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
    assert main(["export", "--ckpt_path", str(tiny_checkpoint), "--format", "hub", "--output", str(out)]) == 0
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


def test_task_weights_from_the_hub_cache(cache: Path, timm_state: dict[str, torch.Tensor]) -> None:
    """``weights:`` a hub reference: the task's backbone holds the cached file's tensors afterwards."""
    task = hrseg.SegmentationTask(model="hrnetv2_w18_small_v1", labels="cityscapes", weights=TIMM_REPO)
    before = {k: v.clone() for k, v in task.model.state_dict().items()}
    task.load_pretrained_weights()
    loaded = task.model.state_dict()
    shared = [k for k in timm_state if k in loaded]
    assert len(shared) > 100
    for key in shared:
        assert torch.equal(loaded[key], timm_state[key]), key
    assert any(not torch.equal(before[k], loaded[k]) for k in shared if before[k].is_floating_point())


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
        load_pretrained(
            build_model("hrnetv2_w18_small_v1", num_classes=19),
            "pretrained/hrnetv2_w48_imagenet_pretrained.pth",
        )


def test_hub_folder_layout_and_model_card(hub_folder: Path, tiny_checkpoint: Path) -> None:
    assert sorted(p.name for p in hub_folder.iterdir()) == ["README.md", "config.json", "model.safetensors"]
    config = json.loads((hub_folder / "config.json").read_text())
    assert config["model"] == "hrnetv2_w18_small_v1" and len(config["labels"]["class_names"]) == 19
    card = (hub_folder / "README.md").read_text()
    assert card.startswith("---\nlibrary_name: hrseg\n")
    assert "hrnetv2_w18_small_v1" in card and "| 0 | road |" in card and "| 18 | bicycle |" in card
    assert "DemoDataModule" in card  # training data, from the checkpoint and the run's config.yaml
    assert "best `val/mIoU` (checkpoint callback)" in card  # metrics from the checkpoint's callback state
    assert "Segmenter.from_pretrained" in card
    # the hub metadata: license, datasets, metrics and a model-index of the checkpoint's validation scores,
    # as huggingface_hub parses it (what the hub renders)
    data = ModelCard.load(hub_folder / "README.md").data
    assert data.license == DEFAULT_LICENSE and data.library_name == "hrseg"
    assert data.datasets == ["hrseg-synthetic-streets"] and set(data.metrics) == {"mean_iou", "accuracy"}
    assert data.model_name == "hrnetv2_w18_small_v1"
    with (tiny_checkpoint.parent.parent / "metrics.csv").open() as fh:  # the run's own validation record
        logged = [row for row in csv.DictReader(fh) if row.get("val/mIoU")][-1]
    scores = {(r.metric_type, r.metric_name): r.metric_value for r in data.eval_results}
    assert {r.dataset_split for r in data.eval_results} == {"validation"}
    assert scores[("mean_iou", "mIoU")] == pytest.approx(float(logged["val/mIoU"]), abs=1e-4)
    assert scores[("mean_iou", "mIoU (classes present)")] == pytest.approx(
        float(logged["val/mIoU_present"]), abs=1e-4
    )
    assert scores[("accuracy", "pixel accuracy")] == pytest.approx(float(logged["val/pixel_acc"]), abs=1e-4)
    # the folder loads locally like the checkpoint
    seg = hrseg.Segmenter.from_pretrained(hub_folder)
    ref = hrseg.Segmenter.from_checkpoint(tiny_checkpoint)
    x = torch.rand(1, 3, 40, 56)
    torch.testing.assert_close(seg.probabilities(x), ref.probabilities(x))


def _checked_fake(
    monkeypatch: pytest.MonkeyPatch, name: str, answer: Callable[[dict[str, Any]], Any]
) -> list:
    """Replace ``HfApi.<name>`` by a fake that accepts exactly the calls the real method accepts.

    Each call is bound to the real method's signature (a ``TypeError`` for any argument it would refuse)
    and recorded; ``answer`` turns the bound arguments into the real return type.
    """
    from huggingface_hub import HfApi

    signature = inspect.signature(getattr(HfApi, name))
    calls: list[dict[str, Any]] = []

    def fake(self: HfApi, *args: Any, **kwargs: Any) -> Any:
        bound = signature.bind(self, *args, **kwargs)
        bound.apply_defaults()
        arguments = {k: v for k, v in bound.arguments.items() if k != "self"}
        calls.append(arguments)
        return answer(arguments)

    monkeypatch.setattr(HfApi, name, fake)
    return calls


def _fake_hub(monkeypatch: pytest.MonkeyPatch) -> tuple[list, list, dict[str, bytes]]:
    """Fake ``create_repo`` / ``upload_folder`` (no network); returns their calls and the uploaded files."""
    from huggingface_hub import CommitInfo
    from huggingface_hub.hf_api import RepoUrl

    uploaded: dict[str, bytes] = {}

    def upload(args: dict[str, Any]) -> CommitInfo:
        root = Path(args["folder_path"])  # a staging folder the mixin deletes afterwards: read it now
        uploaded.update({p.name: p.read_bytes() for p in root.iterdir()})
        repo = args["repo_id"]
        return CommitInfo(
            commit_url=f"https://huggingface.co/{repo}/commit/{'a' * 40}",
            commit_message=args["commit_message"],
            commit_description="",
            oid="a" * 40,
        )

    created = _checked_fake(
        monkeypatch, "create_repo", lambda a: RepoUrl(f"https://huggingface.co/{a['repo_id']}")
    )
    uploads = _checked_fake(monkeypatch, "upload_folder", upload)
    return created, uploads, uploaded


def test_push_to_hub_uploads_the_folder(hub_folder: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    created, uploads, uploaded = _fake_hub(monkeypatch)
    url = push_to_hub(hub_folder, "org/name", private=True)
    assert url == f"https://huggingface.co/org/name/commit/{'a' * 40}"
    assert len(created) == 1 and created[0]["repo_id"] == "org/name"
    assert created[0]["private"] is True and created[0]["token"] is None and created[0]["exist_ok"] is True
    assert len(uploads) == 1 and uploads[0]["repo_id"] == "org/name" and uploads[0]["repo_type"] == "model"
    assert uploads[0]["commit_message"] == "Upload hrseg model" and uploads[0]["revision"] is None
    # the folder goes up as it is: the same three files, byte for byte (the card is not regenerated)
    assert uploaded == {p.name: p.read_bytes() for p in hub_folder.iterdir()}
    with pytest.raises(CheckpointError, match="not an hrseg model folder"):
        push_to_hub(hub_folder.parent, "org/name")
    assert len(uploads) == 1


def _hand_written_folder(root: Path) -> tuple[Path, torch.nn.Module]:
    """A model folder written by hand, as another tool would: no huggingface_hub involved.

    ``config.json`` is the ModelMeta JSON (sorted keys, ``format_version`` 1), ``model.safetensors`` the
    official-key weights with the same JSON under ``hrseg_config`` in the header, ``README.md`` a card whose
    header had no license, datasets or model-index.
    """
    from safetensors.torch import save_file

    torch.manual_seed(3)
    model = build_model("hrnetv2_w18_small_v1", num_classes=3).eval()
    config = {
        "align_corners": False,
        "format_version": 1,
        "labels": {
            "class_names": ["road", "car", "sky"],
            "ignore_index": 255,
            "palette": [[128, 64, 128], [0, 0, 142], [70, 130, 180]],
        },
        "mean": [0.485, 0.456, 0.406],
        "model": "hrnetv2_w18_small_v1",
        "model_options": {},
        "std": [0.229, 0.224, 0.225],
    }
    text = json.dumps(config, indent=2, sort_keys=True)
    root.mkdir(parents=True)
    (root / "config.json").write_text(text + "\n")
    state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(root / "model.safetensors"), metadata={"hrseg_config": text, "format": "pt"})
    (root / "README.md").write_text(
        "---\nlibrary_name: hrseg\npipeline_tag: image-segmentation\ntags:\n- hrseg\n---\n\n# old card\n"
    )
    return root, model


def test_a_hand_written_folder_loads(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder, model = _hand_written_folder(tmp_path / "old")
    x = torch.rand(1, 3, 36, 40)
    with torch.inference_mode():
        expected = model(x)
        seg = hrseg.Segmenter.from_pretrained(folder, fast=False)  # fast=False: the network as loaded
        assert seg.class_names == ["road", "car", "sky"] and seg.palette[1] == [0, 0, 142]
        torch.testing.assert_close(seg.model(x), expected, rtol=0, atol=0)  # the same weights
    loaded = ModelFolder.from_pretrained(folder)
    assert loaded.meta.num_classes == 3 and loaded.path == folder and loaded.source is None
    assert loaded.card is not None and loaded.card.data.library_name == "hrseg"
    state = loaded.state_dict()
    assert state.keys() == model.state_dict().keys()
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())
    # the same folder published earlier: a hub repository in the cache, resolved by reference
    cache = tmp_path / "hf-cache"
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    files = {p.name: p.read_bytes() for p in folder.iterdir()}
    add_to_cache(cache, "old-org/old-model", files, COMMIT_1, ("main",))
    with torch.inference_mode():
        seg = hrseg.Segmenter.from_pretrained("old-org/old-model", fast=False)
        torch.testing.assert_close(seg.model(x), expected, rtol=0, atol=0)
    # and it is published unchanged: the old card is kept, not replaced by a new one
    _, _, uploaded = _fake_hub(monkeypatch)
    push_to_hub(folder, "org/old")
    assert uploaded == files


def test_saved_folder_keeps_the_layout_earlier_hrseg_reads(tmp_path: Path) -> None:
    from safetensors import safe_open

    from hrseg.checkpoint import read_model_checkpoint
    from hrseg.metadata import ModelMeta

    torch.manual_seed(4)
    model = build_model("hrnetv2_w18_small_v1", num_classes=2)
    meta = ModelMeta("hrnetv2_w18_small_v1", LabelSet(("a", "b")))
    files = save_model_folder(model, meta, tmp_path / "new")
    assert sorted(p.name for p in files) == ["README.md", "config.json", "model.safetensors"]
    # what earlier hrseg reads: config.json is the ModelMeta JSON, and the header carries it too
    assert json.loads((tmp_path / "new" / "config.json").read_text()) == json.loads(meta.to_json())
    with safe_open(str(tmp_path / "new" / "model.safetensors"), framework="pt") as fh:
        assert json.loads(fh.metadata()["hrseg_config"]) == json.loads(meta.to_json())
        assert set(fh.keys()) == set(model.state_dict())  # official key names, no wrapper prefix
    alone = tmp_path / "alone.safetensors"  # a lone weights file still describes itself through its header
    alone.write_bytes((tmp_path / "new" / "model.safetensors").read_bytes())
    read_meta, state = read_model_checkpoint(alone)
    assert read_meta == meta and all(torch.equal(state[k], v) for k, v in model.state_dict().items())
    card = ModelCard.load(tmp_path / "new" / "README.md")  # no training record: a card without scores
    assert card.data.license == DEFAULT_LICENSE and card.data.eval_results is None
    with pytest.raises(ValueError, match="either state_dict or path"):
        ModelFolder(meta)


def test_card_scores_are_those_of_the_exported_checkpoint(tmp_path: Path) -> None:
    """A best checkpoint before the run's end: the model-index shows its own validation, not the last."""
    from hrseg.metadata import ModelMeta
    from hrseg.modelcard import model_card, read_training_summary

    ckpts = tmp_path / "run" / "checkpoints"
    ckpts.mkdir(parents=True)
    best = ckpts / "best-epoch001-step000010.ckpt"
    state = {"monitor": "val/mIoU", "best_model_score": torch.tensor(0.61), "best_model_path": str(best)}
    callbacks = {"ModelCheckpoint{'monitor': 'val/mIoU'}": state}
    record = {"epoch": 1, "global_step": 10, "callbacks": callbacks, "CityscapesDataModule": {}}
    torch.save(record, best)
    torch.save({**record, "epoch": 2, "global_step": 20}, ckpts / "last.ckpt")
    torch.save({"epoch": 2, "global_step": 20, "callbacks": callbacks}, ckpts / "plain.ckpt")
    (tmp_path / "run" / "metrics.csv").write_text(
        "epoch,step,val/mIoU,val/mIoU_present,val/pixel_acc\n"
        "0,4,0.40,0.45,0.80\n1,9,0.61,0.66,0.88\n2,19,0.55,0.60,0.86\n"
    )
    meta = ModelMeta("hrnetv2_w18_small_v1", LabelSet.generic(2))
    # the training data's terms are the default license (Cityscapes: non-commercial research)
    terms = model_card(meta, read_training_summary(best)).data
    assert (terms.license, terms.license_link) == ("other", "https://www.cityscapes-dataset.com/license/")
    assert terms.license_name == DATASET_LICENSES["CityscapesDataModule"]["license_name"]
    # no DataModule recorded: the scores have no dataset to belong to, so the card claims no model-index
    assert model_card(meta, read_training_summary(ckpts / "plain.ckpt")).data.eval_results is None
    for path, expected in ((best, (0.61, 0.66, 0.88)), (ckpts / "last.ckpt", (0.55, 0.60, 0.86))):
        card = model_card(meta, read_training_summary(path), license="other")
        assert card.data.license == "other" and card.data.model_name == "hrnetv2_w18_small_v1"
        assert card.data.datasets == ["cityscapes"]
        values = {r.metric_name: r.metric_value for r in card.data.eval_results}
        assert values == dict(
            zip(("mIoU", "mIoU (classes present)", "pixel accuracy"), expected, strict=True)
        )
