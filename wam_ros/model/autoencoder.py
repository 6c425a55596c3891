"""Image <-> latent: a small convolutional autoencoder trained on the dataset's own frames.

The transformer never sees pixels: every frame is encoded once into a (latent_channels,
H/d, W/d) latent (``d`` = downsampling) and cached, so training steps cost only the
transformer. Images are uint8 (..., H, W, 3); the networks work on float in [-1, 1].

Optionally a pretrained ``diffusers.AutoencoderKL`` from a local directory replaces the conv
autoencoder (``autoencoder.kind: diffusers``); ``diffusers`` is then needed at run time.
"""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from wam_ros.model.config import AutoencoderConfig


def images_to_tensor(images: torch.Tensor) -> torch.Tensor:
    """uint8 (N, H, W, 3) -> float (N, 3, H, W) in [-1, 1]."""
    return images.permute(0, 3, 1, 2).float().div(127.5).sub(1.0)


def tensor_to_images(pixels: torch.Tensor) -> torch.Tensor:
    """float (N, 3, H, W) in [-1, 1] -> uint8 (N, H, W, 3), rounded and clipped."""
    return pixels.add(1.0).mul(127.5).round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1)


class ResidualBlock(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv2(F.silu(self.conv1(F.silu(x))))


class ConvAutoencoder(nn.Module):
    """Strided-conv encoder and transposed-conv decoder, one residual block per stage.

    Stage 0 downsamples by ``stem_stride`` (a patchifying conv), each later stage by 2; the
    latent is a 1x1 projection of the last stage. Cheap on a CPU: a 96x96 frame costs about
    30 MFLOP to encode.
    """

    def __init__(self, config: AutoencoderConfig) -> None:
        super().__init__()
        self.config = config
        channels = config.channels
        strides = [config.stem_stride] + [2] * (len(channels) - 1)
        encoder: list[nn.Module] = []
        previous = 3
        for width, stride in zip(channels, strides):
            encoder += [nn.Conv2d(previous, width, stride, stride=stride), ResidualBlock(width)]
            previous = width
        encoder += [nn.SiLU(), nn.Conv2d(previous, config.latent_channels, 1)]
        self.encoder = nn.Sequential(*encoder)
        decoder: list[nn.Module] = [nn.Conv2d(config.latent_channels, channels[-1], 1), ResidualBlock(channels[-1])]
        for index in range(len(channels) - 1, 0, -1):
            decoder += [nn.SiLU(), nn.ConvTranspose2d(channels[index], channels[index - 1], 2, stride=2), ResidualBlock(channels[index - 1])]
        head = max(channels[0] // 2, 8)
        decoder += [
            nn.SiLU(),
            nn.ConvTranspose2d(channels[0], head, config.stem_stride, stride=config.stem_stride),
            nn.SiLU(),
            nn.Conv2d(head, 3, 3, padding=1),
        ]
        self.decoder = nn.Sequential(*decoder)

    def encode(self, pixels: torch.Tensor) -> torch.Tensor:
        """(N, 3, H, W) in [-1, 1] -> (N, C, H/d, W/d)."""
        return self.encoder(pixels)

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """(N, C, h, w) -> (N, 3, h*d, w*d), roughly in [-1, 1]."""
        return self.decoder(latents)

    def reconstruction_loss(self, pixels: torch.Tensor) -> torch.Tensor:
        """Mean squared error plus mean absolute error (sharper small objects than MSE alone),
        per pixel weighted by :func:`foreground_weights` when ``foreground_weight`` > 0."""
        error = self.decode(self.encode(pixels)) - pixels
        per_pixel = (error.pow(2) + error.abs()).mean(1)  # (N, H, W)
        if self.config.foreground_weight > 0:
            weights = foreground_weights(pixels, self.config.foreground_weight)
            return (per_pixel * weights).sum() / weights.sum()
        return per_pixel.mean()


def foreground_weights(pixels: torch.Tensor, strength: float) -> torch.Tensor:
    """(N, 3, H, W) in [-1, 1] -> (N, H, W) weights 1 + strength * (mean absolute deviation of
    each pixel from its frame's median colour). The median is the background (the table): the
    cubes cover a few pixels of a 96x96 frame, and an unweighted loss learned to paint them in
    the table's colour (measured: red and green cubes came back brown and grey, so the policy
    could not tell which cube the instruction meant)."""
    median = pixels.flatten(2).median(dim=2).values[:, :, None, None]
    return 1.0 + strength * (pixels - median).abs().mean(1)


class DiffusersAutoencoder(nn.Module):
    """A pretrained ``diffusers.AutoencoderKL`` read from a local directory (never downloaded)."""

    def __init__(self, config: AutoencoderConfig) -> None:
        super().__init__()
        try:
            from diffusers import AutoencoderKL
        except ImportError:
            raise RuntimeError("autoencoder.kind 'diffusers' needs the diffusers package (pip install diffusers); it is not a wam_ros dependency") from None
        try:
            self.vae = AutoencoderKL.from_pretrained(config.pretrained_path, local_files_only=True)
        except (OSError, ValueError) as error:
            raise RuntimeError(f"{config.pretrained_path}: cannot load a diffusers AutoencoderKL ({error})") from None
        if self.vae.config.latent_channels != config.latent_channels:
            raise RuntimeError(
                f"{config.pretrained_path}: the VAE has {self.vae.config.latent_channels} latent channels, "
                f"the model config says {config.latent_channels}"
            )
        self.vae.requires_grad_(False)
        self.config = config

    def encode(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.vae.encode(pixels).latent_dist.mean

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        return self.vae.decode(latents).sample


def build_autoencoder(config: AutoencoderConfig) -> nn.Module:
    if config.kind == "diffusers":
        return DiffusersAutoencoder(config)
    return ConvAutoencoder(config)
