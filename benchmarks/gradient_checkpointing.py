"""Peak memory and speed of the ``gradient_checkpointing`` speed switch, against it off.

Each measurement runs in a fresh child process, so its peak resident memory (``ru_maxrss``) is
its own and not what an earlier run left allocated. A child builds the UNet (the switch set
with ``apply_speed_switches``, as the ``SpeedSwitches`` callback does in a Trainer), trains
``--steps`` steps on fixed random images with ``DDPMModule.diffusion_loss`` and AdamW, and
reports: peak RSS, the bytes autograd keeps for the backward pass of one step (counted with
``torch.autograd.graph.saved_tensors_hooks``: the activation memory the switch trades away),
images/s over the steps after the first, and every step's loss (both sides draw the same noise,
so the curves must agree). Sides alternate (off on, on off, ...); medians of ``--repeats``.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from typing import Any

import _common


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--image-size", type=int, default=128)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--steps", type=int, default=6, help="steps per run (the first untimed)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--block-out-channels", type=int, nargs="+", default=[32, 64, 128, 128])
    parser.add_argument("--child", choices=("off", "on"), help=argparse.SUPPRESS)
    _common.add_common_arguments(parser, "gradient_checkpointing")
    return parser.parse_args(argv)


def child(args: argparse.Namespace) -> dict[str, Any]:
    """One run in this process: memory, speed and losses with the switch ``args.child``."""
    import torch

    from ddpm_lightning import DDPMModule
    from ddpm_lightning.callbacks import SpeedSwitches
    from ddpm_lightning.callbacks.speed_switches import apply_speed_switches

    _common.set_threads(args.threads)
    torch.manual_seed(args.seed)
    module = DDPMModule(
        image_size=args.image_size,
        block_out_channels=tuple(args.block_out_channels),
        layers_per_block=1,
        norm_num_groups=8,
    )
    apply_speed_switches(module.unet, SpeedSwitches(gradient_checkpointing=args.child == "on"))
    optimizer = torch.optim.AdamW(module.unet.parameters(), lr=1e-4)
    images = torch.rand(args.batch, 3, args.image_size, args.image_size) * 2 - 1
    losses, saved_bytes, started = [], 0, 0.0

    def count(tensor: torch.Tensor) -> torch.Tensor:
        nonlocal saved_bytes
        saved_bytes += tensor.numel() * tensor.element_size()
        return tensor

    for step in range(args.steps):
        if step == 1:
            started = time.perf_counter()
        noise, timesteps = module.sample_noise(images, step)
        if step == 0:  # count what autograd keeps for the backward pass of one step
            with torch.autograd.graph.saved_tensors_hooks(count, lambda tensor: tensor):
                loss = module.diffusion_loss(images, noise, timesteps)
        else:
            loss = module.diffusion_loss(images, noise, timesteps)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(loss.item())
    seconds = time.perf_counter() - started
    return {
        "gradient_checkpointing": args.child == "on",
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "saved_for_backward_mib": saved_bytes / 2**20,
        "images_per_s": args.batch * (args.steps - 1) / seconds,
        "losses": losses,
    }


def run_child(args: argparse.Namespace, switch: str) -> dict[str, Any]:
    command = [sys.executable, __file__, "--child", switch, "--threads", str(args.threads)]
    command += ["--image-size", str(args.image_size), "--batch", str(args.batch)]
    command += ["--steps", str(args.steps), "--seed", str(args.seed), "--block-out-channels"]
    command += [str(channels) for channels in args.block_out_channels]
    output = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    return json.loads(output.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    if args.child:
        print(json.dumps(child(args)))
        return {}
    _common.set_threads(args.threads)
    machine = _common.machine_info("cpu")
    runs: dict[str, list[dict[str, Any]]] = {"off": [], "on": []}
    for repeat in range(args.repeats):
        for switch in ("off", "on") if repeat % 2 == 0 else ("on", "off"):
            run = run_child(args, switch)
            runs[switch].append(run)
            print(
                f"repeat {repeat} gradient_checkpointing={switch}: peak RSS "
                f"{run['peak_rss_mib']:.0f} MiB, saved for backward "
                f"{run['saved_for_backward_mib']:.0f} MiB, {run['images_per_s']:.2f} images/s",
                flush=True,
            )
    summary = {
        switch: {
            key: _common.median([run[key] for run in side])
            for key in ("peak_rss_mib", "saved_for_backward_mib", "images_per_s")
        }
        for switch, side in runs.items()
    }
    off, on = summary["off"], summary["on"]
    loss_difference = max(
        abs(a - b) / abs(b) for a, b in zip(runs["on"][0]["losses"], runs["off"][0]["losses"])
    )
    rows = [
        [switch, s["peak_rss_mib"], s["saved_for_backward_mib"], s["images_per_s"],
         s["peak_rss_mib"] / off["peak_rss_mib"], s["images_per_s"] / off["images_per_s"]]
        for switch, s in summary.items()
    ]  # fmt: skip
    headers = ["gradient_checkpointing", "peak RSS MiB", "saved for backward MiB", "images/s",
               "peak RSS ratio", "speed ratio"]  # fmt: skip
    print()
    print(
        f"{_common.describe_machine(machine)}; {args.image_size} px, batch {args.batch}, UNet "
        f"{tuple(args.block_out_channels)}, median of {args.repeats} fresh processes per side"
    )
    # Imported only now: a child's ru_maxrss counts its parent's resident memory at the spawn
    # (the child starts as the parent's copy), so the parent loads no more than it must first.
    from ddpm_lightning.utils.tables import markdown_table

    print(markdown_table(headers, rows))
    print(f"largest relative per-step loss difference: {loss_difference:.2e}")
    results = {
        "benchmark": "gradient_checkpointing",
        "machine": machine,
        "arguments": {k: str(v) for k, v in vars(args).items()},
        "runs": runs,
        "summary": summary,
        "peak_rss_ratio": on["peak_rss_mib"] / off["peak_rss_mib"],
        "saved_for_backward_ratio": on["saved_for_backward_mib"] / off["saved_for_backward_mib"],
        "speed_ratio": on["images_per_s"] / off["images_per_s"],
        "max_relative_loss_difference": loss_difference,
    }
    _common.write_json(args.output, results)
    return results


if __name__ == "__main__":
    main()
