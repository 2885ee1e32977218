"""Whether a checkpoint fits the model a run built: refuse a resume that cannot or should not."""

from __future__ import annotations

from typing import Any

import torch

from ddpm_lightning.errors import InvalidSettingError
from ddpm_lightning.models.unet import module_unet_config

#: UNet settings whose change makes the weights another network's.
_ARCHITECTURE = (
    "in_channels",
    "out_channels",
    "block_out_channels",
    "layers_per_block",
    "norm_num_groups",
    "down_block_types",
    "up_block_types",
    "num_class_embeds",
)


def _normalised(value: Any) -> Any:
    return list(value) if isinstance(value, (tuple, list)) else value


def _row(key: str, saved: Any, current: Any) -> str:
    if key == "num_class_embeds":  # the UNet keeps one more class (the null class)
        key, saved, current = "num_classes", saved and saved - 1, current and current - 1
    return f"{key}: checkpoint {saved!r}, this run {current!r}"


def checkpoint_unet_config(hparams: dict[str, Any]) -> dict[str, Any]:
    """The UNet config a checkpoint's hyperparameters describe (self-contained ones too)."""
    names = """image_size channels block_out_channels layers_per_block norm_num_groups
        unet_kwargs num_classes""".split()
    defaults = {"channels": 3, "layers_per_block": 2, "norm_num_groups": 32}
    return module_unet_config(*(hparams.get(name, defaults.get(name)) for name in names))


def check_checkpoint_fits(
    checkpoint: dict[str, Any],
    path: str,
    unet: torch.nn.Module,
    hparams: dict[str, Any],
    allow_data_changes: bool,
    autoencoder_identity: str | None = None,
) -> None:
    """Raise, naming each differing setting with both values, unless the checkpoint fits.

    A different network (widths, levels, channels, classes) can never load. Another image size
    or other class names would train on silently: refused unless ``allow_data_changes``. A
    latent model (``autoencoder_identity``: this run's autoencoder's digest) must resume on
    the latents of the autoencoder it trained on.
    """
    saved = checkpoint.get("hyper_parameters") or {}
    if not saved:
        return
    check_same_autoencoder(checkpoint, path, autoencoder_identity)
    expected = checkpoint.get("unet_config") or checkpoint_unet_config(saved)
    config = dict(unet.config)
    rows = [
        _row(key, expected.get(key), config.get(key))
        for key in _ARCHITECTURE
        if _normalised(expected.get(key)) != _normalised(config.get(key))
    ]
    advice = (
        "Set the checkpoint's values (its run's config.yaml, in the logs folder, has them all) "
        "or start a new run without --ckpt_path."
    )
    if rows:
        raise InvalidSettingError(
            f"The checkpoint {path!r} is another network than this run's model: "
            + "; ".join(rows)
            + ". "
            + advice
        )
    data_rows = []
    saved_size = saved.get("image_size", expected.get("sample_size"))
    size = hparams.get("image_size", config.get("sample_size"))
    if _normalised(saved_size) != _normalised(size):
        data_rows.append(f"image_size: checkpoint {saved_size!r}, this run {size!r}")
    saved_names = {int(k): str(v) for k, v in (saved.get("id2label") or {}).items()}
    names = {int(k): str(v) for k, v in (hparams.get("id2label") or {}).items()}
    if saved_names and names and saved_names != names:
        data_rows.append(f"class names: checkpoint {saved_names}, this run {names}")
    if data_rows and not allow_data_changes:
        raise InvalidSettingError(
            f"The checkpoint {path!r} was trained on other data: "
            + "; ".join(data_rows)
            + ". "
            + advice
            + " To go on with the new data on purpose, pass --allow_data_changes true."
        )


def check_same_autoencoder(checkpoint: dict[str, Any], path: str, identity: str | None) -> None:
    """Raise if the checkpoint's latents came from another autoencoder (or from pixels)."""
    saved = checkpoint.get("autoencoder_identity")
    if saved == identity:
        return
    if saved is None or identity is None:
        kinds = ("pixels", "latents") if saved is None else ("latents", "pixels")
        raise InvalidSettingError(
            f"The checkpoint {path!r} was trained on {kinds[0]}, this run's model on "
            f"{kinds[1]}: set model autoencoder as the checkpoint's run did (its config.yaml in "
            "the logs folder has it), or start a new run without --ckpt_path."
        )
    source = checkpoint.get("autoencoder_from") or "its autoencoder"
    raise InvalidSettingError(
        f"The checkpoint {path!r} was trained on the latents of another autoencoder "
        f"({source!r}, digest {saved}) than this run's (digest {identity}): its UNet would "
        "denoise latents it never saw. Set model autoencoder to the checkpoint's, or start a "
        "new run without --ckpt_path."
    )
