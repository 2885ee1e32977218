"""Each speed switch measured against the defaults, with its loss curve.

The switches: the ``SpeedSwitches`` callback's (channels_last, tf32, compile), the precision,
the fused AdamW and the attention kernel.

Every configuration trains the same UNet from the same seed on the same pre-decoded images in
the same order. DDPMModule draws each step's noise and timesteps from a generator seeded by the
step, so every configuration sees the very same inputs at every step: their per-step losses
differ only by what the switch changes in the arithmetic. A switch that is faster but trains
another loss curve is reported as such, never as a win.

After training, each configuration also samples a batch of images with DPM-Solver++ (the
grids' fast sampler) under its own precision and switches, so ``compile`` is measured for
sampling as well as training.

The first ``--configs`` entry is the reference of the ratios (``defaults``: DDPMModule as it
is, at ``--precision``). Runs alternate in order (A B C, C B A, ...) so drift cancels.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from dataclasses import dataclass, field
from typing import Any

import _common
import torch
from diffusers.models.attention_processor import Attention, AttnProcessor
from lightning import Trainer, seed_everything
from train_throughput import (
    PRESETS,
    SWITCHES,
    Data,
    WindowCallback,
    flops_per_image,
    make_module,
    start_run,
)

from ddpm_lightning.callbacks import SpeedSwitches
from ddpm_lightning.utils.precision import LIGHTNING_PRECISION
from ddpm_lightning.utils.tables import markdown_table


@dataclass(frozen=True)
class Config:
    """One way to train: DDPMModule and SpeedSwitches arguments, a precision, the attention."""

    module: dict[str, Any] = field(default_factory=dict)
    switches: dict[str, Any] = field(default_factory=dict)  # SpeedSwitches (a Trainer callback)
    precision: str | None = None  # --precision when None
    sdpa_attention: bool = True  # False: diffusers' classic attention (matmul, softmax, matmul)
    description: str = ""


CONFIGS: dict[str, Config] = {
    "defaults": Config(description="DDPMModule's defaults (fused AdamW on CUDA, SDPA attention)"),
    "channels_last": Config(switches=SWITCHES["channels_last"], description="channels-last UNet"),
    "tf32": Config(switches=SWITCHES["tf32"], description="TF32 float32 matmuls"),
    "compile": Config(switches=SWITCHES["compile"], description="torch.compile of the UNet"),
    "unfused_adamw": Config({"adam_fused": False}, description="AdamW without the fused kernel"),
    "eager_attention": Config(sdpa_attention=False, description="attention without SDPA"),
    "fp32": Config(precision="fp32", description="32-true"),
    "bf16": Config(precision="bf16", description="bf16-mixed"),
    "fp16": Config(precision="fp16", description="16-mixed"),
    "fast": Config(
        switches={**SWITCHES["channels_last"], **SWITCHES["tf32"], **SWITCHES["compile"]},
        precision="bf16",
        description="bf16-mixed + channels_last + tf32 + compile",
    ),
}
#: Without ``compile`` (minutes of compilation on a CPU) and ``fast`` (which contains it).
CPU_CONFIGS = ("defaults", "channels_last", "tf32", "unfused_adamw", "eager_attention", "bf16")
GPU_CONFIGS = (
    "defaults",
    "channels_last",
    "tf32",
    "compile",
    "unfused_adamw",
    "eager_attention",
    "fp16",
    "bf16",
    "fast",
)
#: Median per-step relative loss difference above which a configuration "trains another loss".
LOSS_TOLERANCE = 0.02


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", choices=sorted(PRESETS), default="tiny")
    parser.add_argument("--data-dir", default=str(_common.DEFAULT_DATA_DIR), help="image folder")
    parser.add_argument(
        "--configs",
        nargs="+",
        choices=sorted(CONFIGS),
        default=None,
        help="configurations to run, the reference first (default: a CPU or a GPU list)",
    )
    parser.add_argument("--precision", choices=sorted(LIGHTNING_PRECISION), default="fp32")
    parser.add_argument("--batch", type=int, default=None, help="batch size (preset's if unset)")
    parser.add_argument("--warmup-steps", type=int, default=None, help="untimed steps per run")
    parser.add_argument("--timed-steps", type=int, default=None, help="timed steps per run")
    parser.add_argument("--repeats", type=int, default=2, help="runs per configuration")
    parser.add_argument("--device", default=None, help="cpu, cuda or auto (preset's if unset)")
    parser.add_argument(
        "--peak-tflops", type=float, default=None, help="the device's peak TFLOP/s, for MFU"
    )
    parser.add_argument(
        "--sampling-steps",
        type=int,
        default=20,
        help="DPM-Solver++ steps of the timed sampling after training (0: no sampling)",
    )
    _common.add_common_arguments(parser, "speed_switches")
    args = parser.parse_args(argv)
    preset = PRESETS[args.preset]
    for name in ("batch", "warmup_steps", "timed_steps", "device"):
        if getattr(args, name) is None:
            setattr(args, name, preset[name])
    args.device = _common.resolve_device(args.device)
    if args.configs is None:
        args.configs = list(GPU_CONFIGS if args.device.startswith("cuda") else CPU_CONFIGS)
    # Data.predecoded is all this script reads; these keep Data's interface.
    args.variants, args.workers = ["predecoded"], 0
    return args


def run_config(args: argparse.Namespace, data: Data, config: Config, logdir: str) -> dict:
    """Train one configuration for the window's steps; speed, memory and every step's loss."""
    matmul_precision = torch.get_float32_matmul_precision()  # tf32 sets it process-wide
    seed_everything(args.seed, verbose=False)
    window = _common.StepWindow(args.warmup_steps, args.timed_steps, args.device)
    memory = _common.PeakMemory(args.device)
    memory.start()
    module = make_module(args, **config.module)
    if not config.sdpa_attention:
        for layer in module.unet.modules():
            if isinstance(layer, Attention):
                layer.set_processor(AttnProcessor())
    timer = WindowCallback(window)
    trainer = Trainer(
        accelerator="gpu" if args.device.startswith("cuda") else "cpu",
        devices=1,
        precision=LIGHTNING_PRECISION[config.precision or args.precision],
        max_steps=window.total_steps,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=True,
        enable_model_summary=False,
        default_root_dir=logdir,
        callbacks=[SpeedSwitches(**config.switches), timer],
    )
    try:
        trainer.fit(module, train_dataloaders=data.tutorial_loader("predecoded"))
        peak_memory = memory.stop()
        sampling_seconds = time_sampling(args, trainer, module)
    finally:
        torch.set_float32_matmul_precision(matmul_precision)
    return {
        "images_per_s": window.images_per_second(args.batch),
        "window_seconds": window.seconds,
        "peak_memory_mib": peak_memory,
        "losses": timer.loss_values(),
        "sampling_seconds": sampling_seconds,
    }


def time_sampling(args: argparse.Namespace, trainer: Trainer, module: Any) -> float | None:
    """Seconds to sample one batch with DPM-Solver++, as the sample-grid callback does."""
    if not args.sampling_steps:
        return None
    with trainer.precision_plugin.forward_context():
        # Untimed: compiles the UNet for inference (with compile) and warms the kernels.
        module.generate(args.batch, sampler="dpm-solver++", num_inference_steps=2)
        _common.synchronize(args.device)
        started = time.perf_counter()
        module.generate(args.batch, sampler="dpm-solver++", num_inference_steps=args.sampling_steps)
        _common.synchronize(args.device)
    return time.perf_counter() - started


def loss_difference(losses: list[float], reference: list[float]) -> dict[str, float]:
    """Per-step relative differences of two loss curves over the same inputs."""
    relative = [abs(a - b) / abs(b) for a, b in zip(losses, reference, strict=True)]
    return {"median_relative": _common.median(relative), "max_relative": max(relative)}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    machine = start_run(args)
    flops = flops_per_image(args)
    reference_name = args.configs[0]
    print(
        f"{args.preset} UNet, {flops / 1e9:.3g} GFLOP per image (fwd+bwd); {args.device}, "
        f"base precision {args.precision}, batch {args.batch}, {args.warmup_steps} warm-up + "
        f"{args.timed_steps} timed steps, {args.repeats} repeats; reference: {reference_name}",
        flush=True,
    )
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in args.configs}
    with tempfile.TemporaryDirectory(prefix="bench_switches_") as workdir:
        data = Data(args, cache_dir=f"{workdir}/datasets")
        for repeat in range(args.repeats):
            order = args.configs if repeat % 2 == 0 else args.configs[::-1]
            for name in order:
                run = run_config(args, data, CONFIGS[name], f"{workdir}/{name}-{repeat}")
                run["repeat"] = repeat
                runs[name].append(run)
                print(
                    f"repeat {repeat} {name:16s} {run['images_per_s']:9.1f} images/s, "
                    f"peak memory {run['peak_memory_mib']:.0f} MiB, "
                    f"mean loss {statistics.fmean(run['losses']):.4f}",
                    flush=True,
                )

    reference_speed = _common.median([r["images_per_s"] for r in runs[reference_name]])
    reference_losses = runs[reference_name][0]["losses"]
    reference_sampling = _common.median(
        [r["sampling_seconds"] or 0.0 for r in runs[reference_name]]
    )
    summary: dict[str, Any] = {}
    rows = []
    for name in args.configs:
        config_runs = runs[name]
        speed = _common.median([r["images_per_s"] for r in config_runs])
        paired = _common.median(
            [
                run["images_per_s"] / reference["images_per_s"]
                for run, reference in zip(config_runs, runs[reference_name], strict=True)
            ]
        )
        difference = loss_difference(config_runs[0]["losses"], reference_losses)
        sampling = _common.median([r["sampling_seconds"] or 0.0 for r in config_runs])
        entry = {
            "description": CONFIGS[name].description,
            "precision": CONFIGS[name].precision or args.precision,
            "median_images_per_s": speed,
            "ratio": speed / reference_speed,
            "median_paired_ratio": paired,
            "peak_memory_mib": max(r["peak_memory_mib"] for r in config_runs),
            "sampling_seconds": sampling or None,
            "loss_difference": difference,
            "same_loss_curve": difference["median_relative"] <= LOSS_TOLERANCE,
            "runs": config_runs,
        }
        if args.peak_tflops:
            entry["mfu"] = speed * flops / (args.peak_tflops * 1e12)
        summary[name] = entry
        rows.append(
            [
                name,
                entry["precision"],
                speed,
                entry["ratio"],
                paired,
                entry["peak_memory_mib"],
                f"{entry['mfu']:.1%}" if "mfu" in entry else "-",
                f"{difference['median_relative']:.2%}",
                f"{difference['max_relative']:.2%}",
                "yes" if entry["same_loss_curve"] else "NO",
                sampling or "-",
                reference_sampling / sampling if sampling else "-",
            ]
        )
    memory_name = "peak GPU MiB" if args.device.startswith("cuda") else "peak RSS MiB (process)"
    headers = [
        "configuration",
        "precision",
        "images/s (median)",
        f"ratio to {reference_name}",
        "paired ratio",
        memory_name,
        "MFU",
        "loss diff (median)",
        "loss diff (max)",
        f"same loss (median diff <= {LOSS_TOLERANCE:.0%})",
        f"sampling s ({args.batch} images, DPM-Solver++ {args.sampling_steps})",
        "sampling speed-up",
    ]
    print()
    print(
        f"{_common.describe_machine(machine)}; {args.preset} preset, batch {args.batch}, "
        f"{args.timed_steps} timed steps, median of {args.repeats}; per-step loss differences "
        f"against {reference_name} over {len(reference_losses)} steps"
    )
    print(markdown_table(headers, rows))
    results = {
        "benchmark": "speed_switches",
        "machine": machine,
        "arguments": {k: str(v) if k == "output" else v for k, v in vars(args).items()},
        "flops_per_image_fwd_bwd": flops,
        "reference": reference_name,
        "loss_tolerance": LOSS_TOLERANCE,
        "configs": summary,
    }
    _common.write_json(args.output, results)
    return results


if __name__ == "__main__":
    main()
