"""Sample quality per compute: CPU training recipes, the same wall-clock budget, scored by FD.

Each recipe trains a ``DDPMModule`` on the 832 butterfly photos for ``--budget-seconds`` of
wall-clock time (a ``Timer`` stops it), samples ``--num-images`` images and scores them with a
Fréchet distance (FD) over the features of a small species classifier trained here (Inception
weights cannot be downloaded offline; see ``quality_features.py``). The FD comes with its
floor (real photos against real photos: the sampling noise of that many images), its ceiling
(uniform noise) and its spread over ``--seeds``. Each recipe's mean distance to the nearest
training photo tells whether it copies them.

    python benchmarks/quality.py --recipes ddpm main-job --num-images 208   # ~30 minutes
    python benchmarks/quality.py                      # the standard recipes, seeds 0 1
    python benchmarks/quality.py --recipes edm-heun --max-steps 1100 --budget-seconds 1e9

``main-job`` is ``examples/configs/folder_cpu.yaml`` as it stands, read from the file. A default
run (the standard recipes: DDPM, EDM, min-SNR, v-prediction, EMA, two learning rates, two
widths and the main job) takes about 4.5 hours on two otherwise idle cores: 10 trained models
x 2 seeds x (300 s + ~15 s of setup) is 1.75 hours, and sampling 416 images with 100 DDPM
steps costs ~7 minutes per recipe at the pre-issue-22 width (~3 minutes narrow, ~27 minutes
wide). ``--num-images 208`` halves the sampling. The other recipes (the levers of BENCHMARKS.md
6b and 6c) run when named.
"""

from __future__ import annotations

import argparse
import logging
import math
import statistics
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import timedelta
from pathlib import Path
from typing import Any

import _common
import torch
import yaml
from lightning import Callback, Trainer, seed_everything
from lightning.pytorch.callbacks import Timer
from quality_features import CACHE_ROOT, TrainedClassifier, species_classifier, species_labels
from torchvision.io import write_png
from torchvision.utils import make_grid

from ddpm_lightning import DDPMModule, formulations
from ddpm_lightning.callbacks import EMA
from ddpm_lightning.data import ImageDataModule
from ddpm_lightning.formulations import DDPMFormulation
from ddpm_lightning.quality import FIDSettings, SampleQualityEvaluator
from ddpm_lightning.quiet import quiet_known_noise
from ddpm_lightning.sampling import SamplingSettings
from ddpm_lightning.sampling.seeds import image_seeds
from ddpm_lightning.utils.images import to_uint8
from ddpm_lightning.utils.tables import markdown_table

#: The main job's recipe before issue 22 (folder_cpu.yaml with DDPM and the (32, 64, 128) UNet)
#: as DDPMModule arguments, the base of every recipe, except the schedule: a wall-clock stop
#: leaves a cosine schedule's length unknown (see notes()).
FOLDER_CPU_MODEL: dict[str, Any] = {
    "image_size": 32,
    "block_out_channels": (32, 64, 128),
    "layers_per_block": 1,
    "norm_num_groups": 8,
    "learning_rate": 1e-3,
    "lr_scheduler": "constant_with_warmup",
    "lr_warmup_steps": 50,
}
#: folder_cpu.yaml's data settings (random flips are ImageDataModule's default).
FOLDER_CPU_BATCH_SIZE = 32
#: The README's main job, scored as the row ``main-job``.
MAIN_JOB_CONFIG = _common.REPO_ROOT / "examples" / "configs" / "folder_cpu.yaml"


@dataclass(frozen=True)
class Recipe:
    """How to train a model and how to sample it.

    Args:
        module: DDPMModule arguments over ``FOLDER_CPU_MODEL`` (a factory: every run gets a
            fresh formulation).
        sampler: the sampler that makes the scored images.
        steps: its inference steps.
        callbacks: extra Trainer callbacks (a factory: fresh ones every run).
        trains_as: reuse the model this other recipe trains (same seed), only sample it anew.
        batch_size: images per training batch (folder_cpu.yaml's 32 unless set).
        epochs: train this many epochs, as a config does, instead of the wall-clock budget
            (the row's training seconds then say what it cost).
    """

    module: Callable[[], dict[str, Any]] = dict
    sampler: str = "ddpm"
    steps: int = 100
    callbacks: Callable[[], list[Callback]] = list
    trains_as: str | None = None
    batch_size: int = FOLDER_CPU_BATCH_SIZE
    epochs: int | None = None

    @property
    def sampling(self) -> str:
        return f"{self.sampler}:{self.steps}"


#: The narrow UNet with plain blocks only: attention at 16 px costs ~45% of a CPU step.
NARROW_NO_ATTENTION: dict[str, Any] = {
    "block_out_channels": (16, 32, 64),
    "unet_kwargs": {
        "down_block_types": ("DownBlock2D",) * 3,
        "up_block_types": ("UpBlock2D",) * 3,
    },
}
#: Four levels (16, 32, 64, 64), attention only at the 4 px level: more room for shapes.
DEEP_NARROW: dict[str, Any] = {
    "block_out_channels": (16, 32, 64, 64),
    "unet_kwargs": {
        "down_block_types": ("DownBlock2D", "DownBlock2D", "DownBlock2D", "AttnDownBlock2D"),
        "up_block_types": ("AttnUpBlock2D", "UpBlock2D", "UpBlock2D", "UpBlock2D"),
    },
}


def _edm(**settings: Any) -> Any:
    """The EDM formulation, imported only by the recipes that use it."""
    from ddpm_lightning.formulations import EDMFormulation

    return EDMFormulation(**settings)


def main_job_recipe(config: Path = MAIN_JOB_CONFIG) -> Recipe:
    """The main job as it is configured: folder_cpu.yaml's model, batch, epochs and sampler.

    Read from the file, so the benchmark scores what the README's command trains.
    """
    settings = yaml.safe_load(config.read_text())
    data = settings["data"]["init_args"]
    if data.get("image_size") != FOLDER_CPU_MODEL["image_size"]:
        raise ValueError(
            f"{config} trains at {data.get('image_size')} px; the benchmark scores "
            f"{FOLDER_CPU_MODEL['image_size']} px images: change one to match the other."
        )
    model = dict(settings["model"]["init_args"])
    formulation = model.pop("formulation", None)
    for key in ("block_out_channels", "attention_head_dim"):
        if isinstance(model.get(key), list):
            model[key] = tuple(model[key])

    def module() -> dict[str, Any]:
        if formulation is None:
            return dict(model)
        name = formulation["class_path"].rsplit(".", 1)[-1]
        return {
            **model,
            "formulation": getattr(formulations, name)(**formulation.get("init_args", {})),
        }

    sampling = settings.get("output", {}).get("sampling", {})
    return Recipe(
        module,
        sampler=sampling.get("sampler", "ddpm"),
        steps=sampling.get("num_inference_steps", 100),
        batch_size=data["train_batch_size"],
        epochs=settings["trainer"]["max_epochs"],
    )


#: Every recipe; one line each. ``ddpm`` is folder_cpu.yaml sampled as the main job samples
#: its grids (DDPM, 100 steps).
RECIPES: dict[str, Recipe] = {
    "ddpm": Recipe(),
    "ddpm-ddim20": Recipe(sampler="ddim", steps=20, trains_as="ddpm"),  # the washed-out case
    "min-snr": Recipe(lambda: {"formulation": DDPMFormulation(min_snr_gamma=5.0)}),
    "v-pred": Recipe(lambda: {"formulation": DDPMFormulation(prediction_type="v_prediction")}),
    "ema": Recipe(callbacks=lambda: [EMA(decay=0.999)]),  # sampled with the EMA weights
    "lr-3e-4": Recipe(lambda: {"learning_rate": 3e-4}),
    "lr-2e-3": Recipe(lambda: {"learning_rate": 2e-3}),
    "narrow": Recipe(lambda: {"block_out_channels": (16, 32, 64)}),
    "wide": Recipe(lambda: {"block_out_channels": (64, 128, 256)}),
    # EDM (Karras et al. 2022): one trained model, three samplers.
    "edm-heun": Recipe(lambda: {"formulation": _edm()}, sampler="edm-heun", steps=18),
    "edm-euler": Recipe(sampler="edm-euler", steps=35, trains_as="edm-heun"),
    "edm-dpm-solver++": Recipe(sampler="edm-dpm-solver++", steps=20, trains_as="edm-heun"),
    # The levers for more quality per CPU second on top of EDM.
    "edm-ema": Recipe(
        lambda: {"formulation": _edm()},
        sampler="edm-heun",
        steps=18,
        callbacks=lambda: [EMA(decay=0.999)],
    ),
    "edm-narrow": Recipe(
        lambda: {"formulation": _edm(), "block_out_channels": (16, 32, 64)},
        sampler="edm-heun",
        steps=18,
    ),
    "edm-lr-2e-3": Recipe(
        lambda: {"formulation": _edm(), "learning_rate": 2e-3}, sampler="edm-heun", steps=18
    ),
    # More images per second: the narrow UNet without its 16 px attention (the costliest layer
    # on a CPU), or one level deeper with attention only at 4 px.
    "edm-narrow-noattn": Recipe(
        lambda: {"formulation": _edm(), **NARROW_NO_ATTENTION}, sampler="edm-heun", steps=18
    ),
    "edm-deep": Recipe(
        lambda: {"formulation": _edm(), **DEEP_NARROW}, sampler="edm-heun", steps=18
    ),
    "edm-narrow-noattn-ema": Recipe(
        lambda: {"formulation": _edm(), **NARROW_NO_ATTENTION},
        sampler="edm-heun",
        steps=18,
        callbacks=lambda: [EMA(decay=0.999)],
    ),
    "edm-narrow-noattn-lr-2e-3": Recipe(
        lambda: {"formulation": _edm(), **NARROW_NO_ATTENTION, "learning_rate": 2e-3},
        sampler="edm-heun",
        steps=18,
    ),
    # The main job's way of training: a fixed number of epochs (~300 s here) and a cosine
    # schedule that anneals the learning rate to zero by the last step.
    "edm-narrow-noattn-cosine": Recipe(
        lambda: {"formulation": _edm(), **NARROW_NO_ATTENTION, "lr_scheduler": "cosine"},
        sampler="edm-heun",
        steps=18,
        epochs=45,
    ),
    # More optimizer steps in the same time: smaller batches, and a narrower UNet.
    "edm-batch8": Recipe(lambda: {"formulation": _edm()}, "edm-heun", 18, batch_size=8),
    "edm-narrow-batch8": Recipe(
        lambda: {"formulation": _edm(), "block_out_channels": (16, 32, 64)},
        "edm-heun",
        18,
        batch_size=8,
    ),
}
RECIPES["main-job"] = main_job_recipe()
#: What more training buys: the main job for 240 epochs (about 18 minutes on two cores).
RECIPES["main-job-240"] = replace(RECIPES["main-job"], epochs=240)
#: Whether EMA adds to the main job's cosine decay to zero (BENCHMARKS 6c: it does not).
RECIPES["main-job-ema"] = replace(RECIPES["main-job"], callbacks=lambda: [EMA(decay=0.999)])
#: What a run without ``--recipes`` compares: the issue-22 table.
DEFAULT_RECIPES = [
    "ddpm", "ddpm-ddim20", "min-snr", "v-pred", "ema", "lr-3e-4", "lr-2e-3", "narrow", "wide",
    "edm-heun", "main-job",
]  # fmt: skip

#: Image ``i`` of seed ``s`` is sampled from noise seed ``s * NOISE_SEED_STRIDE + i``.
NOISE_SEED_STRIDE = 100_000
#: Images per sampling and feature batch.
BATCH_SIZE = 64


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--recipes",
        nargs="+",
        choices=list(RECIPES),
        default=DEFAULT_RECIPES,
        metavar="RECIPE",
        help=f"recipes to run, of {', '.join(RECIPES)} (default: {' '.join(DEFAULT_RECIPES)})",
    )
    parser.add_argument(
        "--seeds", nargs="+", type=int, default=[0, 1], help="runs per recipe (default: 0 1)"
    )
    parser.add_argument(
        "--budget-seconds",
        type=float,
        default=300.0,
        help="wall-clock training time of every model (default: %(default)s)",
    )
    parser.add_argument(
        "--num-images",
        type=int,
        default=416,
        help="generated images per FD (default: %(default)s, half the photos; the floor "
        "uses at most the held-out half)",
    )
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=_common.DEFAULT_DATA_DIR,
        help="the butterfly photos, file names starting with the species (default: %(default)s)",
    )
    parser.add_argument(
        "--output",
        type=Path,
        default=_common.RESULTS_DIR / "quality.json",
        help="where to write the JSON results (default: %(default)s)",
    )
    parser.add_argument(
        "--threads", type=int, default=2, help="torch threads (default: %(default)s)"
    )
    parser.add_argument(
        "--max-steps",
        type=int,
        default=None,
        help="also stop each model after this many optimizer steps (a compute budget that "
        "machine load does not change; pair it with a large --budget-seconds)",
    )
    args = parser.parse_args(argv)
    if args.num_images < 2:
        parser.error("--num-images must be at least 2 (FD needs two images)")
    if args.budget_seconds <= 0:
        parser.error("--budget-seconds must be above 0")
    if args.max_steps is not None and args.max_steps < 1:
        parser.error("--max-steps must be at least 1")
    args.seeds = list(dict.fromkeys(args.seeds))
    return args


# ---------------------------------------------------------------------------------------------
# Real images and their split


@dataclass
class RealPhotos:
    """All photos at the recipes' size, uint8 (N, 3, H, W), in the training set's order."""

    images: torch.Tensor
    labels: torch.Tensor  # species ids, for the feature extractor

    def split(self, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Indices of the reference half (FD's real set) and the held-out half (the floor)."""
        order = torch.randperm(len(self.images), generator=torch.Generator().manual_seed(seed))
        half = len(order) // 2
        return order[:half], order[half:]


def data_module(
    data_dir: Path, seed: int, random_flip: bool = True, batch_size: int = FOLDER_CPU_BATCH_SIZE
) -> ImageDataModule:
    """folder_cpu.yaml's data: the photos squashed to 32 px, batches of 32, flipped."""
    return ImageDataModule(
        data_dir=str(data_dir),
        image_size=FOLDER_CPU_MODEL["image_size"],
        train_batch_size=batch_size,
        random_flip=random_flip,
        seed=seed,
    )


def load_photos(data_dir: Path) -> RealPhotos:
    """The decoded training images, exactly as the recipes see them (before flips)."""
    data = data_module(data_dir, seed=0, random_flip=False)
    data.prepare_data()
    data.setup("fit")
    dataset = data.train_dataset
    images = dataset.__getitems__(list(range(len(dataset))))["images"]
    return RealPhotos(images, species_labels(data))


# ---------------------------------------------------------------------------------------------
# Scoring: FD through the package's evaluator, and the nearest-photo distance


@dataclass
class Scorer:
    """FD against one seed's reference half, and nearest-photo distances against all photos."""

    photos: RealPhotos
    classifier: TrainedClassifier
    seed: int
    num_images: int
    evaluator: SampleQualityEvaluator = field(init=False)
    held_out: torch.Tensor = field(init=False)

    def __post_init__(self) -> None:
        reference, self.held_out = self.photos.split(self.seed)
        size = self.photos.images.shape[-1]
        settings = FIDSettings(
            num_images=self.num_images,
            sampling=SamplingSettings(seed=self.seed, batch_size=BATCH_SIZE),
            feature_extractor_key=f"species-classifier-{self.classifier.key}",
            dataset_key=f"butterflies-{size}px-reference-half-split{self.seed}",
            cache_dir=str(CACHE_ROOT / "fid"),
        )
        self.evaluator = settings.evaluator(self.classifier.network, sync_on_compute=False)
        self.evaluator.prepare(
            self.photos.images[reference],
            {"dataset": settings.dataset_key},
            "cpu",
            batch_size=BATCH_SIZE,
        )

    def score(self, images: torch.Tensor, exclude: torch.Tensor | None = None) -> dict[str, float]:
        """FD (and KID) of uint8 images against the reference half; their nearest distance."""
        values = self.evaluator.score(images.split(BATCH_SIZE), len(images))
        nearest = nearest_photo_distance(images, self.photos.images, exclude)
        return {
            "fd": values["fid"],
            "kid": values["kid"],
            "kid_std": values["kid_std"],
            "nearest": nearest.mean().item(),
        }

    def floor(self) -> dict[str, float]:
        """Held-out photos scored as if generated: FD's floor and the real nearest distance."""
        indices = self.held_out[: self.num_images]
        values = self.score(self.photos.images[indices], exclude=indices)  # not itself
        return {**values, "num_images": len(indices)}

    def ceiling(self) -> dict[str, float]:
        """Uniform noise images: FD's ceiling."""
        generator = torch.Generator().manual_seed(self.seed)
        shape = (self.num_images, *self.photos.images.shape[1:])
        noise = torch.randint(0, 256, shape, generator=generator, dtype=torch.uint8)
        return {**self.score(noise), "num_images": self.num_images}


def nearest_photo_distance(
    images: torch.Tensor, photos: torch.Tensor, exclude: torch.Tensor | None = None
) -> torch.Tensor:
    """Per image, the per-pixel RMS distance in [0, 1] to the nearest photo or mirrored photo.

    The recipes train on random flips, so a copy may come out mirrored. ``exclude[i]``: the
    photo (index) that image ``i`` is, left out with its mirror (real images as a reference).
    """
    references = torch.cat([photos, photos.flip(-1)]).flatten(1).float() / 255
    queries = images.flatten(1).float() / 255
    distances = torch.cdist(queries, references)
    if exclude is not None:
        rows = torch.arange(len(images))
        distances[rows, exclude] = math.inf
        distances[rows, exclude + len(photos)] = math.inf
    return distances.min(1).values / math.sqrt(queries.shape[1])


# ---------------------------------------------------------------------------------------------
# Training and sampling


@dataclass
class TrainedModel:
    """A fitted module, with the Trainer that holds its EMA weights (if any)."""

    module: DDPMModule
    trainer: Trainer
    steps: int
    seconds: float


def train(
    recipe: Recipe,
    seed: int,
    budget_seconds: float,
    data_dir: Path,
    max_steps: int | None = None,
) -> TrainedModel:
    """Fit ``recipe`` in this process until the wall-clock budget (or its epochs) runs out."""
    seed_everything(seed, verbose=False)
    module = DDPMModule(**{**FOLDER_CPU_MODEL, **recipe.module()})
    if recipe.epochs is not None:
        budget_seconds = math.inf  # the Timer only measures
    timer = Timer(duration=timedelta(seconds=min(budget_seconds, 1e9)), interval="step")
    trainer = Trainer(
        accelerator="cpu",
        devices=1,
        precision="32-true",
        max_epochs=recipe.epochs or -1,  # else the Timer (or max_steps) stops it
        max_steps=max_steps or -1,
        callbacks=[timer, *recipe.callbacks()],
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
    )
    trainer.fit(module, datamodule=data_module(data_dir, seed, batch_size=recipe.batch_size))
    return TrainedModel(module, trainer, trainer.global_step, timer.time_elapsed("train"))


def sample(model: TrainedModel, recipe: Recipe, seed: int, num_images: int) -> torch.Tensor:
    """Uint8 images from the trained model (its EMA weights when the Trainer averages)."""
    settings = SamplingSettings(
        recipe.sampler, recipe.steps, seed=seed * NOISE_SEED_STRIDE, batch_size=BATCH_SIZE
    )
    generator = model.module.image_generator(settings, model.trainer)
    batches: list[torch.Tensor] = []
    generator(
        image_seeds(settings.seed, num_images), on_batch=lambda x: batches.append(to_uint8(x))
    )
    return torch.cat(batches).cpu()


def save_grid(images: torch.Tensor, path: Path, count: int = 64) -> None:
    """The first ``count`` uint8 images as one PNG grid: what the FD figure looks like."""
    path.parent.mkdir(parents=True, exist_ok=True)
    grid = make_grid(images[:count], nrow=int(math.sqrt(count)), padding=1)
    write_png(grid, str(path))


def training_groups(names: Sequence[str]) -> dict[str, list[str]]:
    """Recipes by the recipe whose model they sample: one training serves them all."""
    groups: dict[str, list[str]] = {}
    for name in names:
        groups.setdefault(RECIPES[name].trains_as or name, []).append(name)
    return groups


def run_seed(
    scorer: Scorer,
    names: Sequence[str],
    budget_seconds: float,
    data_dir: Path,
    max_steps: int | None = None,
    grid_dir: Path | None = None,
) -> dict[str, dict[str, Any]]:
    """Train every needed model once with this seed, sample and score each recipe.

    With ``grid_dir``, each recipe's first 64 scored images go to ``<recipe>-seed<k>.png``.
    """
    results: dict[str, dict[str, Any]] = {}
    for trained_as, members in training_groups(names).items():
        epochs = RECIPES[trained_as].epochs
        length = f"{epochs} epochs" if epochs else f"{budget_seconds:g} s"
        print(f"seed {scorer.seed}: training {trained_as} for {length} ...", flush=True)
        model = train(RECIPES[trained_as], scorer.seed, budget_seconds, data_dir, max_steps)
        for name in members:
            recipe = RECIPES[name]
            started = time.perf_counter()
            images = sample(model, recipe, scorer.seed, scorer.num_images)
            sampling_seconds = time.perf_counter() - started
            if grid_dir is not None:
                save_grid(images, grid_dir / f"{name}-seed{scorer.seed}.png")
            results[name] = {
                "seed": scorer.seed,
                "training_steps": model.steps,
                "training_seconds": model.seconds,
                "sampling_seconds": sampling_seconds,
                **scorer.score(images),
            }
            row = results[name]
            print(
                f"  {name} ({recipe.sampling}): {model.steps} steps, FD {row['fd']:.2f}, "
                f"nearest {row['nearest']:.3f}, sampling {sampling_seconds:.0f} s",
                flush=True,
            )
        del model
    return results


# ---------------------------------------------------------------------------------------------
# Summary, table and notes


def spread(values: Sequence[float]) -> dict[str, float | None]:
    """Mean, sample standard deviation (None for one run), min and max."""
    return {
        "mean": statistics.fmean(values),
        "std": statistics.stdev(values) if len(values) > 1 else None,
        "min": min(values),
        "max": max(values),
    }


def summarize(runs: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Per-seed runs and their spread of FD, nearest distance and training steps."""
    keys = ("fd", "kid", "nearest", "training_steps", "training_seconds", "sampling_seconds")
    return {
        "runs": list(runs),
        **{key: spread([run[key] for run in runs]) for key in keys if key in runs[0]},
    }


def mean_and_std(summary: dict[str, Any], digits: int) -> str:
    std = summary["std"]
    mean = f"{summary['mean']:.{digits}f}"
    return mean if std is None else f"{mean} ± {std:.{digits}f}"


def min_to_max(summary: dict[str, Any] | None, digits: int) -> str:
    if summary is None:
        return "–"
    low, high = f"{summary['min']:.{digits}f}", f"{summary['max']:.{digits}f}"
    return low if low == high else f"{low}–{high}"


def table(recipes: dict[str, dict[str, Any]], floor: dict, ceiling: dict) -> str:
    headers = [
        "recipe", "sampler:steps", "training steps", "training s", "sampling s", "FD mean ± std",
        "FD min–max", "nearest photo (RMS)",
    ]  # fmt: skip

    def row(name: str, sampling: str, summary: dict[str, Any]) -> list[str]:
        fd = summary["fd"]
        return [
            name,
            sampling,
            min_to_max(summary.get("training_steps"), 0),
            min_to_max(summary.get("training_seconds"), 0),
            min_to_max(summary.get("sampling_seconds"), 0),
            mean_and_std(fd, 2),
            min_to_max(fd, 2),
            mean_and_std(summary["nearest"], 3),
        ]

    rows = [row("floor: held-out photos", "–", floor)]
    rows += [row(name, RECIPES[name].sampling, summary) for name, summary in recipes.items()]
    rows.append(row("ceiling: uniform noise", "–", ceiling))
    return markdown_table(headers, rows)


def notes(args: argparse.Namespace, photos: RealPhotos, classifier: TrainedClassifier) -> str:
    half = len(photos.images) // 2
    floor_images = min(args.num_images, len(photos.images) - half)
    return "\n".join(
        [
            f"- FD: Fréchet distance of {classifier.network.num_features}-d features of a "
            f"species classifier trained here ({classifier.held_out_accuracy:.0%} held-out "
            f"accuracy on {classifier.num_held_out} photos, 10 species, chance 10%); not "
            "comparable with Inception FID.",
            f"- Seed s trains every model with seed s and splits the {len(photos.images)} photos "
            f"(seeded s) into a reference half ({half}) and a held-out half. Each FD compares "
            f"{args.num_images} images with the reference half: generated ones, {floor_images} "
            "held-out photos (floor: what the image count alone gives) or uniform noise "
            "(ceiling). ± is the sample std over seeds. Noise is a reference, not a bound: a "
            "barely trained model's saturated samples can score worse.",
            f"- Training: {args.budget_seconds:g} s of wall-clock time per model (Lightning "
            "Timer)"
            + (
                f" or {args.max_steps} optimizer steps, whichever ends first"
                if args.max_steps
                else ""
            )
            + ", the pre-issue-22 main job's model and data (DDPM, UNet (32, 64, 128), 32 px, "
            "batch 32), but a constant learning rate after the 50 warm-up steps: a cosine "
            "schedule needs the run's length, which a wall-clock stop only estimates. "
            "Recipes with a fixed number of epochs (main-job: folder_cpu.yaml as it is; "
            "*-cosine) train them with their own schedule; their training seconds say what "
            "that cost. ddpm-ddim20 samples the ddpm model (no training of its own).",
            "- Nearest photo: mean over images of the per-pixel RMS distance in [0, 1] to the "
            "nearest training photo or its mirror image; the floor row's figure is the real "
            "reference (each held-out photo against the other photos). Far below it means "
            "copies; blurry samples also come out low, so read it with the FD.",
        ]
    )


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", ".*does not have many workers.*")
    quiet_known_noise()
    _common.set_threads(args.threads)
    machine = _common.machine_info("cpu")
    started = time.perf_counter()

    photos = load_photos(args.data_dir)
    held_out = len(photos.images) - len(photos.images) // 2
    if args.num_images > held_out:
        print(f"Note: the floor's FD uses only the {held_out} held-out photos.")
    classifier = species_classifier(photos.images, photos.labels)
    origin = "cached in" if classifier.cached else f"trained in {classifier.seconds:.0f} s,"
    print(
        f"Species classifier ({origin} {classifier.path}): held-out accuracy "
        f"{classifier.held_out_accuracy:.1%} on {classifier.num_held_out} photos (chance 10%)."
    )

    per_seed: dict[str, list[dict[str, Any]]] = {"floor": [], "ceiling": []}
    for seed in args.seeds:
        scorer = Scorer(photos, classifier, seed, args.num_images)
        per_seed["floor"].append({"seed": seed, **scorer.floor()})
        per_seed["ceiling"].append({"seed": seed, **scorer.ceiling()})
        runs = run_seed(
            scorer, args.recipes, args.budget_seconds, args.data_dir, args.max_steps,
            grid_dir=args.output.with_name(f"{args.output.stem}-grids"),
        )  # fmt: skip
        for name, run in runs.items():
            per_seed.setdefault(name, []).append(run)

    floor, ceiling = summarize(per_seed.pop("floor")), summarize(per_seed.pop("ceiling"))
    recipes = {
        name: {"sampling": RECIPES[name].sampling, **summarize(per_seed[name])}
        for name in args.recipes
    }
    heading = (
        f"Quality per compute: {_common.describe_machine(machine)}; budget "
        f"{args.budget_seconds:g} s per model, {args.num_images} images per FD, seeds "
        f"{' '.join(map(str, args.seeds))}"
    )
    text = f"{heading}\n\n{table(recipes, floor, ceiling)}\n\n{notes(args, photos, classifier)}"
    print(f"\n{text}")
    print(f"\nTotal {time.perf_counter() - started:.0f} s.")
    _common.write_json(
        args.output,
        {
            "benchmark": "quality",
            "machine": machine,
            "settings": {
                "recipes": {name: RECIPES[name].sampling for name in args.recipes},
                "seeds": args.seeds,
                "budget_seconds": args.budget_seconds,
                "max_steps": args.max_steps,
                "num_images": args.num_images,
                "data_dir": str(args.data_dir),
                "model": FOLDER_CPU_MODEL,
                "train_batch_size": FOLDER_CPU_BATCH_SIZE,
            },
            "classifier": {
                "held_out_accuracy": classifier.held_out_accuracy,
                "num_held_out": classifier.num_held_out,
                "num_features": classifier.network.num_features,
                "cache_file": str(classifier.path),
            },
            "floor": floor,
            "ceiling": ceiling,
            "recipes": recipes,
            "seconds": time.perf_counter() - started,
            "table": text,
        },
    )


if __name__ == "__main__":
    main()
