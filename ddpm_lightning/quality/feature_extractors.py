"""The network that turns images into FID/KID features: Inception-v3 by default, or any module."""

from __future__ import annotations

import contextlib
import importlib.util
import os
from typing import Literal, get_args

import torch
from torch import Tensor, nn

from ddpm_lightning.errors import InvalidSettingError, UsageError

#: The Inception-v3 layers torchmetrics offers, by feature size.
InceptionFeature = Literal[64, 192, 768, 2048]
INCEPTION_FEATURES = get_args(InceptionFeature)


class FeatureExtractorUnavailableError(UsageError, RuntimeError):
    """The FID/KID feature extractor (by default Inception-v3) could not be built."""


def inception_weights_url() -> str:
    """Where torch-fidelity downloads the Inception-v3 weights, for error messages."""
    try:
        from torch_fidelity.feature_extractor_inceptionv3 import URL_INCEPTION_V3
    except ImportError:
        return "torch-fidelity's release page (URL_INCEPTION_V3)"
    return URL_INCEPTION_V3


def check_inception_feature(feature: int) -> None:
    """Raise unless ``feature`` is one of torchmetrics' Inception-v3 layers."""
    if feature not in INCEPTION_FEATURES:
        raise InvalidSettingError(f"feature must be one of {INCEPTION_FEATURES}, got {feature}.")


def build_feature_extractor(
    feature_extractor: nn.Module | None = None,
    feature: int = 2048,
    feature_extractor_weights_path: str | None = None,
) -> nn.Module:
    """The given module (frozen), or torchmetrics' Inception-v3 at ``feature`` (2048: FID).

    Raises FeatureExtractorUnavailableError when the Inception weights cannot be read.
    """
    if feature_extractor is not None:
        return feature_extractor.eval().requires_grad_(False)
    check_inception_feature(feature)
    if importlib.util.find_spec("torch_fidelity") is None:
        raise FeatureExtractorUnavailableError(
            "FID/KID with the default Inception-v3 needs torch-fidelity: "
            "pip install torch-fidelity (or pass your own feature_extractor)."
        )
    from torchmetrics.image.fid import NoTrainInceptionV3

    try:
        inception = NoTrainInceptionV3(
            name="inception-v3-compat",
            features_list=[str(feature)],
            feature_extractor_weights_path=feature_extractor_weights_path,
        )
    except Exception as error:  # URLError, HTTPError, timeouts, torch.load errors: all "no weights"
        message = _missing_weights_message(feature_extractor_weights_path, error)
        raise FeatureExtractorUnavailableError(message) from error
    inception.weights_path = feature_extractor_weights_path  # for feature_extractor_id
    return inception.eval().requires_grad_(False)


def _missing_weights_message(weights_path: str | None, error: Exception) -> str:
    url = inception_weights_url()
    checkpoints = os.path.join(torch.hub.get_dir(), "checkpoints")
    if weights_path is not None:
        return (
            f"Could not load the Inception-v3 weights for FID/KID from {weights_path!r} "
            f"({type(error).__name__}: {error}). feature_extractor_weights_path must be the "
            f"file torch-fidelity downloads from {url}."
        )
    return (
        f"Could not download the Inception-v3 weights for FID/KID ({type(error).__name__}: "
        f"{error}). They are fetched once from {url} into {checkpoints}. Without internet "
        "access, download that file on a machine that has it, then either copy it into "
        f"{checkpoints} or pass its path as feature_extractor_weights_path (in YAML: "
        "feature_extractor_weights_path: /path/to/" + url.rsplit("/", 1)[-1] + "). Or use "
        "another network: feature_extractor takes any torch.nn.Module that maps uint8 "
        "(N, 3, H, W) images to (N, d) features (give it a num_features attribute)."
    )


def feature_extractor_id(
    extractor: nn.Module, num_features: int, weights_path: str | None = None
) -> str:
    """What identifies the features in the cache key: class and size (and Inception's weights)."""
    kind = f"{type(extractor).__module__}.{type(extractor).__qualname__}/{num_features}"
    if hasattr(extractor, "features_list"):  # torch-fidelity's Inception: say which weights
        weights_path = weights_path or getattr(extractor, "weights_path", None)
        kind += "/" + os.path.basename(weights_path or inception_weights_url())
    return kind


def count_features(extractor: nn.Module, image_shape: tuple[int, ...], device: torch.device) -> int:
    """The feature size: ``num_features``, Inception's layer, or one probe forward pass."""
    num_features = getattr(extractor, "num_features", None)
    if isinstance(num_features, int | Tensor):
        return int(num_features)
    features_list = getattr(extractor, "features_list", None)
    if features_list and str(features_list[0]).isdigit():
        return int(features_list[0])
    probe = torch.zeros((2, 3, *image_shape[-2:]), dtype=torch.uint8, device=device)
    return extract_features(extractor, probe).shape[1]


@torch.no_grad()
def extract_features(extractor: nn.Module, images: Tensor) -> Tensor:
    """Float32 (N, d) features of uint8 (N, C, H, W) images; autocast off for FID's sake."""
    if images.dtype != torch.uint8 or images.dim() != 4:
        raise TypeError(
            f"Expected uint8 (N, C, H, W) images, got {images.dtype} of shape "
            f"{tuple(images.shape)}."
        )
    if images.shape[1] == 1:  # grayscale repeated to RGB
        images = images.repeat(1, 3, 1, 1)
    try:
        autocast_off = torch.autocast(images.device.type, enabled=False)
    except RuntimeError:  # a device type without autocast
        autocast_off = contextlib.nullcontext()
    with autocast_off:
        features = extractor(images)
    return features.reshape(images.shape[0], -1).float()
