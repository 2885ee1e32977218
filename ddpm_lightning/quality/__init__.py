"""Sample quality: scoring generated images with FID/KID against the training images."""

from ddpm_lightning.quality.evaluator import SampleQualityEvaluator
from ddpm_lightning.quality.feature_extractors import (
    INCEPTION_FEATURES,
    FeatureExtractorUnavailableError,
    InceptionFeature,
    build_feature_extractor,
    count_features,
    extract_features,
    feature_extractor_id,
    inception_weights_url,
)
from ddpm_lightning.quality.metrics import DEFAULT_KID_SUBSET_SIZE, SampleQualityMetrics
from ddpm_lightning.quality.real_images import RealImages, dataset_identity, real_image_batches
from ddpm_lightning.quality.sampler_comparison import evaluate_samplers, format_table
from ddpm_lightning.quality.statistics_cache import DEFAULT_CACHE_DIR, RealStatisticsCache
from ddpm_lightning.sampling.sharding import shard

__all__ = [
    "DEFAULT_CACHE_DIR",
    "DEFAULT_KID_SUBSET_SIZE",
    "INCEPTION_FEATURES",
    "FeatureExtractorUnavailableError",
    "InceptionFeature",
    "RealImages",
    "RealStatisticsCache",
    "SampleQualityEvaluator",
    "SampleQualityMetrics",
    "build_feature_extractor",
    "count_features",
    "dataset_identity",
    "evaluate_samplers",
    "extract_features",
    "feature_extractor_id",
    "format_table",
    "inception_weights_url",
    "real_image_batches",
    "shard",
]
