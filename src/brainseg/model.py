"""The network: built from params (a segmentation-models-pytorch model behind per-image standardisation),
seeded, saved, loaded, and run on uint8 slices."""

from __future__ import annotations

import random
import socket
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path

import numpy as np
import segmentation_models_pytorch as smp
import torch
from torch import nn

from brainseg.config import ModelConfig, is_local_weights
from brainseg.errors import BrainsegError
from brainseg.io import atomic_output

# MRI slices are grayscale. Pretrained RGB encoders keep their weights except the first convolution,
# whose three input filters are summed into one (smp does this for hub weights, we for local files).
IN_CHANNELS = 1
_HUB = ("huggingface.co", 443)


class WeightsError(BrainsegError, RuntimeError):
    """The encoder or its weights could not be set up; the message says how to fix it."""


class SegmentationNet(nn.Module):
    """Takes N x 1 x H x W intensities in [0, 1], returns tumor logits of the same size.

    Each slice is standardised to zero mean and unit variance inside the model: MRI intensities
    have no absolute scale, and keeping the step here means exported models carry it too.
    """

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean = x.mean(dim=(2, 3), keepdim=True)
        std = (x - mean).square().mean(dim=(2, 3), keepdim=True).sqrt().clamp_min(1e-3)
        return self.net((x - mean) / std)


def to_model_input(images: torch.Tensor) -> torch.Tensor:
    """uint8 N x 1 x H x W -> float intensities in [0, 1], the model's input."""
    return images.float().div_(255.0)


def model_batches(images: np.ndarray, device: torch.device, batch_size: int):
    """(rows, model input on `device`) for consecutive batches of uint8 slices N x H x W."""
    for start in range(0, len(images), batch_size):
        rows = slice(start, start + batch_size)
        yield rows, to_model_input(torch.from_numpy(np.asarray(images[rows]))[:, None].to(device))


@torch.no_grad()
def predict_probs(model: nn.Module, images: np.ndarray, device: torch.device, batch_size: int = 32) -> np.ndarray:
    """Tumor probabilities (float32, N x H x W) for uint8 images N x H x W."""
    model.eval()
    out = np.empty(images.shape, dtype=np.float32)
    for rows, x in model_batches(images, device, batch_size):
        out[rows] = torch.sigmoid(model(x))[:, 0].cpu().numpy()
    return out


def initial_model(cfg: ModelConfig, seed: int) -> SegmentationNet:
    """The network training starts from, its weights a function of `seed` (Python, NumPy and torch
    are seeded): evaluate's untrained baseline is this same network."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    return build_model(cfg)


def _hub_reachable(timeout: float = 3.0) -> bool:
    try:
        socket.create_connection(_HUB, timeout=timeout).close()
        return True
    except OSError:
        return False


def _adapt_input_channels(state: dict, expected: dict) -> dict:
    """Sum RGB filters into one grayscale filter where the file has 3 input channels and we have 1.

    For a gray slice repeated into R, G and B, the summed filter gives the same response, which is
    also what segmentation-models-pytorch does to hub weights when in_channels is 1.
    """
    adapted = dict(state)
    for key, tensor in state.items():
        want = expected.get(key)
        if (want is not None and tensor.ndim == 4 and want.ndim == 4 and tensor.shape[1] == 3
                and want.shape[1] == IN_CHANNELS and tensor.shape[0] == want.shape[0]):
            adapted[key] = tensor.sum(dim=1, keepdim=True)
    return adapted


@contextmanager
def _hub_offline(enabled: bool):
    """Put huggingface_hub in offline mode (cache only) for the duration, when `enabled`."""
    from huggingface_hub import constants

    saved = constants.HF_HUB_OFFLINE
    constants.HF_HUB_OFFLINE = saved or enabled
    try:
        yield
    finally:
        constants.HF_HUB_OFFLINE = saved


def _load_encoder_file(net: nn.Module, path: Path) -> None:
    if not path.is_file():
        raise WeightsError(f"model.encoder_weights: {path} does not exist; put the encoder's state dict there "
                           "(.pth or .safetensors) or set model.encoder_weights: null")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        state = load_file(str(path))
    else:
        state = torch.load(path, map_location="cpu", weights_only=True)
    expected = net.encoder.state_dict()
    # Classification checkpoints carry a head the encoder does not have.
    state = {k: v for k, v in state.items() if not k.startswith("fc.") or k in expected}
    try:
        net.encoder.load_state_dict(_adapt_input_channels(state, expected))
    except RuntimeError as err:
        raise WeightsError(f"{path}: not a state dict for encoder {type(net.encoder).__name__}: {err}") from None


def build_model(cfg: ModelConfig) -> SegmentationNet:
    weights = cfg.encoder_weights
    hub = weights is not None and not is_local_weights(weights)
    kwargs = {}
    if cfg.architecture in ("Unet", "UnetPlusPlus"):
        kwargs["decoder_channels"] = cfg.decoder_channels
    # Unreachable hub: only the local Hugging Face cache may serve the weights, and a miss fails at
    # once instead of waiting on network timeouts.
    offline = hub and not _hub_reachable()
    try:
        with _hub_offline(offline):
            net = smp.create_model(cfg.architecture, encoder_name=cfg.encoder,
                                   encoder_weights=weights if hub else None,
                                   in_channels=IN_CHANNELS, classes=1, **kwargs)
    except KeyError as err:
        raise WeightsError(f"model.encoder / model.encoder_weights: {err.args[0]}"[:2000]) from None
    except RuntimeError as err:  # timm's answer to a tu-<name> it does not know
        if not str(err).startswith("Unknown model"):
            raise
        raise WeightsError(f"model.encoder {cfg.encoder!r}: timm has no such model ({err}); "
                           "`python -c 'import timm; print(timm.list_models())'` lists them") from None
    except Exception as err:
        if not offline:
            raise
        raise WeightsError(
            f"model.encoder_weights is {weights!r} but the weights hub cannot be reached from this machine "
            f"and the Hugging Face cache does not hold them ({type(err).__name__}). Either set "
            "model.encoder_weights: null to train from scratch, point it at a local encoder state dict "
            "under weights/ (.pth or .safetensors), or pre-fill the cache (README: ImageNet weights): build "
            "the model once on a connected machine and copy its ~/.cache/huggingface/hub here."
        ) from None
    if offline:
        print(f"model: weights hub unreachable; loaded {cfg.encoder} {weights} weights from the Hugging Face cache")
    if weights is not None and not hub:
        _load_encoder_file(net, Path(weights))
    if cfg.dropout > 0:
        # Spatial dropout on the decoder's last features regularises the from-scratch default.
        net.segmentation_head = nn.Sequential(nn.Dropout2d(cfg.dropout), net.segmentation_head)
    return SegmentationNet(net)


def save_checkpoint(path: Path, state_dict: dict, cfg: ModelConfig, image_size: int, **extra) -> None:
    """Atomically save what evaluation and export need to rebuild the model."""
    with atomic_output(path, clear_abandoned=True) as tmp:
        torch.save({"state_dict": state_dict, "model": asdict(cfg), "image_size": image_size, **extra}, tmp)


def load_checkpoint(path: Path) -> tuple[SegmentationNet, dict]:
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    cfg = ModelConfig(**{**ckpt["model"], "decoder_channels": tuple(ckpt["model"]["decoder_channels"]),
                         "encoder_weights": None})
    model = build_model(cfg)
    model.load_state_dict(ckpt["state_dict"])
    model.eval()
    return model, ckpt
