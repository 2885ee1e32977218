"""The tutorial's UNet2DModel, and the checks that catch a UNet/data mismatch early."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from diffusers import DDPMScheduler, EDMEulerScheduler, UNet2DModel

from ddpm_lightning.errors import InvalidSettingError, SourceUnavailableError
from ddpm_lightning.formulations import DDPMFormulation, EDMFormulation, Formulation
from ddpm_lightning.utils.checks import check_image_size_multiple

#: The tutorial's 128 px UNet (113,673,219 parameters).
TUTORIAL_BLOCK_OUT_CHANNELS = (128, 128, 256, 256, 512, 512)


def default_block_types(levels: int) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The tutorial's block types (exact for 6 levels) for any depth: attention one level up."""
    down = ["DownBlock2D"] * levels
    up = ["UpBlock2D"] * levels
    if levels >= 2:
        down[levels - 2] = "AttnDownBlock2D"
        up[1] = "AttnUpBlock2D"
    return tuple(down), tuple(up)


def unet_config(
    image_size: int,
    channels: int,
    block_out_channels: Sequence[int],
    layers_per_block: int,
    extra: dict[str, Any] | None,
) -> dict[str, Any]:
    """The full, checked ``UNet2DModel`` config: the data's size and channels, blocks, extras.

    Block types not given in ``extra`` follow the tutorial's pattern for any depth.
    """
    default_down, default_up = default_block_types(len(block_out_channels))
    config: dict[str, Any] = {
        "sample_size": image_size,
        "in_channels": channels,
        "out_channels": channels,
        "layers_per_block": layers_per_block,
        "block_out_channels": tuple(block_out_channels),
        "down_block_types": default_down,
        "up_block_types": default_up,
    }
    config.update(extra or {})
    levels = len(config["block_out_channels"])
    if len(config["down_block_types"]) != levels or len(config["up_block_types"]) != levels:
        raise InvalidSettingError(
            f"block_out_channels has {levels} levels but down_block_types has "
            f"{len(config['down_block_types'])} and up_block_types {len(config['up_block_types'])}"
            ": give one block type per level (or leave both unset for the tutorial's pattern)."
        )
    check_image_size(image_size, config["block_out_channels"])
    return config


def check_image_size(image_size: int, block_out_channels: Sequence[int]) -> None:
    """Raise if the UNet's down-sampling cannot divide ``image_size`` evenly."""
    levels = len(block_out_channels)
    check_image_size_multiple(
        image_size,
        2 ** (levels - 1),
        f"this UNet: its {levels} levels halve the image {levels - 1} times",
        ", or a UNet with fewer levels (shorter block_out_channels)",
    )


def check_unet_matches_data(unet: UNet2DModel, image_size: int, channels: int, source: str) -> None:
    """Raise if a loaded UNet was trained for another image size or channel count."""
    config = unet.config
    size = config.sample_size
    if (size if isinstance(size, int) else tuple(size)) != image_size or (
        config.in_channels != channels or config.out_channels != channels
    ):
        raise InvalidSettingError(
            f"The pretrained UNet from {source!r} takes {size} px images with "
            f"{config.in_channels} channels, but the data is {image_size} px with {channels} "
            f"channels. Set image_size: {size} and channels: {config.in_channels} (data and "
            "model), or start from a pipeline trained at your size."
        )


def module_unet_config(
    image_size: int,
    channels: int,
    block_out_channels: Sequence[int],
    layers_per_block: int,
    norm_num_groups: int,
    unet_kwargs: dict[str, Any] | None,
    num_classes: int | None,
) -> dict[str, Any]:
    """The UNet config that ``DDPMModule`` arguments (or a checkpoint's) describe."""
    # num_class_embeds only when conditional: an unconditional config stays as it was.
    embeds = {} if num_classes is None else {"num_class_embeds": num_classes + 1}
    extra = {"norm_num_groups": norm_num_groups, **embeds, **(unet_kwargs or {})}
    return unet_config(image_size, channels, block_out_channels, layers_per_block, extra)


def build_unet(config: dict[str, Any]) -> UNet2DModel:
    """Instantiate ``UNet2DModel``, naming the argument when diffusers rejects one."""
    try:
        return UNet2DModel(**config)
    except TypeError as error:
        raise InvalidSettingError(f"UNet2DModel rejected the config {config}: {error}") from error


def check_data_matches_model(
    datamodule: object, image_size: int, channels: int, num_classes: int | None = None
) -> None:
    """Raise before training if the datamodule's images or classes differ from the model's."""
    for name, model_value in (("image_size", image_size), ("channels", channels)):
        data_value = getattr(datamodule, name, None)
        if data_value is not None and data_value != model_value:
            raise InvalidSettingError(
                f"The data has {name}={data_value} but the model was built for "
                f"{name}={model_value}. Set the same {name} for both (the CLI links them: set "
                "it once under data)."
            )
    if hasattr(datamodule, "num_classes") and datamodule.num_classes != num_classes:
        raise InvalidSettingError(
            f"The data has {datamodule.num_classes or 'no'} classes (label_column) but the model "
            f"was built for {num_classes or 'no'} classes (num_classes). Set both the same (the "
            "CLI links num_classes to the data's label_column)."
        )


def load_pretrained(
    source: str, image_size: int, channels: int, num_classes: int | None, formulation: Formulation
) -> tuple[UNet2DModel, Formulation]:
    """A pipeline's UNet and its scheduler as the formulation, checked against the data."""
    try:
        # low_cpu_mem_usage needs accelerate (not a dependency); off, diffusers stays quiet.
        unet = UNet2DModel.from_pretrained(source, subfolder="unet", low_cpu_mem_usage=False)
        scheduler_config = DDPMScheduler.load_config(source, subfolder="scheduler")
    except (OSError, ValueError) as error:
        raise SourceUnavailableError(
            f"Could not load a diffusers pipeline from {source!r}: {error}\n"
            "pretrained_model_name_or_path must be a pipeline folder (with model_index.json, "
            "unet/ and scheduler/, as save_pretrained and the export command write) or a Hub "
            "id of one that can be reached."
        ) from error
    check_unet_matches_data(unet, image_size, channels, source)
    classes = unet.config.num_class_embeds and unet.config.num_class_embeds - 1
    if classes != num_classes:
        raise InvalidSettingError(
            f"The pretrained UNet from {source!r} has {classes or 'no'} classes, but "
            f"num_classes is {num_classes}: set num_classes to match it."
        )
    check_image_size(image_size, unet.config.block_out_channels)
    # from_pretrained gives eval mode, which Lightning keeps: fine-tuning would skip dropout.
    return unet.train(), pretrained_formulation(scheduler_config, formulation)


def pretrained_formulation(scheduler_config: dict[str, Any], asked: Formulation) -> Formulation:
    """The formulation a pipeline's saved scheduler was trained with: EDM's or DDPM's."""
    if scheduler_config.get("_class_name", "").startswith("EDM"):
        return EDMFormulation.from_scheduler(EDMEulerScheduler.from_config(scheduler_config))
    min_snr_gamma = getattr(asked, "min_snr_gamma", None)
    scheduler = DDPMScheduler.from_config(scheduler_config)
    return DDPMFormulation.from_scheduler(scheduler, min_snr_gamma)
