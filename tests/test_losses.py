"""Losses: every spec builds and trains a step; OHEM keeps exactly the documented pixels."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from hrseg.losses import (
    CrossEntropy,
    FocalLoss,
    LovaszSoftmax,
    OhemCrossEntropy,
    build_loss,
    normalize_loss_spec,
    resolve_class_weights,
)
from hrseg.metadata import LabelSet, get_label_set

IGNORE = 255


def _batch(num_classes: int = 5, shape: tuple[int, int, int] = (2, 8, 12), seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(shape[0], num_classes, *shape[1:], generator=g)
    target = torch.randint(0, num_classes, shape, generator=g)
    target[:, :2, :] = IGNORE
    return logits, target


@pytest.mark.parametrize(
    "spec",
    [
        "ce",
        [{"name": "ohem", "min_kept": 20}],
        "dice",
        "focal",
        "lovasz",
        "ce+dice",
        [{"name": "ce", "weight": 1.0}, {"name": "dice", "weight": 0.5}],
        [{"name": "ohem", "weight": 1.0, "thresh": 0.7, "min_kept": 10}, {"name": "lovasz", "weight": 0.25}],
    ],
)
def test_each_loss_runs_a_training_step(spec):
    torch.manual_seed(0)
    net = torch.nn.Conv2d(3, 5, 1)
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    criterion = build_loss(spec, LabelSet.generic(5, IGNORE))
    x = torch.randn(2, 3, 8, 12)
    _, target = _batch()
    before = net.weight.detach().clone()
    loss = criterion(net(x), target)
    assert loss.ndim == 0 and torch.isfinite(loss)
    loss.backward()
    opt.step()
    assert not torch.equal(before, net.weight)


def test_ce_matches_torch_and_ignores_pixels():
    logits, target = _batch()
    ours = CrossEntropy(IGNORE)(logits, target)
    ref = F.cross_entropy(logits, target, ignore_index=IGNORE)
    torch.testing.assert_close(ours, ref)
    # changing logits at ignored pixels changes nothing
    logits2 = logits.clone()
    logits2[:, :, :2, :] = 100.0
    torch.testing.assert_close(CrossEntropy(IGNORE)(logits2, target), ours)


def test_weighted_ce_matches_torch():
    logits, target = _batch(num_classes=19)
    weights = resolve_class_weights("cityscapes", get_label_set("cityscapes"))
    assert weights is not None and weights.shape == (19,)
    torch.testing.assert_close(weights, torch.tensor(get_label_set("cityscapes").class_weights))
    ours = CrossEntropy(IGNORE, weights)(logits, target)
    ref = F.cross_entropy(logits, target, weight=weights, ignore_index=IGNORE)
    torch.testing.assert_close(ours, ref)


@pytest.mark.parametrize(
    ("ours", "smp_name", "options"),
    [
        (FocalLoss, "FocalLoss", {}),
        (FocalLoss, "FocalLoss", {"alpha": 0.25, "gamma": 1.5}),
        (FocalLoss, "FocalLoss", {"gamma": 0.5, "normalized": True}),
        (FocalLoss, "FocalLoss", {"reduced_threshold": 0.5}),
        (LovaszSoftmax, "LovaszLoss", {}),
        (LovaszSoftmax, "LovaszLoss", {"per_image": True}),
    ],
)
def test_focal_and_lovasz_match_smp_values_and_gradients(ours, smp_name, options):
    """The masked, fixed-shape versions give smp's multiclass values (ignored pixels, absent classes)."""
    from segmentation_models_pytorch import losses as smp_losses

    logits, target = _batch(shape=(3, 12, 16))
    logits = logits * 3
    target[1][target[1] == 2] = 0  # class 2 absent from the second image
    target[:, :, :3] = IGNORE
    a = logits.clone().requires_grad_()
    b = logits.clone().requires_grad_()
    value = ours(IGNORE, **options)(a, target)
    expected = getattr(smp_losses, smp_name)(mode="multiclass", ignore_index=IGNORE, **options)(b, target)
    value.backward()
    expected.backward()
    torch.testing.assert_close(value, expected)
    torch.testing.assert_close(a.grad, b.grad)
    # logits at ignored pixels change nothing
    c = logits.clone()
    c[:, :, :, :3] = 50.0
    torch.testing.assert_close(ours(IGNORE, **options)(c, target), value.detach())


def test_bad_loss_options_are_refused():
    with pytest.raises(ValueError, match=r"unknown option \['from_logits'\] for loss 'focal'"):
        build_loss([{"name": "focal", "from_logits": False}], LabelSet.generic(5))
    with pytest.raises(ValueError, match="gamma must be >= 0"):
        build_loss([{"name": "focal", "gamma": -1}], LabelSet.generic(5))


def test_all_ignored_batch_gives_zero_not_nan():
    logits, target = _batch()
    target[:] = IGNORE
    for spec in ("ce", "ohem", "focal", "lovasz", [{"name": "lovasz", "per_image": True}]):
        loss = build_loss(spec, LabelSet.generic(5, IGNORE))(logits.requires_grad_(), target)
        assert torch.isfinite(loss) and float(loss.detach()) == 0.0


def test_ohem_keeps_pixels_below_threshold_when_enough():
    logits, target = _batch(shape=(2, 16, 16))
    ohem = OhemCrossEntropy(IGNORE, thresh=0.9, min_kept=10)
    prob = logits.softmax(1).gather(1, target.clamp(max=4).unsqueeze(1)).squeeze(1)
    expected = (prob < 0.9) & (target != IGNORE)
    assert int(expected.sum()) > 10  # random logits: almost every pixel is "hard"
    keep = ohem.select(logits, target)
    assert torch.equal(keep, expected)


def test_ohem_keeps_min_kept_lowest_probability_pixels():
    logits, target = _batch(shape=(2, 16, 16))
    # make the network confident and right everywhere except a few pixels
    confident = F.one_hot(target.clamp(max=4), 5).permute(0, 3, 1, 2).float() * 20.0
    logits = confident + 0.01 * logits
    valid = target != IGNORE
    n_valid = int(valid.sum())
    ohem = OhemCrossEntropy(IGNORE, thresh=0.9, min_kept=37)
    keep = ohem.select(logits, target)
    assert int(keep.sum()) == 37
    assert not keep[~valid].any(), "ignored pixels must never be kept"
    prob = logits.softmax(1).gather(1, target.clamp(max=4).unsqueeze(1)).squeeze(1)
    kept_max = prob[keep].max()
    dropped_min = prob[valid & ~keep].min()
    assert kept_max <= dropped_min
    # more requested than labelled: all labelled pixels, never an ignored one
    keep_all = OhemCrossEntropy(IGNORE, thresh=0.9, min_kept=10**6).select(logits, target)
    assert int(keep_all.sum()) == n_valid and torch.equal(keep_all, valid)


def test_ohem_loss_is_mean_over_kept_pixels():
    logits, target = _batch(shape=(1, 8, 8))
    ohem = OhemCrossEntropy(IGNORE, thresh=0.5, min_kept=5)
    keep = ohem.select(logits, target)
    per_pixel = F.cross_entropy(logits, target, ignore_index=IGNORE, reduction="none")
    torch.testing.assert_close(ohem(logits, target), per_pixel[keep].mean())


def test_spec_validation():
    assert normalize_loss_spec("ce+dice") == [{"name": "ce", "weight": 1.0}, {"name": "dice", "weight": 1.0}]
    with pytest.raises(ValueError, match="unknown loss"):
        normalize_loss_spec("bce")
    with pytest.raises(ValueError, match="name"):
        normalize_loss_spec([{"weight": 1.0}])
    with pytest.raises(ValueError, match="classes"):
        resolve_class_weights("cityscapes", LabelSet.generic(21))
    with pytest.raises(ValueError, match="unknown option"):
        build_loss([{"name": "ce", "thresh": 0.7}], LabelSet.generic(5))


def test_weighted_sum_components():
    logits, target = _batch()
    criterion = build_loss(
        [{"name": "ce", "weight": 2.0}, {"name": "dice", "weight": 0.5}], LabelSet.generic(5)
    )
    parts = criterion.components(logits, target)
    assert set(parts) == {"ce", "dice"}
    torch.testing.assert_close(criterion(logits, target), 2.0 * parts["ce"] + 0.5 * parts["dice"])
