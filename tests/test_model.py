import json
import re

import numpy as np
import pytest
import segmentation_models_pytorch as smp
import torch

from brainseg.config import ModelConfig
import torch.nn.functional as F

from brainseg.losses import SegmentationLoss, focal_loss, soft_dice_loss
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


@pytest.fixture
def offline_hub(monkeypatch, tmp_path):
    """No network, and an empty Hugging Face cache under tmp_path/hf."""
    from huggingface_hub import constants

    monkeypatch.setattr(model_module, "_hub_reachable", lambda timeout=3.0: False)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf"))
    return tmp_path / "hf"


def rgb_encoder_state(seed: int) -> dict:
    """A resnet18 state dict as a classification checkpoint has it: RGB first conv and an fc head."""
    torch.manual_seed(seed)
    net = smp.create_model("Unet", encoder_name="resnet18", encoder_weights=None, in_channels=3, classes=1)
    state = {k: v.clone() for k, v in net.encoder.state_dict().items()}
    state["fc.weight"], state["fc.bias"] = torch.zeros(1000, 512), torch.zeros(1000)
    return state


def test_imagenet_offline_without_cache_fails_with_instructions(offline_hub):
    with pytest.raises(WeightsError, match="encoder_weights: null.*cache"):
        build_model(ModelConfig(encoder_weights="imagenet"))


def test_imagenet_offline_loads_from_prefilled_cache(offline_hub):
    from safetensors.torch import save_file
    from segmentation_models_pytorch.encoders import encoders

    settings = encoders["resnet18"]["pretrained_settings"]["imagenet"]
    snapshot = offline_hub / f"models--{settings['repo_id'].replace('/', '--')}" / "snapshots" / settings["revision"]
    snapshot.mkdir(parents=True)
    state = rgb_encoder_state(3)
    state.pop("fc.weight"), state.pop("fc.bias")
    save_file(state, str(snapshot / "model.safetensors"))
    (snapshot / "config.json").write_text("{}")
    model = build_model(ModelConfig(encoder_weights="imagenet"))
    loaded = model.net.encoder.state_dict()
    assert torch.equal(loaded["layer4.1.conv2.weight"], state["layer4.1.conv2.weight"])
    assert loaded["conv1.weight"].shape[1] == 1


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


def test_rgb_classification_weights_are_adapted_to_one_channel(tmp_path):
    state = rgb_encoder_state(4)
    path = tmp_path / "resnet18-imagenet.pth"
    torch.save(state, path)
    loaded = build_model(ModelConfig(encoder_weights=str(path))).net.encoder.state_dict()
    # A gray slice repeated into RGB meets the summed filter with the same response.
    assert torch.allclose(loaded["conv1.weight"], state["conv1.weight"].sum(dim=1, keepdim=True))
    assert torch.equal(loaded["layer1.0.conv1.weight"], state["layer1.0.conv1.weight"])
    torch.save({"conv1.weight": torch.zeros(3, 3)}, path)
    with pytest.raises(WeightsError, match="not a state dict"):
        build_model(ModelConfig(encoder_weights=str(path)))


@pytest.mark.parametrize("architecture", ["Unet", "UnetPlusPlus", "FPN", "DeepLabV3Plus"])
def test_architectures_build_and_keep_the_input_size(architecture):
    model = build_model(ModelConfig(architecture=architecture, encoder="resnet18")).eval()
    with torch.no_grad():
        assert model(torch.rand(1, 1, 64, 64)).shape == (1, 1, 64, 64)


def test_unknown_timm_encoder_is_a_clear_error():
    # segmentation-models-pytorch names are checked with the config; timm's only when building.
    with pytest.raises(WeightsError, match="model.encoder 'tu-resnet999': timm has no such model"):
        build_model(ModelConfig(encoder="tu-resnet999"))


def test_checkpoint_round_trip(tmp_path):
    cfg = ModelConfig(dropout=0.0)
    model = build_model(cfg).eval()
    save_checkpoint(tmp_path / "m.pt", model.state_dict(), cfg, 64, epoch=3, val_dice=0.5)
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
    assert SegmentationLoss(1.0, 1.0, 1.0)(perfect, target).item() == pytest.approx(0.0, abs=1e-6)
    assert SegmentationLoss(1.0, 0.0)(-perfect, target).item() > 0.9


def test_focal_loss_down_weights_easy_pixels():
    target = torch.tensor([1.0, 0.0, 1.0])
    logits = torch.tensor([3.0, -3.0, -1.0])  # two easy pixels, one hard
    bce = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
    assert focal_loss(logits, target, 0.0).item() == pytest.approx(bce.mean().item())
    p_true = torch.sigmoid(torch.tensor([3.0, 3.0, -1.0]))
    expected = ((1 - p_true) ** 2 * bce).mean()
    assert focal_loss(logits, target, 2.0).item() == pytest.approx(expected.item(), rel=1e-5)
    # the hard pixel keeps most of its BCE, the easy ones almost none
    assert focal_loss(logits[2:], target[2:], 2.0) / bce[2] > 0.5
    assert focal_loss(logits[:1], target[:1], 2.0) / bce[0] < 0.01


def test_loss_weights_combine_linearly():
    torch.manual_seed(0)
    logits, target = torch.randn(2, 1, 8, 8), (torch.rand(2, 1, 8, 8) > 0.7).float()
    parts = [SegmentationLoss(*w)(logits, target).item() for w in ((1, 0, 0), (0, 1, 0), (0, 0, 1))]
    assert SegmentationLoss(0.5, 2.0, 3.0)(logits, target).item() == pytest.approx(
        0.5 * parts[0] + 2.0 * parts[1] + 3.0 * parts[2], rel=1e-5)


def test_dice_loss_is_per_image():
    # One image with a small tumor found, one with a large tumor missed: per-image Dice loss is the
    # mean of ~0 and ~1 whatever the sizes, where a pooled loss would be dominated by the large one.
    target = torch.zeros(2, 1, 16, 16)
    target[0, :, :2, :2] = 1
    target[1, :, 2:14, 2:14] = 1
    logits = torch.full_like(target, -50.0)
    logits[0] = (target[0] * 2 - 1) * 50
    assert soft_dice_loss(logits, target, eps=1e-6).item() == pytest.approx(0.5, abs=1e-3)


def test_an_opset_the_exporter_cannot_write_is_an_error_not_a_silent_fallback(tmp_path):
    from brainseg.export import ExportError, _export_onnx

    class Net(torch.nn.Module):  # the exporter names dynamic axes by the forward argument: `image`
        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv2d(1, 1, 3, padding=1)

        def forward(self, image):
            return torch.sigmoid(self.conv(image))

    net = Net().eval()
    with pytest.raises(ExportError, match="export.opset is 99, but the ONNX exporter wrote opset 18"):
        _export_onnx(net, torch.rand(1, 1, 8, 8), tmp_path / "m.onnx", opset=99)
    assert list(tmp_path.iterdir()) == []


def test_disagreement_counts_the_mask_pixels_that_cross_the_threshold():
    from brainseg.export import disagreement

    reference = np.array([0.2, 0.4999, 0.5, 0.9], dtype=np.float32)
    exported = np.array([0.2, 0.5001, 0.4999, 0.9], dtype=np.float32)
    largest, flips = disagreement(reference, exported, 0.5)
    assert flips == 2 and largest == pytest.approx(2e-4, rel=1e-3)
    assert disagreement(reference, reference + np.float32(0.05), 0.97) == (pytest.approx(0.05), 0)


@pytest.fixture
def checkpoint(tmp_path):
    cfg = ModelConfig(dropout=0.0)
    save_checkpoint(tmp_path / "model.pt", build_model(cfg).eval().state_dict(), cfg, 64, epoch=1, val_dice=0.5)
    return tmp_path / "model.pt"


SAMPLES = np.random.default_rng(0).integers(0, 256, (2, 64, 64), dtype=np.uint8)


def test_an_export_beyond_tolerance_names_the_mask_disagreement_and_the_fix(checkpoint, tmp_path, monkeypatch):
    import brainseg.export as export_module
    from brainseg.config import ExportConfig
    from brainseg.inference import PostProcess

    run_onnx = export_module._run_onnx
    # ONNX Runtime shifted by 2e-3 everywhere: what float32 rounding does to a sharply trained model
    monkeypatch.setattr(export_module, "_run_onnx", lambda path, inputs: run_onnx(path, inputs) + np.float32(2e-3))
    with pytest.raises(export_module.ExportError) as failure:
        export_module.export(checkpoint, tmp_path / "out", ExportConfig(tolerance=1e-3), PostProcess(threshold=0.5),
                             SAMPLES)
    assert re.search(r"max \|diff\| ONNX 2\.00e-03, TorchScript 0\.00e\+00 > export\.tolerance 0\.001; their masks at "
                     r"threshold 0\.5 differ in \d+ and 0 of 8192 pixels", str(failure.value))
    assert "-S export.tolerance=" in str(failure.value)
    assert not (tmp_path / "out" / "model.json").exists()


def test_export_records_the_version_without_installed_package_metadata(checkpoint, tmp_path, monkeypatch):
    """As when the stages run with PYTHONPATH=src and brainseg is not installed: the export (the last
    stage) once failed there, after the whole run, on importlib.metadata."""
    import importlib.metadata

    import brainseg
    from brainseg.config import ExportConfig
    from brainseg.export import export
    from brainseg.inference import PostProcess

    found = importlib.metadata.Distribution.from_name

    def without_brainseg(name):
        if name == "brainseg":
            raise importlib.metadata.PackageNotFoundError(name)
        return found(name)

    monkeypatch.setattr(importlib.metadata.Distribution, "from_name", staticmethod(without_brainseg))
    export(checkpoint, tmp_path / "out", ExportConfig(), PostProcess(), SAMPLES)
    assert json.loads((tmp_path / "out" / "model.json").read_text())["brainseg_version"] == brainseg.__version__
