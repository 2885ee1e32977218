"""Training images/s and peak memory: Trainer.fit with DDPMModule against the tutorial's loop.

Two comparisons, both run back to back in one invocation:
- ``tutorial-data``: each side with its own data pipeline (the tutorial's ``set_transform``
  loader against ImageDataModule), i.e. what a user of either gets;
- ``predecoded``: both sides read the same pre-decoded tensors through the same DataLoader, so
  the difference is the training loop alone (Lightning's overhead against Accelerate's).
Runs alternate between the sides (A B, B A, ...) so slow drift cancels; warm-up steps are not
timed, and the figure is the median over repeats. Each side's mean loss over its steps is
reported beside its speed: a faster configuration must train the same loss.

``--lightning-precision`` and ``--lightning-switches`` (the ``SpeedSwitches`` callback) set
ddpm_lightning's side apart from the tutorial's (the GPU target compares the tutorial's fp16 loop
with our fast path); without them both sides run the same precision and DDPMModule's defaults.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import statistics
import tempfile
import warnings
from collections.abc import Iterator
from typing import Any

import _common
import torch
import torch.nn.functional as F
from diffusers import DDPMScheduler, UNet2DModel
from lightning import Callback, Trainer, seed_everything
from lightning.pytorch.loggers import TensorBoardLogger
from torch.utils.data import DataLoader, Dataset
from torch.utils.flop_counter import FlopCounterMode
from tutorial_loop import (
    TrainingConfig,
    make_optimizer_and_schedule,
    train_loop,
    tutorial_dataloader,
    tutorial_dataset,
)

from ddpm_lightning import DDPMModule, ImageDataModule
from ddpm_lightning.callbacks import SpeedSwitches
from ddpm_lightning.utils.precision import LIGHTNING_PRECISION
from ddpm_lightning.utils.tables import markdown_table

TUTORIAL_DOWN = ("DownBlock2D",) * 4 + ("AttnDownBlock2D", "DownBlock2D")
TUTORIAL_UP = ("UpBlock2D", "AttnUpBlock2D") + ("UpBlock2D",) * 4

#: UNet and run settings per preset; ``unet`` is written out in full for the tutorial side.
PRESETS: dict[str, dict[str, Any]] = {
    "tiny": {
        "unet": {
            "sample_size": 32,
            "block_out_channels": (32, 64, 64),
            "layers_per_block": 1,
            "norm_num_groups": 8,
            "down_block_types": ("DownBlock2D", "AttnDownBlock2D", "DownBlock2D"),
            "up_block_types": ("UpBlock2D", "AttnUpBlock2D", "UpBlock2D"),
        },
        "device": "cpu",
        "batch": 16,
        # 35 steps stay inside the first epoch of 52 batches (832 images / 16).
        "warmup_steps": 5,
        "timed_steps": 30,
        "repeats": 3,
    },
    # A UNet that costs almost nothing, so that images/s measures each loop's fixed per-step
    # work (hooks, logging, progress bar, optimizer wrapping): the worst case for a wrapper.
    "micro": {
        "unet": {
            "sample_size": 8,
            "block_out_channels": (8, 8),
            "layers_per_block": 1,
            "norm_num_groups": 4,
            "down_block_types": ("AttnDownBlock2D", "DownBlock2D"),
            "up_block_types": ("UpBlock2D", "AttnUpBlock2D"),
        },
        "device": "cpu",
        "batch": 16,
        "warmup_steps": 5,
        "timed_steps": 40,
        "repeats": 7,
    },
    "tutorial": {
        "unet": {
            "sample_size": 128,
            "block_out_channels": (128, 128, 256, 256, 512, 512),
            "layers_per_block": 2,
            "norm_num_groups": 32,
            "down_block_types": TUTORIAL_DOWN,
            "up_block_types": TUTORIAL_UP,
        },
        "device": "auto",
        "batch": 16,
        "warmup_steps": 10,
        "timed_steps": 40,
        "repeats": 3,
    },
}
#: The tutorial side's precision, as Accelerate's ``mixed_precision`` spells the short names.
ACCELERATE_PRECISION = {name: "no" if name == "fp32" else name for name in LIGHTNING_PRECISION}
VARIANTS = ("tutorial-data", "predecoded")
#: ``SpeedSwitches`` arguments by their benchmark names.
SWITCHES: dict[str, dict[str, Any]] = {
    "channels_last": {"channels_last": True},
    "tf32": {"float32_matmul_precision": "high"},
    "compile": {"compile_unet": True},
}
#: ddpm_lightning / tutorial images/s to reach: Lightning's overhead on the CPU; the fast path
#: against the tutorial's fp16 loop on a GPU.
TARGET_RATIO = {"cpu": 0.97, "cuda": 1.5}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", choices=sorted(PRESETS), default="tiny")
    parser.add_argument("--data-dir", default=str(_common.DEFAULT_DATA_DIR), help="image folder")
    parser.add_argument("--variants", nargs="+", choices=VARIANTS, default=list(VARIANTS))
    parser.add_argument("--batch", type=int, default=None, help="batch size (preset's if unset)")
    parser.add_argument("--warmup-steps", type=int, default=None, help="untimed steps per run")
    parser.add_argument("--timed-steps", type=int, default=None, help="timed steps per run")
    parser.add_argument("--repeats", type=int, default=None, help="runs per side and variant")
    parser.add_argument("--device", default=None, help="cpu, cuda or auto (preset's if unset)")
    parser.add_argument("--precision", choices=sorted(LIGHTNING_PRECISION), default="fp32")
    parser.add_argument(
        "--lightning-precision",
        choices=sorted(LIGHTNING_PRECISION),
        default=None,
        help="ddpm_lightning's precision when it differs from the tutorial's (--precision)",
    )
    parser.add_argument(
        "--lightning-switches",
        nargs="*",
        choices=sorted(SWITCHES),
        default=[],
        help="DDPMModule speed switches for ddpm_lightning's side",
    )
    parser.add_argument("--workers", type=int, default=0, help="DataLoader workers (tutorial: 0)")
    parser.add_argument(
        "--tensorboard", action="store_true", help="log to TensorBoard (a tempdir) on both sides"
    )
    parser.add_argument(
        "--peak-tflops", type=float, default=None, help="the device's peak TFLOP/s, for MFU"
    )
    _common.add_common_arguments(parser, "train_throughput")
    args = parser.parse_args(argv)
    preset = PRESETS[args.preset]
    for name in ("batch", "warmup_steps", "timed_steps", "repeats", "device"):
        if getattr(args, name) is None:
            setattr(args, name, preset[name])
    args.device = _common.resolve_device(args.device)
    args.lightning_precision = args.lightning_precision or args.precision
    return args


# ----------------------------------------------------------------------------- model facts
def unet_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    return {"in_channels": 3, "out_channels": 3, **PRESETS[args.preset]["unet"]}


def make_module(args: argparse.Namespace, **overrides: Any) -> DDPMModule:
    """The preset's UNet as DDPMModule arguments; everything else at its defaults unless
    ``overrides`` (e.g. ``adam_fused``) say otherwise."""
    unet = PRESETS[args.preset]["unet"]
    return DDPMModule(
        image_size=unet["sample_size"],
        block_out_channels=unet["block_out_channels"],
        layers_per_block=unet["layers_per_block"],
        norm_num_groups=unet["norm_num_groups"],
        unet_kwargs={
            "down_block_types": unet["down_block_types"],
            "up_block_types": unet["up_block_types"],
        },
        **overrides,
    )


def switch_kwargs(names: list[str]) -> dict[str, Any]:
    """``SpeedSwitches`` arguments that turn on the named speed switches."""
    return {key: value for name in names for key, value in SWITCHES[name].items()}


def flops_per_image(args: argparse.Namespace) -> float:
    """Forward + backward FLOPs of one image, counted on the meta device (no real compute)."""
    size = PRESETS[args.preset]["unet"]["sample_size"]
    with torch.device("meta"):
        unet = UNet2DModel(**unet_kwargs(args))
        images = torch.randn(1, 3, size, size)
        timesteps = torch.randint(0, 1000, (1,))
    counter = FlopCounterMode(display=False)
    with counter:
        F.mse_loss(unet(images, timesteps).sample, images).backward()
    return float(counter.get_total_flops())


# ----------------------------------------------------------------------------- shared data
class TensorImages(Dataset):
    """Pre-decoded [-1, 1] images as the tutorial's ``{"images": ...}`` items."""

    def __init__(self, images: torch.Tensor) -> None:
        self.images = images

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return {"images": self.images[index]}


def predecode(dataset: Any) -> torch.Tensor:
    """Every image through the tutorial's transform once (its random flips frozen in), stacked."""
    chunks = [dataset[start : start + 64]["images"] for start in range(0, len(dataset), 64)]
    return torch.stack([image for chunk in chunks for image in chunk])


class Data:
    """What both sides read, built once per invocation."""

    def __init__(self, args: argparse.Namespace, cache_dir: str) -> None:
        self.args = args
        self.cache_dir = cache_dir
        size = PRESETS[args.preset]["unet"]["sample_size"]
        self.image_size = size
        self.tutorial = tutorial_dataset(args.data_dir, size, cache_dir=cache_dir)
        self.predecoded = (
            TensorImages(predecode(self.tutorial)) if "predecoded" in args.variants else None
        )

    def tutorial_loader(self, variant: str) -> DataLoader:
        if variant == "predecoded":
            return tutorial_dataloader(self.predecoded, self.args.batch, self.args.workers)
        return tutorial_dataloader(self.tutorial, self.args.batch, self.args.workers)

    def lightning_fit_kwargs(self, variant: str) -> dict[str, Any]:
        if variant == "predecoded":
            return {"train_dataloaders": self.tutorial_loader(variant)}
        datamodule = ImageDataModule(
            dataset_name="imagefolder",
            data_dir=self.args.data_dir,
            image_size=self.image_size,
            train_batch_size=self.args.batch,
            num_workers=self.args.workers,
            seed=self.args.seed,
            cache_dir=self.cache_dir,  # decoded once, in the first run's setup (not timed)
        )
        return {"datamodule": datamodule}


# ----------------------------------------------------------------------------- the two sides
class WindowCallback(Callback):
    """Feeds Lightning's batch hooks to a :class:`_common.StepWindow`, and keeps the losses.

    The losses stay on the device until the run ends: reading each one would add a host-device
    sync per step that the plain run does not have.
    """

    def __init__(self, window: _common.StepWindow) -> None:
        self.window = window
        self.step = 0
        self.losses: list[torch.Tensor] = []

    def on_train_batch_start(
        self, trainer: Trainer, pl_module: Any, batch: Any, batch_idx: int
    ) -> None:
        self.window.step_start(self.step)

    def on_train_batch_end(
        self, trainer: Trainer, pl_module: Any, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        self.losses.append(outputs["loss"].detach())
        self.window.step_end(self.step)
        self.step += 1

    def loss_values(self) -> list[float]:
        return [float(loss) for loss in self.losses]


def run_tutorial(args: argparse.Namespace, data: Data, variant: str, logdir: str) -> dict[str, Any]:
    seed_everything(args.seed, verbose=False)
    window = _common.StepWindow(args.warmup_steps, args.timed_steps, args.device)
    memory = _common.PeakMemory(args.device)
    memory.start()
    config = TrainingConfig(
        image_size=data.image_size,
        train_batch_size=args.batch,
        mixed_precision=ACCELERATE_PRECISION[args.precision],
        output_dir=logdir,
    )
    model = UNet2DModel(**unet_kwargs(args))
    noise_scheduler = DDPMScheduler(num_train_timesteps=1000)
    loader = data.tutorial_loader(variant)
    optimizer, lr_scheduler = make_optimizer_and_schedule(config, model, len(loader))
    losses = train_loop(
        config,
        model,
        noise_scheduler,
        optimizer,
        loader,
        lr_scheduler,
        cpu=args.device == "cpu",
        log_with="tensorboard" if args.tensorboard else None,
        project_dir=f"{logdir}/logs",
        max_steps=window.total_steps,
        on_step_start=window.step_start,
        on_step_end=window.step_end,
    )
    return {"window": window, "peak_memory_mib": memory.stop(), "losses": losses}


def run_lightning(
    args: argparse.Namespace, data: Data, variant: str, logdir: str
) -> dict[str, Any]:
    seed_everything(args.seed, verbose=False)
    window = _common.StepWindow(args.warmup_steps, args.timed_steps, args.device)
    memory = _common.PeakMemory(args.device)
    memory.start()
    module = make_module(args)
    timer = WindowCallback(window)
    switches = SpeedSwitches(**switch_kwargs(args.lightning_switches))
    trainer = Trainer(
        accelerator="gpu" if args.device.startswith("cuda") else "cpu",
        devices=1,
        precision=LIGHTNING_PRECISION[args.lightning_precision],
        max_steps=window.total_steps,
        logger=TensorBoardLogger(logdir) if args.tensorboard else False,
        enable_checkpointing=False,
        enable_progress_bar=True,
        enable_model_summary=False,
        default_root_dir=logdir,
        callbacks=[switches, timer],
    )
    # Last, so the window closes after the progress bar's per-step work, as in the tutorial loop.
    trainer.callbacks.remove(timer)
    trainer.callbacks.append(timer)
    with kept_matmul_precision():
        trainer.fit(module, **data.lightning_fit_kwargs(variant))
    return {"window": window, "peak_memory_mib": memory.stop(), "losses": timer.loss_values()}


@contextlib.contextmanager
def kept_matmul_precision() -> Iterator[None]:
    """Undo a ``tf32`` switch afterwards: it is process-wide, and the next run may be the
    tutorial's, which must keep its own (the default) float32 matmuls."""
    precision = torch.get_float32_matmul_precision()
    try:
        yield
    finally:
        torch.set_float32_matmul_precision(precision)


SIDES = {"tutorial": run_tutorial, "ddpm_lightning": run_lightning}


def describe_sides(args: argparse.Namespace) -> str:
    """Precision (and switches) of each side, for the printed header."""
    ours = args.lightning_precision
    if args.lightning_switches:
        ours += " + " + " + ".join(args.lightning_switches)
    if ours == args.precision:
        return args.precision
    return f"tutorial {args.precision}, ddpm_lightning {ours}"


def check_same_unet(args: argparse.Namespace) -> int:
    """Both sides must train the same network: compare parameter counts."""
    ours = make_module(args).unet
    with torch.device("meta"):
        theirs = UNet2DModel(**unet_kwargs(args))
    count = sum(p.numel() for p in theirs.parameters())
    if dict(ours.config) != dict(theirs.config) or count != sum(
        p.numel() for p in ours.parameters()
    ):
        raise RuntimeError("the two sides would train different UNets")
    return count


def start_run(args: argparse.Namespace) -> dict[str, Any]:
    """Quiet Lightning (its info lines would break the tables), set threads; the machine facts."""
    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", ".*does not have many workers.*")
    _common.set_threads(args.threads)
    return _common.machine_info(args.device)


# ----------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    machine = start_run(args)
    parameters = check_same_unet(args)
    flops = flops_per_image(args)
    print(
        f"{args.preset} UNet: {parameters:,} parameters, "
        f"{flops / 1e9:.3g} GFLOP per image (fwd+bwd); "
        f"{args.device}, {describe_sides(args)}, batch {args.batch}, {args.warmup_steps} "
        f"warm-up + {args.timed_steps} timed steps, {args.repeats} repeats per side",
        flush=True,
    )
    target = TARGET_RATIO["cuda" if args.device.startswith("cuda") else "cpu"]
    results: dict[str, Any] = {
        "benchmark": "train_throughput",
        "machine": machine,
        "arguments": {k: str(v) if k == "output" else v for k, v in vars(args).items()},
        "unet_parameters": parameters,
        "flops_per_image_fwd_bwd": flops,
        "variants": {},
    }
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench_train_") as workdir:
        data = Data(args, cache_dir=f"{workdir}/datasets")
        for variant in args.variants:
            runs: dict[str, list[dict[str, Any]]] = {side: [] for side in SIDES}
            for repeat in range(args.repeats):
                order = list(SIDES) if repeat % 2 == 0 else list(SIDES)[::-1]
                for side in order:
                    logdir = f"{workdir}/{variant}-{side}-{repeat}"
                    load_before = _common.load_average()
                    outcome = SIDES[side](args, data, variant, logdir)
                    window = outcome["window"]
                    run = {
                        "repeat": repeat,
                        "images_per_s": window.images_per_second(args.batch),
                        "window_seconds": window.seconds,
                        "images_per_cpu_s": window.images_per_cpu_second(args.batch),
                        "window_cpu_seconds": window.cpu_seconds,
                        "peak_memory_mib": outcome["peak_memory_mib"],
                        "mean_loss": statistics.fmean(outcome["losses"]),
                        "losses": outcome["losses"],
                        "load_average_before": load_before,
                        "load_average_after": _common.load_average(),
                    }
                    runs[side].append(run)
                    print(
                        f"{variant} repeat {repeat} {side:14s} "
                        f"{run['images_per_s']:8.1f} images/s, "
                        f"peak memory {run['peak_memory_mib']:.0f} MiB, "
                        f"mean loss {run['mean_loss']:.4f}, load {load_before:.1f}",
                        flush=True,
                    )
            summary = {}
            for side, side_runs in runs.items():
                images_per_s = _common.median([r["images_per_s"] for r in side_runs])
                summary[side] = {
                    "median_images_per_s": images_per_s,
                    "median_images_per_cpu_s": _common.median(
                        [r["images_per_cpu_s"] for r in side_runs]
                    ),
                    "peak_memory_mib": max(r["peak_memory_mib"] for r in side_runs),
                    # Over every step of every repeat: one run's mean swings with its timesteps.
                    "mean_loss": statistics.fmean(x for r in side_runs for x in r["losses"]),
                    "achieved_tflops": images_per_s * flops / 1e12,
                    "runs": side_runs,
                }
                if args.peak_tflops:
                    summary[side]["mfu"] = images_per_s * flops / (args.peak_tflops * 1e12)
            ratio = (
                summary["ddpm_lightning"]["median_images_per_s"]
                / summary["tutorial"]["median_images_per_s"]
            )
            summary["ratio"] = ratio
            # Each repeat ran the two sides next to each other: their ratio sees the same load.
            summary["median_paired_ratio"] = _common.median(
                [
                    ours["images_per_s"] / theirs["images_per_s"]
                    for ours, theirs in zip(runs["ddpm_lightning"], runs["tutorial"], strict=True)
                ]
            )
            summary["cpu_time_ratio"] = (
                summary["ddpm_lightning"]["median_images_per_cpu_s"]
                / summary["tutorial"]["median_images_per_cpu_s"]
            )
            summary["loss_ratio"] = (
                summary["ddpm_lightning"]["mean_loss"] / summary["tutorial"]["mean_loss"]
            )
            summary["target_ratio"] = target
            summary["target_met"] = ratio >= target
            results["variants"][variant] = summary
            for side in SIDES:
                entry = summary[side]
                rows.append(
                    [
                        variant,
                        "tutorial loop (Accelerate)"
                        if side == "tutorial"
                        else "ddpm_lightning Trainer.fit",
                        entry["median_images_per_s"],
                        entry["median_images_per_s"] / summary["tutorial"]["median_images_per_s"],
                        summary["median_paired_ratio"] if side != "tutorial" else 1.0,
                        entry["median_images_per_cpu_s"],
                        entry["median_images_per_cpu_s"]
                        / summary["tutorial"]["median_images_per_cpu_s"],
                        entry["peak_memory_mib"],
                        entry["mean_loss"],
                        entry["achieved_tflops"] * 1e3,
                        f"{entry['mfu']:.1%}" if "mfu" in entry else "-",
                    ]
                )
    memory_name = "peak GPU MiB" if args.device.startswith("cuda") else "peak RSS MiB (process)"
    headers = [
        "data",
        "side",
        "images/s (median)",
        "ratio",
        "paired ratio",
        "images/CPU-s",
        "CPU ratio",
        memory_name,
        "mean loss",
        "GFLOP/s",
        "MFU",
    ]
    print()
    print(
        f"{_common.describe_machine(machine)}; {args.preset} preset, "
        f"batch {args.batch}, {describe_sides(args)}, workers {args.workers}, "
        f"{args.timed_steps} timed steps, median of {args.repeats}"
    )
    print(markdown_table(headers, rows))
    for variant, summary in results["variants"].items():
        verdict = "met" if summary["target_met"] else "NOT met"
        print(
            f"{variant}: ddpm_lightning / tutorial = {summary['ratio']:.3f} "
            f"(target >= {summary['target_ratio']}: {verdict}); paired "
            f"{summary['median_paired_ratio']:.3f}, CPU time {summary['cpu_time_ratio']:.3f}; "
            f"mean loss ratio {summary['loss_ratio']:.3f}"
        )
    _common.write_json(args.output, results)
    return results


if __name__ == "__main__":
    main()
