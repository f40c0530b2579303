"""Model factory: a segmentation-models-pytorch network behind per-image standardisation."""

from __future__ import annotations

import socket
from dataclasses import asdict
from pathlib import Path

import segmentation_models_pytorch as smp
import torch
from torch import nn

from brainseg.config import ModelConfig
from brainseg.errors import BrainsegError

IN_CHANNELS = 1  # MRI slices are grayscale; smp adapts an RGB encoder's first convolution
_HUB = ("huggingface.co", 443)


class WeightsError(BrainsegError, RuntimeError):
    """Encoder weights could not be obtained; the message says how to provide them."""


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


def _hub_reachable(timeout: float = 3.0) -> bool:
    try:
        socket.create_connection(_HUB, timeout=timeout).close()
        return True
    except OSError:
        return False


def _load_encoder_file(net: nn.Module, path: Path) -> None:
    if not path.is_file():
        raise WeightsError(f"model.encoder_weights: {path} does not exist")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        state = load_file(str(path))
    else:
        state = torch.load(path, map_location="cpu", weights_only=True)
    try:
        net.encoder.load_state_dict(state)
    except RuntimeError as err:
        raise WeightsError(f"{path}: not a state dict for this encoder: {err}") from None


def build_model(cfg: ModelConfig) -> SegmentationNet:
    weights = cfg.encoder_weights
    pretrained = weights is not None and not Path(weights).suffix
    if pretrained and not _hub_reachable():
        raise WeightsError(
            f"model.encoder_weights is {weights!r} but the weights hub cannot be reached from this machine. "
            "Either set model.encoder_weights: null to train from scratch, point it at a local encoder "
            "state dict (.pth or .safetensors), or download the weights once on a connected machine and "
            "copy the Hugging Face cache (~/.cache/huggingface/hub) here."
        )
    kwargs = {}
    if cfg.architecture in ("Unet", "UnetPlusPlus"):
        kwargs["decoder_channels"] = cfg.decoder_channels
    net = smp.create_model(cfg.architecture, encoder_name=cfg.encoder,
                           encoder_weights=weights if pretrained else None,
                           in_channels=IN_CHANNELS, classes=1, **kwargs)
    if weights is not None and not pretrained:
        _load_encoder_file(net, Path(weights))
    if cfg.dropout > 0:
        # Spatial dropout on the decoder's last features regularises the from-scratch default.
        net.segmentation_head = nn.Sequential(nn.Dropout2d(cfg.dropout), net.segmentation_head)
    return SegmentationNet(net)


def save_checkpoint(path: Path, model: nn.Module, cfg: ModelConfig, image_size: int, **extra) -> None:
    """Atomically save what evaluation and export need to rebuild the model."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    torch.save({"state_dict": model.state_dict(), "model": asdict(cfg), "image_size": image_size, **extra}, tmp)
    tmp.replace(path)


def load_checkpoint(path: Path) -> tuple[SegmentationNet, dict]:
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    cfg = ModelConfig(**{**ckpt["model"], "decoder_channels": tuple(ckpt["model"]["decoder_channels"]),
                         "encoder_weights": None})
    model = build_model(cfg)
    model.load_state_dict(ckpt["state_dict"])
    model.eval()
    return model, ckpt
