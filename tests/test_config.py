from pathlib import Path

import pytest

from brainseg.config import ConfigError, Params, load_params, parse_params

ROOT = Path(__file__).resolve().parents[1]


def test_committed_params_load_and_equal_the_code_defaults():
    # A key left out of a profile or of params.yaml means the same in code as in the file.
    assert load_params(ROOT / "params.yaml") == Params()


def test_defaults_when_empty():
    assert parse_params({}) == Params()


def test_scientific_notation_string_from_dvc_exp_run():
    # `dvc exp run -S train.lr=1e-4` writes 1e-4, which YAML 1.1 loaders read as a string.
    assert parse_params({"train": {"lr": "1e-4"}}).train.lr == pytest.approx(1e-4)


@pytest.mark.parametrize("raw,key", [
    ({"train": {"lr": "fast"}}, "train.lr"),
    ({"train": {"lr": -1}}, "train.lr"),
    ({"train": {"epochs": 2.5}}, "train.epochs"),
    ({"train": {"lrate": 0.1}}, "train.lrate"),
    ({"data": {"source": "ftp"}}, "data.source"),
    ({"data": {"source": "local"}}, "data.local_path"),
    ({"preprocess": {"image_size": 100}}, "preprocess.image_size"),
    ({"model": {"architecture": "SegNet"}}, "model.architecture"),
    ({"data": {"phantom": {"difficulty": 2}}}, "data.phantom.difficulty"),
    ({"train": {"augment": {"hflip": 1.5}}}, "train.augment.hflip"),
    ({"split": {"train": 0.9}}, "split.train/val/test"),
    ({"train": "fast"}, "train"),
    ({"train": {"optimizer": "lbfgs"}}, "train.optimizer"),
    ({"train": {"scheduler": "step"}}, "train.scheduler"),
    ({"train": {"amp": "fp8"}}, "train.amp"),
    ({"train": {"resume": "always"}}, "train.resume"),
    ({"train": {"devices": 3, "batch_size": 16}}, "train.batch_size"),
    ({"train": {"devices": 0}}, "train.devices"),
    ({"train": {"dice_weight": 0, "bce_weight": 0}}, "train.dice_weight/bce_weight/focal_weight"),
    ({"train": {"grad_clip": -1}}, "train.grad_clip"),
    ({"train": {"labels": "pseudo"}}, "train.labels"),  # without preprocess.pseudo_masks
    ({"preprocess": {"pseudo_masks": "sam"}}, "preprocess.pseudo_masks"),
    ({"preprocess": {"pseudo_mask_size": 8}}, "preprocess.pseudo_mask_size"),
    ({"train": {"ema_decay": 1.0}}, "train.ema_decay"),
    ({"train": {"channels_last": "yes"}}, "train.channels_last"),
    ({"train": {"augment": {"elastic": 2}}}, "train.augment.elastic"),
    ({"model": {"encoder_weights": "/home/me/resnet18.pth"}}, "model.encoder_weights"),
    ({"model": {"encoder_weights": "weights/../secret.pth"}}, "model.encoder_weights"),
    ({"evaluate": {"threshold": 1.5}}, "evaluate.threshold"),
    ({"export": {"opset": 11}}, "export.opset"),
    ({"data": {"source": "kaggle", "kaggle_dataset": "owner/slug/latest"}}, "data.kaggle_dataset"),
    ({"data": {"source": "kaggle", "kaggle_dataset": "no-slash"}}, "data.kaggle_dataset"),
    ({"split": {"strategy": "file"}}, "split.file"),
    ({"split": {"strategy": "file", "file": "configs/splits/../../etc/x.csv"}}, "split.file"),
    ({"split": {"strategy": "file", "file": "/data/split.csv"}}, "split.file"),
    ({"split": {"unlisted": "ignore"}}, "split.unlisted"),
    ({"reference": {"source": "figshare"}}, "reference.source"),
    ({"reference": {"source": "local"}}, "reference.local_path"),
    ({"reference": {"source": "kaggle"}}, "reference.kaggle_dataset"),
    ({"reference": {"mapping": "configs/splits/figshare-kaggle.csv"}}, "reference.mapping"),
    ({"reference": {"mapping": "configs/references/../../x.csv"}}, "reference.mapping"),
    ({"reference": {"outlines": "x"}}, "reference.outlines"),
    ({"seed": -1}, "seed"),
    ({"seed": 2**32}, "seed"),
    ({"data": {"phantom": {"image_size": 100_000}}}, "data.phantom.image_size"),
    ({"model": {"encoder": "resnet81"}}, "model.encoder"),
    ({"export": {"opset": 99}}, "export.opset"),
    ({"train": {"patch_size": 100}}, "train.patch_size"),
    ({"train": {"patch_size": 256}}, "train.patch_size"),  # beyond preprocess.image_size (128)
    ({"train": {"foreground_patches": 1.5}}, "train.foreground_patches"),
    ({"data": {"phantom": {"tumor_free_fraction": 0.6, "two_tumor_fraction": 0.6}}},
     "data.phantom.tumor_free_fraction/two_tumor_fraction"),
    ({"data": {"phantom": {"valid": 0}}}, "data.phantom.valid"),
    ({"evaluate": {"min_component_px": [4, "x"]}}, "evaluate.min_component_px"),
    ({"evaluate": {"min_component_px": [-4]}}, "evaluate.min_component_px"),
    ({"evaluate": {"max_components": []}}, "evaluate.max_components"),
    ({"evaluate": {"max_components": [0, -1]}}, "evaluate.max_components"),
    ({"data": {"categories": "tumor"}}, "data.categories"),
    ({"model": {"encoder_weights": 3}}, "model.encoder_weights"),
])
def test_bad_values_name_the_key(raw, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        parse_params(raw)


def test_encoder_weights_hub_names_and_local_files():
    assert parse_params({"model": {"encoder_weights": "imagenet"}}).model.encoder_weights == "imagenet"
    assert parse_params({"model": {"encoder_weights": "weights/r18.safetensors"}}).model.encoder_weights \
        == "weights/r18.safetensors"


def test_kaggle_dataset_may_name_a_version():
    # The same forms the Kaggle source accepts: a pinned version makes a recorded run repeatable.
    for name in ("owner/slug", "owner/slug/3"):
        assert parse_params({"data": {"source": "kaggle", "kaggle_dataset": name}}).data.kaggle_dataset == name


def test_encoder_list_is_the_installed_packages():
    from segmentation_models_pytorch.encoders import encoders

    from brainseg.config import SMP_ENCODERS

    assert SMP_ENCODERS == set(encoders)
    assert parse_params({"model": {"encoder": "tu-resnet10t"}}).model.encoder == "tu-resnet10t"


@pytest.mark.parametrize("params, message", [
    ("model:\n  encoder: resnet81\n", "model.encoder 'resnet81' is not a segmentation-models-pytorch encoder; "
                                      "did you mean resnet18"),
    ("seed: -3\n", "seed must lie in [0, 2**32)"),
    ("export:\n  opset: 99\n", "export.opset must lie in [17, "),
    ("data:\n  phantom:\n    image_size: 1000000\n", "data.phantom.image_size must lie in [64, 2048]"),
])
def test_first_stage_refuses_bad_params_before_any_work(tmp_path, params, message):
    import subprocess
    import sys

    (tmp_path / "params.yaml").write_text(params)
    result = subprocess.run([sys.executable, str(ROOT / "stages/download.py")], cwd=tmp_path,
                            capture_output=True, text=True)
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    assert message in result.stderr, result.stderr
    assert not (tmp_path / "data").exists()


def test_committed_params_are_valid():
    params = load_params(ROOT / "params.yaml")
    assert params.train.devices == 1 and params.train.resume == "auto"


def test_load_params_names_file(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text("train:\n  epochs: zero\n")
    with pytest.raises(ConfigError, match=r"params\.yaml: train\.epochs"):
        load_params(path)


def test_stage_reports_bad_params_without_traceback(tmp_path):
    import subprocess
    import sys

    (tmp_path / "params.yaml").write_text("train:\n  lr: fast\n")
    result = subprocess.run([sys.executable, str(ROOT / "stages/split.py")], cwd=tmp_path,
                            capture_output=True, text=True)
    assert result.returncode == 2
    assert "params.yaml: train.lr must be a number" in result.stderr
    assert "Traceback" not in result.stderr
