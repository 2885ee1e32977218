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

from ddpm_lightning.callbacks import PNGPredictionWriter, SpeedSwitches
from ddpm_lightning.callbacks.parameter_summary import ParameterSummary
from ddpm_lightning.callbacks.progress_bar import TrainingProgressBar
from ddpm_lightning.data import ButterfliesDataModule, ImageDataModule  # noqa: F401 (short names)
from ddpm_lightning.errors import InvalidSettingError
from ddpm_lightning.formulations import DDPMFormulation  # noqa: F401 (short class_path)
from ddpm_lightning.loading import check_checkpoint_readable, load_module, read_checkpoint
from ddpm_lightning.models import DDPMModule
from ddpm_lightning.models.checkpoint_fit import check_checkpoint_fits
from ddpm_lightning.quiet import quiet_known_noise
from ddpm_lightning.sampling import SamplingSettings
from ddpm_lightning.sampling.prediction import PredictionSettings
from ddpm_lightning.sampling.seeds import image_seeds, labels_in_proportion
from ddpm_lightning.training_outputs import TrainingOutputs
from ddpm_lightning.usage import DESCRIPTION
from ddpm_lightning.utils.checks import check_at_least
from ddpm_lightning.utils.images import grid_shape, image_file_name, image_grid, save_png
from ddpm_lightning.utils.output_paths import check_output_folder
from ddpm_lightning.utils.overwrite_guard import refuse_to_overwrite
from ddpm_lightning.utils.signals import stop_on_sigterm

TRAINER_SUBCOMMANDS = ("fit", "validate", "predict")
#: ``--ckpt_path`` values Lightning resolves itself.
CKPT_PATH_KEYWORDS = ("last", "best", "hpc", "registry")
MODEL_SUBCOMMANDS = ("export", "sample", "evaluate")


class DDPMLightningCLI(LightningCLI):
    """LightningCLI in subclass mode, with the data linked to the model and tutorial outputs."""

    @staticmethod
    def subcommands() -> dict[str, set[str]]:
        """``fit``, ``validate`` and ``predict`` (the module has no test step)."""
        subcommands = LightningCLI.subcommands()
        return {name: subcommands[name] for name in TRAINER_SUBCOMMANDS}

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        """Add ``--output.*``, ``--speed.*`` and ``--predict.*``; link the data to the model."""
        parser.add_class_arguments(TrainingOutputs, "output")
        parser.add_class_arguments(SpeedSwitches, "speed")
        parser.add_class_arguments(PredictionSettings, "predict")
        # LightningCLI then adds Trainer.predict's own arguments (ckpt_path...) in a group it
        # names after the method, "predict": the group name (not the --predict.* keys) must differ.
        parser.groups["predict_settings"] = parser.groups.pop("predict")
        parser.add_argument(
            "--allow_data_changes",
            type=bool,
            default=False,
            help="Resume (--ckpt_path) on another image_size or other class names on purpose.",
        )
        parser.link_arguments("data.init_args.image_size", "model.init_args.image_size")
        parser.link_arguments("data.init_args.channels", "model.init_args.channels")
        # A label column's classes are known once the data is instantiated and they are read.
        parser.link_arguments(
            "data", "model.init_args.num_classes", data_num_classes, apply_on="instantiate"
        )
        parser.link_arguments(
            "data", "model.init_args.id2label", data_id2label, apply_on="instantiate"
        )

    def after_instantiate_classes(self) -> None:
        """``predict`` generates from seeds (the module's ``predict_dataloader``), not from data."""
        if self.subcommand == "predict":
            self.datamodule = None
            self.model.prediction = self.config_init["predict"]["predict"]

    def parse_arguments(self, parser: LightningArgumentParser, args: Any) -> None:
        """Parse, then check ``--ckpt_path`` before LightningCLI reads its hyperparameters.

        A broken file then gets an error that says what to do, not an unpickling traceback.
        """
        super().parse_arguments(parser, args)
        subcommand = self.config.get("subcommand")
        ckpt_path = self.config[subcommand].get("ckpt_path") if subcommand else None
        if ckpt_path and ckpt_path not in CKPT_PATH_KEYWORDS and "://" not in str(ckpt_path):
            check_checkpoint_readable(ckpt_path)  # missing, a folder, or broken: say so now

    def before_fit(self) -> None:
        """Before any work: something to train, a writable folder, a checkpoint that fits."""
        trainer = self.trainer
        if trainer.max_epochs == 0 or trainer.max_steps == 0:
            raise InvalidSettingError(
                "trainer.max_epochs (or max_steps) is 0: there is nothing to train. Set "
                "--trainer.max_epochs to 1 or more."
            )
        outputs: TrainingOutputs = self.config_init["fit"]["output"]
        check_output_folder(outputs.output_dir, "--output.output_dir")
        ckpt_path = self._checked_checkpoint("fit")
        if ckpt_path is not None and trainer.max_epochs not in (None, -1):
            completed = completed_epochs(ckpt_path)
            if completed > trainer.max_epochs:
                raise InvalidSettingError(
                    f"The checkpoint {str(ckpt_path)!r} has trained {completed} epochs, but "
                    f"--trainer.max_epochs is {trainer.max_epochs}: it has nothing left to train. "
                    f"Set --trainer.max_epochs above {completed} to train on (max_epochs counts "
                    "from the run's start), or leave out --ckpt_path to start a new run."
                )

    def before_predict(self) -> None:
        """Before generating: a writable predictions folder and a checkpoint that fits."""
        outputs: TrainingOutputs = self.config_init["predict"]["output"]
        check_output_folder(outputs.output_dir / "predictions", "--output.output_dir")
        self._checked_checkpoint("predict")

    def _checked_checkpoint(self, subcommand: str) -> Path | None:
        """The ``--ckpt_path`` file (``last`` resolved), refused unless it fits the model."""
        config = self.config_init[subcommand]
        ckpt_path = config.get("ckpt_path")
        if ckpt_path == "last":
            ckpt_path = config["output"].output_dir / "checkpoints" / "last.ckpt"
        if not ckpt_path or not Path(ckpt_path).is_file():
            return None
        model = self.model
        check_checkpoint_fits(
            read_checkpoint(ckpt_path),
            str(ckpt_path),
            model.unet,
            dict(model.hparams),
            bool(config.get("allow_data_changes")),
            getattr(model.space, "identity", None),
        )
        return Path(ckpt_path)

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
        logger, plugins = trainer_config.get("logger"), trainer_config.get("plugins")
        speed: SpeedSwitches = config["speed"]
        if speed.any_on:
            callbacks.append(speed)
        if self.subcommand == "fit":
            callbacks += outputs.callbacks()
            plugins = outputs.plugins(
                plugins if isinstance(plugins, list) else plugins and [plugins]
            )
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
        return super().instantiate_trainer(
            callbacks=callbacks, logger=logger, plugins=plugins, **kwargs
        )


def data_id2label(data: Any) -> dict[int, str] | None:
    """The datamodule's class names by id, read from its label column (None without one)."""
    discover = getattr(data, "discover_classes", None)
    return discover() if discover is not None else getattr(data, "id2label", None)


def data_num_classes(data: Any) -> int | None:
    """How many classes the datamodule's label column holds (None without one)."""
    id2label = data_id2label(data)
    return None if id2label is None else len(id2label)


def completed_epochs(ckpt_path: str | Path) -> int:
    """The epochs a checkpoint has finished, as the Trainer counts them when it resumes."""
    checkpoint = read_checkpoint(ckpt_path)
    loops = checkpoint.get("loops") or {}
    progress = loops.get("fit_loop", {}).get("epoch_progress", {}).get("current", {})
    return int(progress.get("completed", checkpoint.get("epoch", 0)))


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
    check_output_folder(output_dir, "--output_dir")
    module = load_module(ckpt_path)
    module.save_pretrained(output_dir, overwrite=overwrite)
    print(f"Wrote a DDPMPipeline to {output_dir}")
    return Path(output_dir)


def sample(
    source: str,
    output_dir: str = "samples",
    num_images: int = 16,
    sampler: str | None = None,
    num_inference_steps: int | None = None,
    seed: int = 0,
    batch_size: int = 16,
    device: str = "cuda" if torch.cuda.is_available() else "cpu",
    overwrite: bool = False,
    class_labels: list[str] | str | None = None,
    guidance_scale: float = 1.0,
) -> list[Path]:
    """Generate images from a checkpoint, a pipeline folder or a Hub id; save PNGs and a grid.

    Image i comes from seed + i, so any batch size gives the same images. Each batch is
    written as soon as it is made: an interrupted run keeps the finished batches.

    Args:
        source: a .ckpt file, a diffusers pipeline folder, or a Hub id.
        output_dir: where ``00000.png``... and ``grid.png`` go.
        num_images: how many images.
        sampler: ``ddpm``, ``ddim``, ``dpm-solver++`` or ``unipc`` (EDM models: ``edm-heun``,
            ``edm-euler`` or ``edm-dpm-solver++``); None: the model's default (ddpm, edm-heun).
        num_inference_steps: sampler steps (None: the default sampler's 1000 or 18; 20-50 for
            the others).
        seed: seed of the first image.
        batch_size: images sampled at once.
        device: ``cpu`` or ``cuda``.
        overwrite: replace images already in ``output_dir``.
        class_labels: a class-conditional model's classes, ids or names (``red,blue``): the
            images are spread evenly over them, and each file is named with its class.
        guidance_scale: classifier-free guidance of a conditional model (1: none).
    """
    check_at_least("num_images", num_images, 1)
    settings = SamplingSettings(sampler, num_inference_steps, seed, guidance_scale, batch_size)
    folder = check_output_folder(output_dir, "--output_dir")
    module = load_module(source).to(device)
    generator = module.image_generator(settings)
    labels, names = None, [None] * num_images
    if isinstance(class_labels, str):
        class_labels = class_labels.split(",")
    ids = module.classes.ids(class_labels)
    if ids is not None:
        labels = [ids[i] for i in labels_in_proportion([1] * len(ids), num_images)]
        names = [module.classes.name(label) for label in labels]
    paths = [folder / image_file_name(index, name) for index, name in enumerate(names)]
    paths.append(folder / "grid.png")
    advice = "Choose another --output_dir, or replace them with --overwrite true."
    refuse_to_overwrite(paths, overwrite, advice)
    written: list[torch.Tensor] = []

    def write_batch(images: torch.Tensor) -> None:
        for image in images.cpu():
            save_png(image, paths[len(written)])
            written.append(image)

    with stop_on_sigterm():
        try:
            generator(image_seeds(seed, num_images), on_batch=write_batch, class_labels=labels)
        except KeyboardInterrupt as stop:
            print(
                f"Stopped ({stop or 'Ctrl-C'}): wrote {len(written)} of {num_images} images to "
                f"{folder} (no grid.png).",
                file=sys.stderr,
            )
            raise
    _, cols = grid_shape(num_images)
    save_png(image_grid(torch.stack(written), cols), paths[-1])
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


__all__ = ["DDPMLightningCLI", "completed_epochs", "export", "run", "sample"]
