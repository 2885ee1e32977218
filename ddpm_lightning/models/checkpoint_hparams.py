"""Make a fine-tuned model's checkpoint stand alone, without the pipeline it started from."""

from __future__ import annotations

from typing import Any

from diffusers import UNet2DModel

from ddpm_lightning.formulations import Formulation


def self_contained_hyperparameters(
    hparams: dict[str, Any], unet: UNet2DModel, formulation: Formulation
) -> dict[str, Any]:
    """``hparams`` with the pretrained source replaced by the full UNet and formulation config.

    So the checkpoint loads where the source is gone. Arguments named like a UNet config entry
    take its value; the rest goes into ``unet_kwargs``.
    """
    if not hparams.get("pretrained_model_name_or_path"):
        return hparams
    standalone = {**hparams, "pretrained_model_name_or_path": None}
    named = {key: value for key, value in unet.config.items() if key in hparams}
    standalone.update(named)
    standalone["unet_kwargs"] = {
        k: v for k, v in unet.config.items() if k not in named and not k.startswith("_")
    }
    standalone["formulation"] = formulation.config()
    return standalone


def make_self_contained(
    checkpoint: dict[str, Any], unet: UNet2DModel, formulation: Formulation
) -> None:
    """Rewrite a fine-tuned model's checkpoint hyperparameters in place (see above)."""
    hyper_parameters = checkpoint.get("hyper_parameters")
    if hyper_parameters and hyper_parameters.get("pretrained_model_name_or_path"):
        checkpoint["pretrained_from"] = hyper_parameters["pretrained_model_name_or_path"]
        checkpoint["hyper_parameters"] = self_contained_hyperparameters(
            hyper_parameters, unet, formulation
        )
