"""The README.md pushed with a model: what was trained, on what, how, and how to load it."""

from __future__ import annotations

from typing import Any

from lightning.pytorch import LightningModule, Trainer

#: Module hyperparameters and datamodule attributes worth a line in the card.
_MODULE_SETTINGS = """image_size channels block_out_channels layers_per_block num_train_timesteps
    beta_schedule prediction_type learning_rate lr_scheduler lr_warmup_steps min_snr_gamma
    pretrained_model_name_or_path""".split()
_DATA_SETTINGS = "dataset_name data_dir split train_batch_size random_flip center_crop".split()


def training_settings(trainer: Trainer, pl_module: LightningModule) -> dict[str, Any]:
    """The settings a reader needs to reproduce the run, from the module, data and Trainer."""
    hparams = pl_module.hparams
    settings = {key: hparams.get(key) for key in _MODULE_SETTINGS if key in hparams}
    datamodule = getattr(trainer, "datamodule", None)
    for key in _DATA_SETTINGS:
        if hasattr(datamodule, key):
            settings[key] = getattr(datamodule, key)
    settings["devices x nodes"] = f"{trainer.num_devices} x {trainer.num_nodes}"
    settings["accumulate_grad_batches"] = trainer.accumulate_grad_batches
    settings["precision"] = trainer.precision
    settings["ema"] = any(
        type(cb).__name__ in ("EMA", "EMAWeightAveraging") for cb in trainer.callbacks
    )
    return settings


def model_card(
    repo_id: str, settings: dict[str, Any], epoch: int, global_step: int, grid_name: str | None
) -> str:
    """A Hub model card (README.md) in the layout diffusers' own training scripts use."""
    dataset = settings.get("dataset_name", "unknown")
    if dataset == "imagefolder":
        dataset = f"a local image folder ({settings.get('data_dir')})"
    rows = "\n".join(f"| {key} | {value} |" for key, value in settings.items())
    grid = f"![Samples after epoch {epoch}]({grid_name})\n" if grid_name else ""
    return f"""---
library_name: diffusers
tags:
- pytorch
- diffusers
- unconditional-image-generation
- ddpm_lightning
---

# {repo_id}

An unconditional image generation model (a `UNet2DModel` trained as a DDPM) on {dataset},
trained with [ddpm_lightning](https://pypi.org/project/ddpm-lightning/) following the diffusers
"train a diffusion model" tutorial. This upload is after epoch {epoch} (step {global_step}).

## Samples

{grid}
## Usage

```python
from diffusers import DDPMPipeline

pipeline = DDPMPipeline.from_pretrained("{repo_id}")
image = pipeline().images[0]
image
```

## Training settings

| setting | value |
| --- | --- |
{rows}
"""
