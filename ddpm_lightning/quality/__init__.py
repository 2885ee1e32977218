"""Sample quality: scoring generated images with FID/KID against the training images."""

from ddpm_lightning.quality.evaluator import DEFAULT_CACHE_DIR, SampleQualityEvaluator
from ddpm_lightning.quality.feature_extractors import (
    FeatureExtractorUnavailableError,
    InceptionFeature,
    build_feature_extractor,
    feature_extractor_id,
)
from ddpm_lightning.quality.real_images import dataset_identity, real_image_batches
from ddpm_lightning.quality.sampler_comparison import evaluate_samplers, format_table
from ddpm_lightning.quality.settings import FIDSettings

__all__ = [
    "DEFAULT_CACHE_DIR",
    "FIDSettings",
    "FeatureExtractorUnavailableError",
    "InceptionFeature",
    "SampleQualityEvaluator",
    "build_feature_extractor",
    "dataset_identity",
    "evaluate_samplers",
    "feature_extractor_id",
    "format_table",
    "real_image_batches",
]
