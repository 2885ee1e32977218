"""diffusers pipelines for what this package trains beyond ``DDPMPipeline``.

Importing this package also makes ``diffusers.DiffusionPipeline.from_pretrained(folder)``
find these classes by the name their ``model_index.json`` records.
"""

import diffusers

from ddpm_lightning.pipelines.class_conditional import ClassConditionalDDPMPipeline
from ddpm_lightning.pipelines.edm import EDMPipeline
from ddpm_lightning.pipelines.latent import LatentDiffusionPipeline

for _pipeline in (ClassConditionalDDPMPipeline, EDMPipeline, LatentDiffusionPipeline):
    setattr(diffusers, _pipeline.__name__, _pipeline)

__all__ = ["ClassConditionalDDPMPipeline", "EDMPipeline", "LatentDiffusionPipeline"]
