import pytest
import torch

from brainseg.config import ModelConfig
from brainseg.losses import DiceBCELoss, soft_dice_loss
from brainseg.model import WeightsError, build_model, load_checkpoint, save_checkpoint
import brainseg.model as model_module


def test_output_matches_input_and_is_intensity_invariant():
    torch.manual_seed(0)
    model = build_model(ModelConfig()).eval()
    x = torch.rand(2, 1, 64, 64)
    with torch.no_grad():
        y = model(x)
        # per-slice standardisation inside the model: scaling and offsetting intensities changes nothing
        y2 = model(0.5 * x + 0.2)
    assert y.shape == (2, 1, 64, 64)
    assert torch.allclose(y, y2, atol=1e-4)


def test_imagenet_offline_fails_with_instructions(monkeypatch):
    monkeypatch.setattr(model_module, "_hub_reachable", lambda timeout=3.0: False)
    with pytest.raises(WeightsError, match="encoder_weights: null"):
        build_model(ModelConfig(encoder_weights="imagenet"))


def test_local_encoder_weights_are_loaded(tmp_path):
    torch.manual_seed(1)
    source = build_model(ModelConfig())
    path = tmp_path / "encoder.pth"
    torch.save(source.net.encoder.state_dict(), path)
    torch.manual_seed(2)
    loaded = build_model(ModelConfig(encoder_weights=str(path)))
    for a, b in zip(source.net.encoder.state_dict().values(), loaded.net.encoder.state_dict().values()):
        assert torch.equal(a, b)
    with pytest.raises(WeightsError, match="does not exist"):
        build_model(ModelConfig(encoder_weights=str(tmp_path / "missing.pth")))


def test_checkpoint_round_trip(tmp_path):
    cfg = ModelConfig(dropout=0.0)
    model = build_model(cfg).eval()
    save_checkpoint(tmp_path / "m.pt", model, cfg, 64, epoch=3, val_dice=0.5)
    loaded, ckpt = load_checkpoint(tmp_path / "m.pt")
    x = torch.rand(1, 1, 64, 64)
    with torch.no_grad():
        assert torch.equal(model(x), loaded(x))
    assert ckpt["epoch"] == 3 and ckpt["image_size"] == 64


def test_losses():
    target = torch.zeros(1, 1, 4, 4)
    target[..., :2, :2] = 1
    perfect = (target * 2 - 1) * 50
    assert soft_dice_loss(perfect, target).item() == pytest.approx(0.0, abs=1e-6)
    assert DiceBCELoss(1.0, 1.0)(perfect, target).item() == pytest.approx(0.0, abs=1e-6)
    assert DiceBCELoss(1.0, 0.0)(-perfect, target).item() > 0.9


def test_dice_loss_is_per_image():
    # One image with a small tumor found, one with a large tumor missed: per-image Dice loss is the
    # mean of ~0 and ~1 whatever the sizes, where a pooled loss would be dominated by the large one.
    target = torch.zeros(2, 1, 16, 16)
    target[0, :, :2, :2] = 1
    target[1, :, 2:14, 2:14] = 1
    logits = torch.full_like(target, -50.0)
    logits[0] = (target[0] * 2 - 1) * 50
    assert soft_dice_loss(logits, target, eps=1e-6).item() == pytest.approx(0.5, abs=1e-3)
