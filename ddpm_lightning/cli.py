"""``ddpm-lightning``: ``LightningCLI`` for fit/validate/predict; export/sample need no Trainer."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import torch
from jsonargparse import CLI
from lightning.pytorch import Trainer
from lightning.pytorch.callbacks import LearningRateMonitor, ModelSummary, ProgressBar
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI

from ddpm_lightning.callbacks import PNGPredictionWriter, TrainingOutputs
from ddpm_lightning.callbacks.parameter_summary import ParameterSummary
from ddpm_lightning.callbacks.progress_bar import TrainingProgressBar
from ddpm_lightning.console import DESCRIPTION, main
from ddpm_lightning.data import ButterfliesDataModule, ImageDataModule  # noqa: F401 (short names)
from ddpm_lightning.errors import InvalidSettingError
from ddpm_lightning.loading import check_checkpoint_readable, load_module
from ddpm_lightning.models import DDPMModule
from ddpm_lightning.models.ddpm_module import SamplerName
from ddpm_lightning.quiet import quiet_known_noise
from ddpm_lightning.sampling.generation import ImageGenerator
from ddpm_lightning.sampling.seeds import image_seeds, labels_in_proportion
from ddpm_lightning.utils.checks import check_at_least
from ddpm_lightning.utils.images import grid_shape, image_file_name, image_grid, save_png
from ddpm_lightning.utils.overwrite_guard import refuse_to_overwrite

TRAINER_SUBCOMMANDS = ("fit", "validate", "predict")
#: Module arguments that say how to sample: taken from the command, never from --ckpt_path.
SAMPLING_SETTINGS = (
    "sampler",
    "num_inference_steps",
    "seed",
    "num_predict_images",
    "predict_batch_size",
)
MODEL_SUBCOMMANDS = ("export", "sample", "evaluate")


class DDPMLightningCLI(LightningCLI):
    """LightningCLI in subclass mode, with the data linked to the model and tutorial outputs."""

    @staticmethod
    def subcommands() -> dict[str, set[str]]:
        """``fit``, ``validate`` and ``predict`` (the module has no test step)."""
        subcommands = LightningCLI.subcommands()
        return {name: subcommands[name] for name in TRAINER_SUBCOMMANDS}

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        """Add ``--output.*`` (the tutorial's output settings) and link image size/channels."""
        parser.add_class_arguments(TrainingOutputs, "output")
        parser.link_arguments("data.init_args.image_size", "model.init_args.image_size")
        parser.link_arguments("data.init_args.channels", "model.init_args.channels")
        # A label column's classes are known once the data is (instantiated and) read.
        for name in ("num_classes", "id2label"):
            parser.link_arguments(f"data.{name}", f"model.init_args.{name}", apply_on="instantiate")

    def after_instantiate_classes(self) -> None:
        """``predict`` generates from seeds (the module's ``predict_dataloader``), not from data."""
        if self.subcommand == "predict":
            self.datamodule = None

    def parse_arguments(self, parser: LightningArgumentParser, args: Any) -> None:
        """Parse, then check ``--ckpt_path`` before LightningCLI reads its hyperparameters.

        A broken file then gets an error that says what to do, not an unpickling traceback. The
        checkpoint's hyperparameters replace the model's arguments, but how to sample is this
        command's business: those are kept aside, for :meth:`before_instantiate_classes`.
        """
        super().parse_arguments(parser, args)
        subcommand = self.config.get("subcommand")
        ckpt_path = self.config[subcommand].get("ckpt_path") if subcommand else None
        self.requested_sampling: dict[str, Any] = {}
        if ckpt_path and Path(ckpt_path).is_file():
            check_checkpoint_readable(ckpt_path)
            model = self.config[subcommand]["model"]
            keys = [f"init_args.{name}" for name in SAMPLING_SETTINGS]
            self.requested_sampling = {k: model[k] for k in keys if model.get(k) is not None}

    def before_instantiate_classes(self) -> None:
        """Sampling settings on the command line win over the checkpoint's (see above)."""
        model = self.config[self.subcommand]["model"]
        for key, value in self.requested_sampling.items():
            model[key] = value

    def before_fit(self) -> None:
        """Refuse a fit that would train nothing."""
        if self.trainer.max_epochs == 0 or self.trainer.max_steps == 0:
            raise InvalidSettingError(
                "trainer.max_epochs (or max_steps) is 0: there is nothing to train. Set "
                "--trainer.max_epochs to 1 or more."
            )

    def before_validate(self) -> None:
        """Refuse a validation without held-out images (it would print nothing)."""
        if getattr(self.datamodule, "val_fraction", None) == 0:
            raise InvalidSettingError(
                "validate needs held-out images, but data.init_args.val_fraction is 0. Pass the "
                "fraction the run was trained with, e.g. --data.init_args.val_fraction 0.1."
            )

    def instantiate_trainer(self, **kwargs: Any) -> Trainer:
        """Add the output callbacks (fit) or the PNG writer (predict), and the default logger."""
        config = self.config_init[self.subcommand]
        outputs: TrainingOutputs = config["output"]
        trainer_config = config.get("trainer") or {}
        callbacks = list(trainer_config.get("callbacks") or [])
        logger = trainer_config.get("logger")
        if self.subcommand == "fit":
            callbacks += outputs.callbacks()
            if logger in (None, True):
                logger = outputs.logger()
            if logger is False:
                callbacks = [cb for cb in callbacks if not isinstance(cb, LearningRateMonitor)]
        elif self.subcommand == "predict":
            folder = str(outputs.output_dir / "predictions")
            callbacks.append(PNGPredictionWriter(folder, overwrite=outputs.overwrite_output_dir))
        # Lightning's bar and summary, less what a user cannot act on (v_num, FLOPs 0).
        kinds = [type(callback) for callback in callbacks]
        if trainer_config.get("enable_progress_bar") is not False:
            if not any(issubclass(kind, ProgressBar) for kind in kinds):
                callbacks.append(TrainingProgressBar())
        if trainer_config.get("enable_model_summary") is not False:
            if not any(issubclass(kind, ModelSummary) for kind in kinds):
                callbacks.append(ParameterSummary())
        return super().instantiate_trainer(callbacks=callbacks, logger=logger, **kwargs)


def run_lightning_cli(args: list[str] | None) -> DDPMLightningCLI:
    """The training CLI: ``fit``, ``validate`` and ``predict``."""
    quiet_known_noise()
    return DDPMLightningCLI(
        DDPMModule,
        ImageDataModule,
        subclass_mode_model=True,
        subclass_mode_data=True,
        seed_everything_default=0,
        trainer_defaults={"max_epochs": 50},
        save_config_kwargs={"overwrite": True},
        parser_kwargs={"description": DESCRIPTION},
        args=args,
        auto_configure_optimizers=False,
    )


def export(ckpt_path: str, output_dir: str, overwrite: bool = False) -> Path:
    """Turn a training checkpoint into a diffusers pipeline folder.

    Args:
        ckpt_path: a checkpoint written during fit (EMA weights when EMA was on).
        output_dir: the folder to write; ``DDPMPipeline.from_pretrained(output_dir)`` loads it.
        overwrite: replace a pipeline already in ``output_dir``.
    """
    module = load_module(ckpt_path)
    module.save_pretrained(output_dir, overwrite=overwrite)
    print(f"Wrote a DDPMPipeline to {output_dir}")
    return Path(output_dir)


def sample(
    source: str,
    output_dir: str = "samples",
    num_images: int = 16,
    sampler: SamplerName = "ddpm",
    num_inference_steps: int = 1000,
    seed: int = 0,
    batch_size: int = 16,
    device: str = "cuda" if torch.cuda.is_available() else "cpu",
    overwrite: bool = False,
    class_labels: list[str] | str | None = None,
    guidance_scale: float = 1.0,
) -> list[Path]:
    """Generate images from a checkpoint, a pipeline folder or a Hub id; save PNGs and a grid.

    Image i comes from seed + i, so any batch size gives the same images.

    Args:
        source: a .ckpt file, a diffusers pipeline folder, or a Hub id.
        output_dir: where ``00000.png``... and ``grid.png`` go.
        num_images: how many images.
        sampler: ``ddpm``, ``ddim``, ``dpm-solver++`` or ``unipc``.
        num_inference_steps: sampler steps (1000 for ddpm; 20-50 for the others).
        seed: seed of the first image.
        batch_size: images sampled at once.
        device: ``cpu`` or ``cuda``.
        overwrite: replace images already in ``output_dir``.
        class_labels: a class-conditional model's classes, ids or names (``red,blue``): the
            images are spread evenly over them, and each file is named with its class.
        guidance_scale: classifier-free guidance of a conditional model (1: none).
    """
    check_at_least("num_images", num_images, 1)
    module = load_module(source).to(device)
    labels, names = None, [None] * num_images
    if isinstance(class_labels, str):
        class_labels = class_labels.split(",")
    ids = module.classes.ids(class_labels)
    if ids is not None:
        labels = [ids[i] for i in labels_in_proportion([1] * len(ids), num_images)]
        names = [module.classes.name(label) for label in labels]
    folder = Path(output_dir)
    paths = [folder / image_file_name(index, name) for index, name in enumerate(names)]
    paths.append(folder / "grid.png")
    advice = "Choose another --output_dir, or replace them with --overwrite true."
    refuse_to_overwrite(paths, overwrite, advice)
    generator = ImageGenerator(
        module, sampler, num_inference_steps, batch_size, guidance_scale=guidance_scale
    )
    images = generator(image_seeds(seed, num_images), class_labels=labels).cpu()
    for path, image in zip(paths, images):
        save_png(image, path)
    _, cols = grid_shape(num_images)
    save_png(image_grid(images, cols), paths[-1])
    print(f"Wrote {num_images} images and grid.png to {folder}")
    return paths


def run(args: list[str] | None = None) -> Any:
    """Run a command; return the ``LightningCLI`` or the function's result (tests, scripts)."""
    argv = sys.argv[1:] if args is None else list(args)
    if argv and argv[0] in MODEL_SUBCOMMANDS:
        from ddpm_lightning.evaluation_command import evaluate

        return CLI(
            [export, sample, evaluate], args=argv, as_positional=False, description=DESCRIPTION
        )
    return run_lightning_cli(args)


__all__ = ["DDPMLightningCLI", "export", "main", "run", "sample"]
