"""The training-formulation seam: what the network learns, at which noise, sampled how."""

from __future__ import annotations

import importlib
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from diffusers.schedulers.scheduling_utils import SchedulerMixin

from ddpm_lightning.errors import InvalidSettingError
from ddpm_lightning.sampling.samplers import SamplerFamily


@dataclass
class TrainingExample:
    """One batch as the network trains on it.

    Attributes:
        network_input: what the UNet gets as its sample.
        noise_condition: what the UNet gets as its timestep (a step index, or c_noise).
        target: what the UNet's output is regressed on.
        weight: each sample's loss weight (None: all 1).
    """

    network_input: torch.Tensor
    noise_condition: torch.Tensor
    target: torch.Tensor
    weight: torch.Tensor | None = None


class Formulation(ABC):
    """A diffusion formulation: noise levels and targets for training, and its samplers.

    The LightningModule asks it for a :class:`TrainingExample` per batch and for the
    :class:`~ddpm_lightning.sampling.SamplerFamily` that samples its models; a new formulation
    plugs in here without touching ``training_step`` or the image generator.
    """

    #: The training noise schedule (a diffusers scheduler): exported with the pipeline.
    scheduler: SchedulerMixin

    @abstractmethod
    def sample_noise(
        self, clean: torch.Tensor, generator: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Gaussian noise like ``clean`` and one noise level per sample, from ``generator``."""

    @abstractmethod
    def training_example(
        self, clean: torch.Tensor, noise: torch.Tensor, noise_levels: torch.Tensor
    ) -> TrainingExample:
        """The network's input, conditioning, target and weights for these draws."""

    @abstractmethod
    def sampler_family(self) -> SamplerFamily:
        """The samplers that draw from a model trained this way."""

    @abstractmethod
    def pipeline(self, unet: Any, classes: Any) -> Any:
        """The diffusers pipeline that samples ``unet`` (with ``classes``) the way it trained."""

    @abstractmethod
    def export_scheduler(self) -> SchedulerMixin:
        """A fresh copy of the scheduler an exported pipeline samples with."""

    @abstractmethod
    def init_args(self) -> dict[str, Any]:
        """The constructor arguments that rebuild this formulation (stored in checkpoints)."""

    def loss(self, prediction: torch.Tensor, example: TrainingExample) -> torch.Tensor:
        """Mean squared error on the target, each sample weighted when the example says so."""
        target = example.target.float()
        if example.weight is None:
            return F.mse_loss(prediction.float(), target)
        per_sample = F.mse_loss(prediction.float(), target, reduction="none")
        return (per_sample.mean(dim=tuple(range(1, per_sample.dim()))) * example.weight).mean()

    def config(self) -> dict[str, Any]:
        """``{"class_path": ..., "init_args": ...}``: what checkpoints and the CLI store."""
        kind = type(self)
        return {
            "class_path": f"{kind.__module__}.{kind.__qualname__}",
            "init_args": self.init_args(),
        }


def formulation_from_config(config: Formulation | dict[str, Any] | None) -> Formulation:
    """A formulation from itself, a ``{"class_path", "init_args"}`` dict, or None (DDPM)."""
    if isinstance(config, Formulation):
        return config
    if config is None:
        from ddpm_lightning.formulations.ddpm import DDPMFormulation

        return DDPMFormulation()
    path = str(config.get("class_path", ""))
    module_name, _, class_name = path.rpartition(".")
    try:
        kind = getattr(importlib.import_module(module_name), class_name)
    except (ImportError, AttributeError, ValueError) as error:
        raise InvalidSettingError(
            f"Unknown formulation class_path {path!r}: give an importable Formulation subclass, "
            "such as ddpm_lightning.formulations.DDPMFormulation."
        ) from error
    if not (isinstance(kind, type) and issubclass(kind, Formulation)):
        raise InvalidSettingError(f"{path!r} is not a Formulation.")
    return kind(**dict(config.get("init_args") or {}))
