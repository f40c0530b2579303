import json
from pathlib import Path

import pytest

from tiny_repo import make_tiny_repo


@pytest.fixture(scope="session")
def pipeline_repo(tmp_path_factory):
    """The whole pipeline reproduced on a tiny phantom in a temporary git + DVC repository, committed."""
    return make_tiny_repo(tmp_path_factory.mktemp("pipeline"))


MODEL_SIZE = 64


@pytest.fixture(scope="session")
def model_path(tmp_path_factory) -> Path:
    """A tiny untrained model exported the way the export stage does it, with its model.json."""
    import torch

    from brainseg.config import ModelConfig
    from brainseg.export import ProbabilityNet, _export_onnx
    from brainseg.model import build_model

    class Sharpened(torch.nn.Module):
        """Untrained logits are nearly constant; standardising them per image gives masks with both classes."""

        def __init__(self, model):
            super().__init__()
            self.model = model

        def forward(self, image):
            logits = self.model(image)
            mean = logits.mean(dim=(2, 3), keepdim=True)
            return 4.0 * (logits - mean) / (logits.std(dim=(2, 3), keepdim=True) + 1e-6)

    torch.manual_seed(0)
    net = ProbabilityNet(Sharpened(build_model(ModelConfig(encoder="resnet18", dropout=0.0)))).eval()
    out = tmp_path_factory.mktemp("model")
    _export_onnx(net, torch.rand(2, 1, MODEL_SIZE, MODEL_SIZE), out / "model.onnx", opset=18)
    spec = {"format_version": 3, "files": {"onnx": "model.onnx"},
            "postprocess": {"threshold": 0.5, "tta": False, "min_component_px": 0, "max_components": 0},
            "input": {"name": "image", "shape": ["batch", 1, MODEL_SIZE, MODEL_SIZE], "dtype": "float32"},
            "output": {"name": "probability", "shape": ["batch", 1, MODEL_SIZE, MODEL_SIZE]}}
    (out / "model.json").write_text(json.dumps(spec))
    return out / "model.onnx"
