"""Stage export: models/model.onnx + models/model.ts + models/model.json, checked against PyTorch."""

from pathlib import Path

from brainseg.cli import run
from brainseg.config import load_params
from brainseg.data.dataset import ProcessedData
from brainseg.export import export
from brainseg.inference import read_postprocess

CHECK_SAMPLES = 8


def main() -> None:
    params = load_params()
    test_images, _ = ProcessedData(Path("data/processed"), Path("data/splits")).subset("test")
    post = read_postprocess(Path("models/postprocess.json"))  # chosen on validation by evaluate
    export(Path("models/model.pt"), Path("models"), params.export, post, test_images[:CHECK_SAMPLES])


if __name__ == "__main__":
    run(main)
