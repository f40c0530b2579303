"""Stage evaluate: the post-processing chosen on validation in models/postprocess.json, test metrics in
metrics/test.json (details and baselines in metrics/test_details.json), curves and overlays in plots/;
scores against the reference set in data/reference/ when one is configured."""

from pathlib import Path

import own_src  # noqa: F401 - this repository's src/ first: the code dvc.lock hashes is the code that runs
from brainseg.cli import run
from brainseg.config import load_params
from brainseg.evaluate import evaluate


def main() -> None:
    params = load_params()
    reference = Path("data/reference") if params.reference.source != "none" else None
    evaluate(params, Path("data/raw"), Path("data/processed"), Path("data/splits"), Path("models/model.pt"),
             Path("metrics/train"), Path("models/postprocess.json"), Path("metrics/test.json"),
             Path("metrics/test_details.json"), Path("plots"), reference)


if __name__ == "__main__":
    run(main)
