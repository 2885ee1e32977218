"""Seconds to generate images with each sampler, against the tutorial's 1,000 DDPM steps.

Sampling cost is UNet calls times the cost of one call, so the speed-up of a sampler is mostly
1000 / its steps; this measures what is left after the schedulers' own per-step work, and
checks that ``DDPMModule.generate`` costs what diffusers' ``DDPMPipeline`` costs.
The default preset (tiny UNet, 32 px) runs on two CPU cores in a few minutes; the ``tutorial``
preset (the 113M-parameter UNet at 128 px) is for a GPU.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from typing import Any

import _common
import torch
from diffusers import DDPMPipeline, DDPMScheduler
from lightning import seed_everything

from ddpm_lightning import DDPMModule
from ddpm_lightning.errors import InvalidSettingError
from ddpm_lightning.formulations import DDPMFormulation
from ddpm_lightning.sampling import parse_sampler_steps
from ddpm_lightning.utils.precision import LIGHTNING_PRECISION, autocast_context
from ddpm_lightning.utils.tables import markdown_table

#: UNet presets, as DDPMModule arguments (the tutorial preset is DDPMModule's default UNet).
PRESETS: dict[str, dict[str, Any]] = {
    # Smaller than the training benchmark's tiny UNet: 2 x 1,000 UNet calls must fit in a few
    # minutes on two cores. A cheap UNet also makes the schedulers' own per-step work weigh
    # more, so the speed-ups measured here are on the low side.
    "tiny": {
        "image_size": 32,
        "block_out_channels": (16, 32, 32),
        "layers_per_block": 1,
        "norm_num_groups": 8,
    },
    "tutorial": {"image_size": 128},
}
DEFAULT_RUNS = ("ddpm:1000", "ddim:50", "dpm-solver++:20", "unipc:20")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", choices=sorted(PRESETS), default="tiny")
    parser.add_argument("--num-images", type=int, default=16, help="images to generate per sampler")
    parser.add_argument(
        "--batch", type=int, default=None, help="images per generate call (all if unset)"
    )
    parser.add_argument(
        "--device", default="auto", help="cpu, cuda, cuda:1, ... (auto: cuda if present)"
    )
    parser.add_argument(
        "--precision",
        choices=sorted(LIGHTNING_PRECISION),
        default="fp32",
        help="torch.autocast dtype",
    )
    parser.add_argument(
        "--runs",
        nargs="+",
        default=list(DEFAULT_RUNS),
        help="sampler:steps pairs; the first must be ddpm:<steps>, the reference of the speed-ups",
    )
    parser.add_argument(
        "--repeats", type=int, default=3, help="timings of each few-step sampler (median)"
    )
    parser.add_argument(
        "--ddpm-repeats",
        type=int,
        default=1,
        help="timings of the first (1,000-step) run and the pipeline",
    )
    parser.add_argument(
        "--skip-pipeline",
        action="store_true",
        help="skip the tutorial's DDPMPipeline baseline (it costs as much as the ddpm run)",
    )
    _common.add_common_arguments(parser, "sampling")
    args = parser.parse_args(argv)
    # The benchmark's module trains the default (DDPM) formulation: its samplers and step limit.
    samplers = DDPMFormulation().sampler_family()
    try:
        args.runs = [parse_sampler_steps(run) for run in args.runs]
        for name, steps in args.runs:
            samplers.check(name, steps)
    except InvalidSettingError as error:
        parser.error(str(error))
    if args.runs[0][0] != "ddpm":
        parser.error("the first --runs entry must be ddpm:<steps>: speed-ups are relative to it")
    args.batch = args.batch or args.num_images
    return args


def batch_sizes(total: int, batch: int) -> Iterator[int]:
    for start in range(0, total, batch):
        yield min(batch, total - start)


def time_call(
    generate_batch: Callable[[int, int], Any],
    args: argparse.Namespace,
    device: str,
    repeats: int,
    autocast: Callable[[], AbstractContextManager],
) -> float:
    """Seconds to generate ``num_images`` in batches of ``batch`` (median over repeats)."""
    timings = []
    for _ in range(repeats):
        _common.synchronize(device)
        started = time.perf_counter()
        for index, size in enumerate(batch_sizes(args.num_images, args.batch)):
            with autocast():
                generate_batch(size, args.seed + index)
        _common.synchronize(device)
        timings.append(time.perf_counter() - started)
    return _common.median(timings)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    device = _common.resolve_device(args.device)
    autocast = autocast_context(args.precision, device)
    _common.set_threads(args.threads)
    seed_everything(args.seed, verbose=False)
    module = DDPMModule(**PRESETS[args.preset]).to(device).eval()
    parameters = sum(p.numel() for p in module.unet.parameters())
    machine = _common.machine_info(device)
    print(
        f"{args.preset} UNet ({parameters:,} parameters, {module.hparams.image_size} px) "
        f"on {device}, "
        f"{args.precision}, {args.num_images} images in batches of {args.batch}",
        flush=True,
    )

    def ours(name: str, steps: int) -> Callable[[int, int], Any]:
        return lambda size, seed: module.generate(
            size, seed=seed, num_inference_steps=steps, sampler=name
        )

    pipeline = DDPMPipeline(
        unet=module.unet, scheduler=DDPMScheduler.from_config(module.noise_scheduler.config)
    )
    # Its tqdm bar would only add noise to the output; the sampling loop is what is compared.
    pipeline.set_progress_bar_config(disable=True)

    def tutorial(steps: int) -> Callable[[int, int], Any]:
        def generate(size: int, seed: int) -> Any:
            generator = torch.Generator("cpu").manual_seed(seed)
            return pipeline(batch_size=size, generator=generator, num_inference_steps=steps).images

        return generate

    # Warm up every code path (allocator, kernels, scheduler tables) outside the timings.
    for name, _ in args.runs:
        with autocast():
            module.generate(args.batch, seed=args.seed, num_inference_steps=3, sampler=name)

    measured: list[dict[str, Any]] = []
    ddpm_steps = args.runs[0][1]
    if not args.skip_pipeline:
        load = _common.load_average()
        seconds = time_call(tutorial(ddpm_steps), args, device, args.ddpm_repeats, autocast)
        measured.append(
            {
                "name": f"tutorial DDPMPipeline {ddpm_steps}",
                "sampler": "ddpm",
                "steps": ddpm_steps,
                "seconds": seconds,
                "side": "tutorial",
                "load_average_before": load,
            }
        )
        print(f"  {measured[-1]['name']}: {seconds:.2f} s", flush=True)
    for index, (name, steps) in enumerate(args.runs):
        repeats = args.ddpm_repeats if index == 0 else args.repeats
        load = _common.load_average()
        seconds = time_call(ours(name, steps), args, device, repeats, autocast)
        measured.append(
            {
                "name": f"DDPMModule.generate {name} {steps}",
                "sampler": name,
                "steps": steps,
                "seconds": seconds,
                "side": "ddpm_lightning",
                "load_average_before": load,
            }
        )
        print(f"  {measured[-1]['name']}: {seconds:.2f} s", flush=True)

    reference = next(
        m for m in measured if m["side"] == "ddpm_lightning" and m["sampler"] == "ddpm"
    )
    for entry in measured:
        entry["speedup_vs_ddpm"] = reference["seconds"] / entry["seconds"]
        entry["seconds_per_image"] = entry["seconds"] / args.num_images
        entry["unet_calls_per_s"] = (
            entry["steps"] * len(list(batch_sizes(args.num_images, args.batch))) / entry["seconds"]
        )
    dpm = next((m for m in measured if m["sampler"] == "dpm-solver++"), None)
    results: dict[str, Any] = {
        "benchmark": "sampling",
        "machine": machine,
        "arguments": {k: str(v) if k == "output" else v for k, v in vars(args).items()},
        "unet_parameters": parameters,
        "image_size": module.hparams.image_size,
        "runs": measured,
    }
    if dpm is not None:
        results["target_dpm_solver_speedup"] = 40.0
        results["target_met"] = dpm["speedup_vs_ddpm"] >= 40.0

    headers = ["sampler", "steps", "seconds", "s / image", "speed-up vs DDPM", "UNet calls/s"]
    rows = [
        [
            m["name"],
            m["steps"],
            m["seconds"],
            m["seconds_per_image"],
            m["speedup_vs_ddpm"],
            m["unet_calls_per_s"],
        ]
        for m in measured
    ]
    print()
    print(
        f"{_common.describe_machine(machine)}; {args.preset} preset, "
        f"{args.num_images} images, batch {args.batch}, {args.precision}"
    )
    print(markdown_table(headers, rows))
    if dpm is not None:
        verdict = "met" if results["target_met"] else "NOT met"
        print(
            f"DPM-Solver++ {dpm['steps']} steps: {dpm['speedup_vs_ddpm']:.1f}x faster than "
            f"DDPM {ddpm_steps} (target >= 40x: {verdict})"
        )
    _common.write_json(args.output, results)
    return results


if __name__ == "__main__":
    main()
