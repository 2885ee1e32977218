"""Make a fine-tuned model's checkpoint stand alone, without the pipeline it started from."""

from __future__ import annotations

from typing import Any

from diffusers import DDPMScheduler, UNet2DModel


def self_contained_hyperparameters(
    hparams: dict[str, Any], unet: UNet2DModel, scheduler: DDPMScheduler
) -> dict[str, Any]:
    """``hparams`` with the pretrained source replaced by the full UNet and scheduler config.

    So the checkpoint loads where the source is gone. Arguments named like a config entry take
    its value; the rest goes into ``unet_kwargs`` and ``scheduler_kwargs``.
    """
    if not hparams.get("pretrained_model_name_or_path"):
        return hparams
    standalone = {**hparams, "pretrained_model_name_or_path": None}
    for kwargs_name, config in (
        ("unet_kwargs", unet.config),
        ("scheduler_kwargs", scheduler.config),
    ):
        named = {key: value for key, value in config.items() if key in hparams}
        standalone.update(named)
        standalone[kwargs_name] = {k: v for k, v in config.items() if k not in named}
    return standalone
