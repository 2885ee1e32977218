"""Open a trained model from wherever users keep one: a checkpoint, a pipeline folder, the Hub."""

from __future__ import annotations

import os
import pickle
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from diffusers import AutoencoderKL, DiffusionPipeline, UNet2DModel

from ddpm_lightning.errors import MissingInputError, SourceUnavailableError, UsageError
from ddpm_lightning.models import DDPMModule
from ddpm_lightning.utils.atomic_export import is_pipeline_folder


class CheckpointError(UsageError, RuntimeError):
    """A checkpoint file cannot be read."""


#: What loading a truncated, corrupt or foreign file raises.
_UNREADABLE = (
    RuntimeError,
    pickle.UnpicklingError,
    EOFError,
    zipfile.BadZipFile,
    KeyError,
    ValueError,
)


def _read_checkpoint(path: str | os.PathLike, read: Callable[[Path], Any]) -> Any:
    path = Path(path)
    if path.is_dir():
        raise MissingInputError(
            f"{str(path)!r} is a folder, not a checkpoint file: give a .ckpt file in it, such "
            f"as {str(path / 'last.ckpt')!r}, or --ckpt_path last."
        )
    if not path.is_file():
        raise MissingInputError(
            f"No checkpoint at {str(path)!r}. Check the path (e.g. checkpoints/last.ckpt)."
        )
    try:
        return read(path)
    except _UNREADABLE as error:
        raise CheckpointError(
            f"Could not read the checkpoint {str(path)!r} ({type(error).__name__}: {error}). "
            "The file is truncated, corrupt or not a ddpm_lightning checkpoint. Use another one, "
            "such as an earlier epoch's file in the same checkpoints folder."
        ) from error


def read_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """The checkpoint's dict, memory-mapped (large files are not read whole), or a clear error."""
    return _read_checkpoint(
        path, lambda p: torch.load(p, map_location="cpu", weights_only=False, mmap=True)
    )


def check_checkpoint_readable(path: str | os.PathLike) -> None:
    """Raise a clear error now, before a run starts, if ``path`` cannot be loaded."""
    read_checkpoint(path)


def load_pipeline_module(source: str) -> DDPMModule:
    """A ``DDPMModule`` holding the UNet and noise schedule of a diffusers pipeline."""
    try:
        config = UNet2DModel.load_config(source, subfolder="unet")
    except (OSError, ValueError) as error:
        raise SourceUnavailableError(
            f"Could not open {source!r} as a diffusers pipeline: {error}\nGive a checkpoint file "
            "(.ckpt), a pipeline folder (with model_index.json), or a Hub id that can be reached."
        ) from error
    size, embeds = config["sample_size"], config.get("num_class_embeds")
    size, channels = size if isinstance(size, int) else size[0], config["in_channels"]
    model_index = DiffusionPipeline.load_config(source)
    id2label = model_index.get("id2label") or None  # a class-conditional pipeline's class names
    latents = {}
    if "vae" in model_index:  # a latent pipeline: images are the autoencoder's, larger than latents
        vae = AutoencoderKL.load_config(source, subfolder="vae")
        size *= 2 ** (len(vae["block_out_channels"]) - 1)
        channels = vae["in_channels"]
        latents = {"autoencoder": source, "autoencoder_subfolder": "vae"}
    return DDPMModule(
        image_size=size,
        channels=channels,
        pretrained_model_name_or_path=source,
        num_classes=embeds - 1 if embeds else None,
        id2label={int(index): name for index, name in id2label.items()} if id2label else None,
        **latents,
    )


def load_module(source: str | os.PathLike) -> DDPMModule:
    """Load from a Lightning checkpoint file, a diffusers pipeline folder, or a Hub id.

    A checkpoint saved with EMA holds the averaged weights, so this returns the EMA model.
    """
    text = str(source)
    if os.path.isfile(text):
        load = DDPMModule.load_from_checkpoint
        return _read_checkpoint(text, lambda p: load(p, map_location="cpu", weights_only=False))
    if os.path.isdir(text):
        if not is_pipeline_folder(text):
            raise MissingInputError(
                f"{text!r} is a folder but not a diffusers pipeline (no model_index.json). Give "
                "the folder that export or PipelineExportCallback wrote, or a .ckpt file."
            )
        return load_pipeline_module(text)
    if text.endswith(".ckpt") or os.sep in text.rstrip("/").split("/", 1)[-1]:
        raise MissingInputError(f"No checkpoint or pipeline folder at {text!r}.")
    return load_pipeline_module(text)
