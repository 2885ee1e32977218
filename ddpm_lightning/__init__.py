"""ddpm_lightning: the diffusers "train a diffusion model" tutorial as Lightning parts."""

from ddpm_lightning.data import ButterfliesDataModule, ImageDataModule
from ddpm_lightning.models import DDPMModule

__all__ = ["ButterfliesDataModule", "DDPMModule", "ImageDataModule"]
__version__ = "0.1.0"
