"""The figures of one ``benchmarks/gpu/checks.sh`` run, as Markdown, against issue #7's targets.

Reads the JSON files the stages wrote (a stage that did not finish is reported as missing), so
one short text carries everything needed for BENCHMARKS.md and the issue's closing note.

    python benchmarks/gpu/summary.py OUT_DIR
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def load(out: Path, name: str) -> dict | None:
    path = out / name
    return json.loads(path.read_text()) if path.is_file() else None


def met(flag: bool | None) -> str:
    return {True: "met", False: "NOT met", None: "no target"}[flag]


def percent(value: float | None) -> str:
    return "-" if value is None else f"{value:.1%}"


def machine_line(result: dict) -> str:
    machine = result["machine"]
    versions = machine.get("versions", {})
    return (
        f"Machine: {machine.get('gpu', machine['cpu_model'])}, {machine['date_utc']}, "
        f"torch {versions.get('torch')}, lightning {versions.get('lightning')}, "
        f"diffusers {versions.get('diffusers')}, commit {machine['source']['git_commit'][:10]}"
    )


def head(title: str, result: dict, columns: list[str], *notes: str) -> list[str]:
    """A section's title, machine, notes and table header."""
    return [
        f"## {title}",
        machine_line(result),
        *notes,
        "",
        "| " + " | ".join(columns) + " |",
        "|" + "---|" * len(columns),
    ]


MISSING = "missing (the stage did not finish)"


def train_section(title: str, result: dict | None) -> list[str]:
    if result is None:
        return [f"## {title}", MISSING, ""]
    columns = ["data", "tutorial img/s", "ours img/s", "ratio", "loss ratio", "MFU ours", "target"]
    lines = head(title, result, columns)
    for variant, entry in result["variants"].items():
        ours = entry["ddpm_lightning"]
        tutorial = entry.get("tutorial", {})
        lines.append(
            f"| {variant} | {tutorial.get('median_images_per_s', 0):.1f} | "
            f"{ours['median_images_per_s']:.1f} | {entry.get('ratio', float('nan')):.3f}x | "
            f"{entry.get('loss_ratio', float('nan')):.4f} | {percent(ours.get('mfu'))} | "
            f"{met(entry.get('target_met'))} (>= {entry.get('target_ratio')}x) |"
        )
    return [*lines, ""]


def switches_section(title: str, result: dict | None) -> list[str]:
    if result is None:
        return [f"## {title}", MISSING, ""]
    columns = ["config", "img/s ratio", "MFU", "sampling s", "loss diff (max)", "same loss curve"]
    lines = head(title, result, columns)
    for name, entry in result["configs"].items():
        lines.append(
            f"| {name} | {entry['ratio']:.3f}x | {percent(entry.get('mfu'))} | "
            f"{entry.get('sampling_seconds', float('nan')):.3f} | "
            f"{percent(entry['loss_difference']['max_relative'])} | {entry['same_loss_curve']} |"
        )
    return [*lines, ""]


def sampling_section(result: dict | None) -> list[str]:
    if result is None:
        return ["## Sampling", MISSING, ""]
    title = f"Sampling ({result['arguments'].get('num_images', 16)} images)"
    lines = head(title, result, ["run", "seconds", "speed-up vs DDPM"])
    for run in result["runs"]:
        lines.append(f"| {run['name']} | {run['seconds']:.2f} | {run['speedup_vs_ddpm']:.1f}x |")
    target = result.get("target_dpm_solver_speedup")
    return [*lines, f"DPM-Solver++ >= {target}x DDPM: {met(result.get('target_met'))}", ""]


def data_section(result: dict | None) -> list[str]:
    title = "Data against training consumption"
    if result is None:
        return [f"## {title}", MISSING, ""]
    consumed = result["arguments"].get("train_images_per_s") or 0
    columns = ["workers", "tutorial img/s", "ours img/s", "ratio", "x training consumption"]
    note = f"Training consumes {consumed:.1f} img/s (train_fast stage, ddpm_lightning side)."
    lines = head(title, result, [*columns, ">= 10x"], note)
    for workers, entry in result["by_workers"].items():
        times = entry.get("times_training_consumption")
        lines.append(
            f"| {workers} | {entry['tutorial']['summary']['second_epoch_images_per_s']:.0f} | "
            f"{entry['ddpm_lightning']['summary']['second_epoch_images_per_s']:.0f} | "
            f"{entry['second_epoch_ratio']:.1f}x | "
            f"{'-' if times is None else f'{times:.1f}x'} | "
            f"{'-' if times is None else met(times >= 10)} |"
        )
    return [*lines, ""]


def speed_text(images_per_s: float) -> str:
    """Three significant digits for slow (CPU) figures, one decimal for fast ones."""
    return f"{images_per_s:.3g}" if images_per_s < 10 else f"{images_per_s:.1f}"


def latent_section(result: dict | None) -> list[str]:
    if result is None:
        return ["## Latent against pixel training", MISSING, ""]
    arguments = result["arguments"]
    title = f"Latent against pixel training at {arguments['image_size']} px"
    note = (
        f"{result['num_images']} images, batch {arguments['batch_size']}, {result['precision']}, "
        f"UNet {tuple(arguments['block_out_channels'])}; peak memory: {result['memory_kind']}."
    )
    columns = ["variant", "img/s", "vs pixel", "peak MiB", "vs pixel", "cache encoding s"]
    lines = head(title, result, columns, note)
    encoding = result.get("cache_encoding") or {}
    for variant, entry in result["variants"].items():
        speed, memory = entry.get("images_per_s_vs_pixel"), entry.get("peak_training_mib_vs_pixel")
        seconds = encoding.get("seconds") if variant == "latent-cached" else None
        lines.append(
            f"| {variant} | {speed_text(entry['images_per_s'])} | "
            f"{'-' if speed is None else f'{speed:.2f}x'} | {entry['peak_training_mib']:,.0f} | "
            f"{'-' if memory is None else f'{memory:.2f}x'} | "
            f"{'-' if seconds is None else f'{seconds:.1f}'} |"
        )
    headline = result.get("headline", {})
    every_step = headline.get("latent_cached_vs_encode_every_step_images_per_s")
    if every_step is not None:
        lines += ["", f"Cached latents against encoding every step: {every_step:.2f}x images/s."]
    return [*lines, ""]


def main(out: Path) -> None:
    lines = [f"# GPU checks: {out}", ""]
    stages = out / "stages.txt"
    lines += ["```", stages.read_text().strip() if stages.is_file() else "no stages.txt", "```", ""]
    tests_log = out / "tests.log"
    if tests_log.is_file():
        tail = [line for line in tests_log.read_text().splitlines() if line.strip()][-1:]
        lines += ["## pytest -m gpu", f"`{tail[0] if tail else 'empty log'}`", ""]
    lines += train_section("Training, fp16 both sides (batch 16)", load(out, "train_fp16.json"))
    lines += train_section(
        "Training, tutorial fp16 against the fast path", load(out, "train_fast.json")
    )
    lines += latent_section(load(out, "latent.json"))
    lines += train_section("Training at a larger batch (MFU)", load(out, "train_batch.json"))
    lines += switches_section("Speed switches", load(out, "switches.json"))
    lines += sampling_section(load(out, "sampling.json"))
    lines += data_section(load(out, "data.json"))
    lines += switches_section("torch.compile", load(out, "compile.json"))
    print("\n".join(lines))


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    main(Path(sys.argv[1]))
