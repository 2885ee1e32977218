"""Callbacks: what happens around training (EMA, sample grids, exports, Hub pushes, metrics)."""

from ddpm_lightning.callbacks.ema import EMA, averaged_weights
from ddpm_lightning.callbacks.fid import FIDCallback
from ddpm_lightning.callbacks.pipeline_export import PipelineExportCallback
from ddpm_lightning.callbacks.prediction_writer import PNGPredictionWriter
from ddpm_lightning.callbacks.push_to_hub import HubPushError, PushToHubCallback
from ddpm_lightning.callbacks.resume_checkpoint import AtomicCheckpointIO, ResumeCheckpoint
from ddpm_lightning.callbacks.sample_grid import SampleGridCallback
from ddpm_lightning.callbacks.training_outputs import ImageThroughputMonitor, TrainingOutputs
from ddpm_lightning.quality import FeatureExtractorUnavailableError

__all__ = [
    "AtomicCheckpointIO",
    "EMA",
    "FIDCallback",
    "FeatureExtractorUnavailableError",
    "HubPushError",
    "ImageThroughputMonitor",
    "PNGPredictionWriter",
    "PipelineExportCallback",
    "PushToHubCallback",
    "ResumeCheckpoint",
    "SampleGridCallback",
    "TrainingOutputs",
    "averaged_weights",
]
