"""Callbacks, one per file: what happens around training (EMA, grids, exports, pushes, FID)."""

from ddpm_lightning.callbacks.ema import EMA
from ddpm_lightning.callbacks.fid import FIDCallback
from ddpm_lightning.callbacks.interrupt_handler import InterruptHandler, TrainingInterrupted
from ddpm_lightning.callbacks.output_folder_lock import OutputFolderLock
from ddpm_lightning.callbacks.pipeline_export import PipelineExportCallback
from ddpm_lightning.callbacks.prediction_writer import PNGPredictionWriter
from ddpm_lightning.callbacks.push_to_hub import HubPushError, PushToHubCallback
from ddpm_lightning.callbacks.resume_checkpoint import ResumeCheckpoint
from ddpm_lightning.callbacks.sample_grid import SampleGridCallback
from ddpm_lightning.callbacks.speed_switches import SpeedSwitches
from ddpm_lightning.callbacks.throughput import ImageThroughputMonitor

__all__ = [
    "EMA",
    "FIDCallback",
    "HubPushError",
    "ImageThroughputMonitor",
    "InterruptHandler",
    "OutputFolderLock",
    "PNGPredictionWriter",
    "PipelineExportCallback",
    "PushToHubCallback",
    "ResumeCheckpoint",
    "SampleGridCallback",
    "SpeedSwitches",
    "TrainingInterrupted",
]
