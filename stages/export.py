"""Stage export: models/model.onnx + models/model.ts + models/model.json, checked against PyTorch,
and models/MODEL_CARD.md from them and the evaluate and preprocess stages' metrics."""

import json
from pathlib import Path

import own_src  # noqa: F401 - this repository's src/ first: the code dvc.lock hashes is the code that runs
from brainseg.cli import run
from brainseg.config import load_params
from brainseg.data.dataset import ProcessedData
from brainseg.export import export
from brainseg.inference import read_postprocess
from brainseg.io import atomic_write_text
from brainseg.model_card import render_model_card

CHECK_SAMPLES = 8


def main() -> None:
    params = load_params()
    data = ProcessedData(Path("data/processed"), Path("data/splits"))
    post = read_postprocess(Path("models/postprocess.json"))  # chosen on validation by evaluate
    spec = export(Path("models/model.pt"), Path("models"), params.export, post, data.subset("test")[0][:CHECK_SAMPLES])
    metrics = {name: json.loads(Path(f"metrics/{name}.json").read_text()) for name in ("test", "data")}
    sizes = {subset: len(rows) for subset, rows in data.rows.items()}
    card = render_model_card(params, spec, metrics["test"], metrics["data"], sizes)
    atomic_write_text(Path("models/MODEL_CARD.md"), card)


if __name__ == "__main__":
    run(main)
