"""The LightningModule and the UNet it trains."""

from ddpm_lightning.models.ddpm_module import DDPMModule

__all__ = ["DDPMModule"]
