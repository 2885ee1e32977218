"""Make a fine-tuned model's checkpoint stand alone, without the pipeline it started from."""

from __future__ import annotations

from typing import Any

from diffusers import DDPMScheduler, UNet2DModel

#: DDPMModule arguments that mirror a ``DDPMScheduler`` config entry of the same name.
SCHEDULER_ARGUMENTS = (
    "num_train_timesteps",
    "beta_schedule",
    "beta_start",
    "beta_end",
    "prediction_type",
    "variance_type",
    "clip_sample",
)
#: DDPMModule arguments that mirror a ``UNet2DModel`` config entry of the same name.
UNET_ARGUMENTS = (
    "block_out_channels",
    "layers_per_block",
    "norm_num_groups",
    "down_block_types",
    "up_block_types",
)


def self_contained_hyperparameters(
    hparams: dict[str, Any], unet: UNet2DModel, scheduler: DDPMScheduler
) -> dict[str, Any]:
    """``hparams`` with the pretrained source replaced by the full UNet and scheduler config.

    A checkpoint then rebuilds the model with ``load_from_checkpoint`` (and the CLI's
    ``--ckpt_path``) even where the pretrained folder or Hub id is gone. Hyperparameters of a
    model built from scratch are returned as they are.
    """
    if not hparams.get("pretrained_model_name_or_path"):
        return hparams
    standalone = {**hparams, "pretrained_model_name_or_path": None}
    standalone["unet_kwargs"] = dict(unet.config)
    standalone["scheduler_kwargs"] = dict(scheduler.config)
    for key in SCHEDULER_ARGUMENTS:
        standalone[key] = standalone["scheduler_kwargs"].pop(key)
    for key in UNET_ARGUMENTS:
        standalone[key] = unet.config[key]
    return standalone
