"""diffusers pipelines for what this package trains beyond ``DDPMPipeline``."""

from ddpm_lightning.pipelines.class_conditional import ClassConditionalDDPMPipeline

__all__ = ["ClassConditionalDDPMPipeline"]
