"""Training formulations: what the network learns at which noise, and which samplers fit it."""

from ddpm_lightning.formulations.base import Formulation, TrainingExample, formulation_from_config
from ddpm_lightning.formulations.ddpm import DDPMFormulation
from ddpm_lightning.formulations.edm import EDMFormulation

__all__ = [
    "DDPMFormulation",
    "EDMFormulation",
    "Formulation",
    "TrainingExample",
    "formulation_from_config",
]
