"""Training images/s and peak memory at 256 px: latent diffusion against pixels, same UNet.

Three variants, each a real ``Trainer.fit`` of ``DDPMModule`` on ``ImageDataModule`` with the
same UNet widths, batch size, precision and number of warm-up and timed steps:

- ``pixel``: the UNet on 256 px images (decoded once into the ``datasets`` cache);
- ``latent-cached``: ``DDPMModule(autoencoder=...)`` on the latents cached by
  ``ImageDataModule.cache_latents`` (each step draws ``mean + std * noise``). The one-off
  encoding of the cache is measured apart: a first child process runs a real fit that stops
  before its first step and times ``cache_latents`` inside the module's ``setup``; the training
  child then reads that cache;
- ``latent-encode-every-step``: the same module on ``ImageDataModule(streaming=True)``, which
  has no cache, so the module encodes every batch's pixels (``LatentSpace.encode``); streaming
  also decodes the JPEGs on the fly (the "data wait" column shows what fetching costs).

The autoencoder is ``stabilityai/sd-vae-ft-mse``'s architecture (f = 8, 4 latent channels: 256
px images become 4 x 32 x 32 latents) built from its config with random weights (the same
compute and memory as the real one), written with ``save_pretrained`` and loaded by
``DDPMModule(autoencoder=folder)``; ``--autoencoder PATH`` uses a downloaded one instead.

Every run is a fresh child process; all share one fresh ``datasets`` cache per invocation
(``--cache-dir`` to keep one). Images/s counts the images of the timed steps, from the start of
the first to the end of the last. Peak memory covers training (from ``on_train_start`` to the
end, so not the setup or the encoding of the cache): ``torch.cuda.max_memory_allocated`` on
CUDA; on the CPU the process's peak resident memory (``VmHWM``, reset through
``/proc/self/clear_refs`` at ``on_train_start``; Python, torch and the data included), with
the process's peak over setup and training beside it.

    .venv/bin/python benchmarks/latent_throughput.py --threads 1
        (CPU, the small preset: batch 2, 1 + 3 steps, 8 images; about 4.5 minutes on 1 thread
        of a 2-vCPU AMD EPYC, most of it the pixel variant's 256 px steps of ~32 s each and
        the cache's 16 encoder passes of ~3.7 s)
    python benchmarks/latent_throughput.py --preset tutorial --device cuda --precision bf16-mixed
        (the tutorial's UNet widths at batch 16; benchmarks/gpu/checks.sh stage ``latent``)
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import _common

#: ``stabilityai/sd-vae-ft-mse``'s architecture (its config.json), as AutoencoderKL arguments.
SD_VAE_CONFIG: dict[str, Any] = {
    "in_channels": 3,
    "out_channels": 3,
    "down_block_types": ("DownEncoderBlock2D",) * 4,
    "up_block_types": ("UpDecoderBlock2D",) * 4,
    "block_out_channels": (128, 256, 512, 512),
    "layers_per_block": 2,
    "latent_channels": 4,
    "norm_num_groups": 32,
    "sample_size": 256,
    "scaling_factor": 0.18215,
}

#: UNet and run settings per preset; each can be overridden by its own option.
PRESETS: dict[str, dict[str, Any]] = {
    # Small enough for a CPU: a 256 px pixel step at batch 2 takes ~35 s on one thread.
    "small": {
        "block_out_channels": [64, 128, 128, 256],
        "layers_per_block": 1,
        "norm_num_groups": 32,
        "batch_size": 2,
        "warmup_steps": 1,
        "timed_steps": 3,
        # The cache encodes each image and its mirror image: 16 encoder passes of ~4 s.
        "num_images": 8,
    },
    # The diffusers tutorial's UNet widths, for a GPU.
    "tutorial": {
        "block_out_channels": [128, 128, 256, 256, 512, 512],
        "layers_per_block": 2,
        "norm_num_groups": 32,
        "batch_size": 16,
        "warmup_steps": 5,
        "timed_steps": 20,
        "num_images": None,
    },
}
VARIANTS = ("pixel", "latent-cached", "latent-encode-every-step")
#: Precision names: Lightning's, or the short ones the other benchmarks take.
PRECISIONS = ("32-true", "bf16-mixed", "16-mixed", "fp32", "bf16", "fp16")
#: A child's result line starts with this, so Lightning's own output cannot be mistaken for it.
RESULT_PREFIX = "LATENT_THROUGHPUT_RESULT "


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", choices=sorted(PRESETS), default="small")
    parser.add_argument("--data-dir", default=str(_common.DEFAULT_DATA_DIR), help="image folder")
    parser.add_argument(
        "--num-images",
        type=int,
        default=None,
        help="train on the first N images of the folder (preset's if unset; 0: all)",
    )
    parser.add_argument("--image-size", type=int, default=256, help="pixel side (default 256)")
    parser.add_argument("--variants", nargs="+", choices=VARIANTS, default=list(VARIANTS))
    parser.add_argument("--block-out-channels", type=int, nargs="+", default=None)
    parser.add_argument("--layers-per-block", type=int, default=None)
    parser.add_argument("--norm-num-groups", type=int, default=None)
    parser.add_argument("--batch-size", type=int, default=None, help="images per step")
    parser.add_argument("--warmup-steps", type=int, default=None, help="untimed steps per run")
    parser.add_argument("--timed-steps", type=int, default=None, help="timed steps per run")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    parser.add_argument(
        "--precision",
        choices=PRECISIONS,
        default=None,
        help="Lightning precision (default: 32-true on the CPU, bf16-mixed on CUDA)",
    )
    parser.add_argument("--workers", type=int, default=0, help="DataLoader workers (default 0)")
    parser.add_argument(
        "--random-flip",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="ImageDataModule's random flips (the cache then encodes mirror images too)",
    )
    parser.add_argument(
        "--autoencoder",
        default=None,
        help="an AutoencoderKL folder (save_pretrained) to use instead of a random sd-vae-ft-mse",
    )
    parser.add_argument(
        "--cache-dir",
        default=None,
        help="datasets cache to use and keep (default: a fresh temporary one, so the cache's "
        "encoding is measured from scratch)",
    )
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--settings", default=None, help=argparse.SUPPRESS)
    _common.add_common_arguments(parser, "latent_throughput")
    args = parser.parse_args(argv)
    if args.child:
        return args
    preset = PRESETS[args.preset]
    for name, value in preset.items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    if args.num_images == 0:
        args.num_images = None
    if args.timed_steps < 1 or args.warmup_steps < 0 or args.batch_size < 1:
        parser.error("--timed-steps and --batch-size must be at least 1, --warmup-steps >= 0")
    return args


# ----------------------------------------------------------------------------- child processes
def child_facts(settings: dict[str, Any]) -> dict[str, Any]:
    """Write the random autoencoder if asked; whether CUDA is there; parameters and FLOPs."""
    import torch
    import torch.nn.functional as F
    from diffusers import AutoencoderKL, UNet2DModel
    from torch.utils.flop_counter import FlopCounterMode

    from ddpm_lightning.models.unet import module_unet_config

    if settings["make_autoencoder"]:
        torch.manual_seed(settings["seed"])  # the same weights (and cache identity) every time
        AutoencoderKL(**SD_VAE_CONFIG).save_pretrained(settings["autoencoder"])
    config = dict(AutoencoderKL.load_config(settings["autoencoder"]))
    config = {key: value for key, value in config.items() if not key.startswith("_")}
    size = settings["image_size"]
    factor = 2 ** (len(config["block_out_channels"]) - 1)
    latent = (config["latent_channels"], size // factor, size // factor)

    def flops(run: Any) -> float:
        counter = FlopCounterMode(display=False)
        with counter:
            run()
        return float(counter.get_total_flops())

    facts: dict[str, Any] = {
        "cuda_available": torch.cuda.is_available(),
        "autoencoder_config": config,
        "latent_shape": latent,
    }
    with torch.device("meta"):
        vae = AutoencoderKL(**config)
        image = torch.randn(1, 3, size, size)
        facts["encoder_flops_per_image"] = flops(lambda: vae.encode(image).latent_dist.mean)
        facts["autoencoder_parameters"] = sum(p.numel() for p in vae.parameters())
        for name, (channels, side) in {"pixel": (3, size), "latent": latent[:2]}.items():
            unet = UNet2DModel(**module_unet_config(
                side, channels, settings["block_out_channels"], settings["layers_per_block"],
                settings["norm_num_groups"], None, None,
            ))  # fmt: skip
            x = torch.randn(1, channels, side, side)
            t = torch.zeros(1, dtype=torch.long)
            facts[f"{name}_unet_flops_per_image_fwd_bwd"] = flops(
                lambda unet=unet, x=x, t=t: F.mse_loss(unet(x, t).sample, x).backward()
            )
            facts[f"{name}_unet_parameters"] = sum(p.numel() for p in unet.parameters())
    return facts


class TrainingMemory:
    """Peak memory from a reset (at ``on_train_start``) to the end of training.

    CUDA: the allocator's peak. CPU: the kernel's high-water mark of this process's resident
    memory (``VmHWM``), which writing 5 to ``/proc/self/clear_refs`` resets to the current
    resident size (Linux >= 4.0); where that is refused, ``ru_maxrss`` (the whole process).
    """

    def __init__(self, device: str) -> None:
        self.device = device
        self.kind = "cuda_max_memory_allocated" if device == "cuda" else "vmhwm_since_reset"
        self.before_reset_mib: float | None = None
        self.at_reset_mib: float | None = None

    @staticmethod
    def _status_mib(field: str) -> float:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) / 1024  # kB
        raise RuntimeError(f"no {field} in /proc/self/status")

    def reset(self) -> None:
        import torch

        if self.device == "cuda":
            torch.cuda.synchronize()
            self.before_reset_mib = torch.cuda.max_memory_allocated() / 2**20
            torch.cuda.reset_peak_memory_stats()
            self.at_reset_mib = torch.cuda.memory_allocated() / 2**20
            return
        self.before_reset_mib = self._status_mib("VmHWM")
        try:
            with open("/proc/self/clear_refs", "w") as clear_refs:
                clear_refs.write("5")
        except OSError:
            self.kind = "ru_maxrss_whole_process"
        self.at_reset_mib = self._status_mib("VmRSS")

    def peak_mib(self) -> float:
        import torch

        if self.device == "cuda":
            torch.cuda.synchronize()
            return torch.cuda.max_memory_allocated() / 2**20
        if self.kind == "vmhwm_since_reset":
            return self._status_mib("VmHWM")
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def child_run(kind: str, settings: dict[str, Any]) -> dict[str, Any]:
    """One variant (or ``encode-cache``: a fit that stops after its setup) in this process."""
    import logging
    import warnings

    import torch
    from lightning import Callback, Trainer, seed_everything

    from ddpm_lightning import DDPMModule, ImageDataModule
    from ddpm_lightning.utils.precision import LIGHTNING_PRECISION

    _common.set_threads(settings["threads"])
    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", ".*does not have many workers.*")
    warnings.filterwarnings("ignore", ".*smaller than the logging interval.*")
    # No validation data ([]), and the frozen autoencoder's modules in eval mode: both meant.
    warnings.filterwarnings("ignore", ".*Total length of .* across ranks is zero.*")
    warnings.filterwarnings("ignore", ".*module\\(s\\) in eval mode at the start of training.*")
    warnings.filterwarnings("ignore", ".*isinstance\\(treespec, LeafSpec\\)` is deprecated.*")
    seed_everything(settings["seed"], verbose=False)
    device = settings["device"]
    window = _common.StepWindow(settings["warmup_steps"], settings["timed_steps"], device)
    memory = TrainingMemory(device)
    stop_at_start = kind == "encode-cache"

    class Probe(Callback):
        """The step window, images per timed step, time waiting for batches, memory."""

        def __init__(self) -> None:
            self.step = 0
            self.images = 0
            self.data_wait = 0.0
            self.last_end: float | None = None
            self.train_start: float | None = None
            self.losses: list[torch.Tensor] = []

        def on_train_start(self, trainer: Trainer, pl_module: Any) -> None:
            memory.reset()
            self.train_start = time.perf_counter()
            if stop_at_start:
                trainer.should_stop = True

        def on_train_batch_start(
            self, trainer: Trainer, pl_module: Any, batch: Any, batch_idx: int
        ) -> None:
            # Between the end of the step before and now: fetching and moving the batch.
            if self.step > window.warmup_steps and self.last_end is not None:
                self.data_wait += time.perf_counter() - self.last_end
            window.step_start(self.step)

        def on_train_batch_end(
            self, trainer: Trainer, pl_module: Any, outputs: Any, batch: Any, batch_idx: int
        ) -> None:
            self.losses.append(outputs["loss"].detach())
            if window.warmup_steps <= self.step < window.total_steps:
                key = "images" if "images" in batch else "latent_mean"
                self.images += len(batch[key])
            window.step_end(self.step)
            self.step += 1
            self.last_end = time.perf_counter()

    latent = kind != "pixel"
    module = DDPMModule(
        image_size=settings["image_size"],
        block_out_channels=tuple(settings["block_out_channels"]),
        layers_per_block=settings["layers_per_block"],
        norm_num_groups=settings["norm_num_groups"],
        autoencoder=settings["autoencoder"] if latent else None,
    )
    datamodule = ImageDataModule(
        dataset_name="imagefolder",
        data_dir=settings["data_dir"],
        image_size=settings["image_size"],
        random_flip=settings["random_flip"],
        train_batch_size=settings["batch_size"],
        num_workers=settings["workers"],
        seed=settings["seed"],
        cache_dir=settings["cache_dir"],
        streaming=kind == "latent-encode-every-step",
    )
    # Time the one-off encoding where the module calls it: in its setup, inside trainer.fit.
    cache: dict[str, Any] = {}
    cache_latents = datamodule.cache_latents

    def timed_cache_latents(encoding: Any) -> bool:
        if device == "cuda":
            torch.cuda.synchronize()
        started = time.perf_counter()
        cached = cache_latents(encoding)
        if device == "cuda":
            torch.cuda.synchronize()
        cache["seconds"] = time.perf_counter() - started
        cache["cached"] = cached
        if cached:
            cache["images"] = len(datamodule.train_latents)
            cache["encoded_views"] = encoding.views * len(datamodule.train_latents)
        return cached

    datamodule.cache_latents = timed_cache_latents
    probe = Probe()
    total_steps = 1 if stop_at_start else window.total_steps
    trainer = Trainer(
        accelerator="gpu" if device == "cuda" else "cpu",
        devices=1,
        precision=LIGHTNING_PRECISION.get(settings["precision"], settings["precision"]),
        max_steps=total_steps,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=os.path.join(settings["workdir"], kind),
        callbacks=[probe],
    )
    load_before = _common.load_average()
    fit_started = time.perf_counter()
    trainer.fit(module, datamodule)
    peak = memory.peak_mib()
    result: dict[str, Any] = {
        "kind": kind,
        "setup_seconds": (probe.train_start or time.perf_counter()) - fit_started,
        "cache_latents": cache or None,
        "steps": probe.step,
        "load_average_before": load_before,
        "load_average_after": _common.load_average(),
        "memory_kind": memory.kind,
        "peak_before_training_mib": memory.before_reset_mib,
        "memory_at_train_start_mib": memory.at_reset_mib,
        "peak_training_mib": peak,
        # Setup (decoding, loading, the cache's encoding) included.
        "process_peak_mib": max(peak, memory.before_reset_mib or 0.0),
        "unet_config": {
            key: module.unet.config[key]
            for key in ("sample_size", "in_channels", "block_out_channels", "layers_per_block")
        },
    }
    if stop_at_start:
        if probe.step:
            raise RuntimeError(f"the encode-cache run took {probe.step} steps; it must take none")
        return result
    if window.seconds is None:
        raise RuntimeError(f"{kind}: the run ended after {probe.step} of {total_steps} steps")
    losses = [float(loss) for loss in probe.losses]
    result.update(
        {
            "timed_images": probe.images,
            "window_seconds": window.seconds,
            "window_cpu_seconds": window.cpu_seconds,
            "images_per_s": probe.images / window.seconds,
            "images_per_cpu_s": probe.images / window.cpu_seconds,
            "data_wait_seconds": probe.data_wait,
            "data_wait_share": probe.data_wait / window.seconds,
            "losses": losses,
            "mean_loss": sum(losses) / len(losses),
            "epochs_started": trainer.current_epoch + 1,
        }
    )
    return result


def child_main(args: argparse.Namespace) -> None:
    settings = json.loads(Path(args.settings).read_text())
    if args.child == "facts":
        result = child_facts(settings)
    else:
        result = child_run(args.child, settings)
    print(RESULT_PREFIX + json.dumps(result, default=str), flush=True)


def run_child(kind: str, settings_path: Path) -> dict[str, Any]:
    """``kind`` in a fresh Python; its stderr (warnings, tracebacks) goes to ours."""
    command = [sys.executable, __file__, "--child", kind, "--settings", str(settings_path)]
    completed = subprocess.run(command, stdout=subprocess.PIPE, text=True)
    lines = [line for line in completed.stdout.splitlines() if line.startswith(RESULT_PREFIX)]
    if completed.returncode != 0 or not lines:
        sys.stdout.write(completed.stdout)
        raise SystemExit(f"the {kind} child failed (exit {completed.returncode}); see above")
    return json.loads(lines[-1][len(RESULT_PREFIX) :])


# ----------------------------------------------------------------------------- the parent
def image_subset(data_dir: str, num_images: int | None, parent: Path) -> tuple[str, int]:
    """The folder to train on: ``data_dir``, or links to its first ``num_images`` images."""
    extensions = (".jpg", ".jpeg", ".png", ".webp", ".bmp")
    files = sorted(
        os.path.join(root, name)
        for root, _, names in os.walk(data_dir)
        for name in names
        if name.lower().endswith(extensions)
    )
    if not files:
        raise SystemExit(f"no images in {data_dir}")
    if num_images is None or num_images >= len(files):
        return data_dir, len(files)
    folder = parent / f"images-{num_images}"
    folder.mkdir(parents=True, exist_ok=True)
    for path in files[:num_images]:
        link = folder / os.path.basename(path)
        if not link.exists():
            link.symlink_to(os.path.abspath(path))
    return str(folder), num_images


def ratio(value: float | None, reference: float | None) -> float | None:
    if value is None or not reference:
        return None
    return value / reference


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    if args.child:
        child_main(args)
        return {}
    # The parent imports no torch until the children are done: a child's ru_maxrss starts at
    # its parent's peak (the child is the parent's copy until it execs).
    load_at_start = _common.load_average()
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench_latent_") as workdir_name:
        workdir = Path(workdir_name)
        cache_dir = Path(args.cache_dir) if args.cache_dir else workdir / "datasets"
        # Links to a subset live in a kept cache, so a later run finds the same files there.
        subsets = cache_dir / "image-subsets" if args.cache_dir else workdir
        data_dir, num_images = image_subset(args.data_dir, args.num_images, subsets)
        settings: dict[str, Any] = {
            **{k: v for k, v in vars(args).items() if k not in ("output", "child", "settings")},
            "data_dir": data_dir,
            "num_images": num_images,
            "cache_dir": str(cache_dir),
            "workdir": str(workdir),
            "make_autoencoder": args.autoencoder is None,
            "autoencoder": args.autoencoder or str(workdir / "sd-vae-ft-mse-random"),
        }
        settings_path = workdir / "settings.json"
        settings_path.write_text(json.dumps(settings))
        facts = run_child("facts", settings_path)
        device = args.device
        if device == "auto":
            device = "cuda" if facts["cuda_available"] else "cpu"
        precision = args.precision or ("32-true" if device == "cpu" else "bf16-mixed")
        settings.update(device=device, precision=precision)
        settings_path.write_text(json.dumps(settings))
        steps_per_epoch = -(-num_images // args.batch_size)
        total_steps = args.warmup_steps + args.timed_steps
        print(
            f"{args.image_size} px, {num_images} images (latents "
            f"{'x'.join(map(str, facts['latent_shape']))}), UNet "
            f"{tuple(args.block_out_channels)} x {args.layers_per_block} layers "
            f"({facts['pixel_unet_parameters']:,} parameters on pixels, "
            f"{facts['latent_unet_parameters']:,} on latents), batch {args.batch_size}, "
            f"{args.warmup_steps} warm-up + {args.timed_steps} timed steps, {device}, "
            f"{precision}, {args.threads} threads",
            flush=True,
        )
        if total_steps > steps_per_epoch:
            print(
                f"note: {total_steps} steps span more than one epoch of {steps_per_epoch} "
                "batches: the window includes an epoch boundary (a streamed epoch restarts)",
                flush=True,
            )
        runs: dict[str, dict[str, Any]] = {}
        for variant in args.variants:
            if variant == "latent-cached":
                print("encode-cache: encoding the latent cache (a fit stopped before step 1)")
                runs["encode-cache"] = run_child("encode-cache", settings_path)
                encoded = runs["encode-cache"]["cache_latents"]
                print(
                    f"encode-cache: {encoded['encoded_views']} encoder passes "
                    f"({encoded['images']} images) in {encoded['seconds']:.1f} s",
                    flush=True,
                )
            print(f"{variant}: training", flush=True)
            run = run_child(variant, settings_path)
            runs[variant] = run
            print(
                f"{variant}: {run['images_per_s']:.3f} images/s, peak training memory "
                f"{run['peak_training_mib']:.0f} MiB ({run['memory_kind']}), data wait "
                f"{run['data_wait_share']:.1%}, mean loss {run['mean_loss']:.4f}, load "
                f"{run['load_average_before']:.1f}",
                flush=True,
            )
    seconds = time.perf_counter() - started

    from ddpm_lightning.utils.tables import markdown_table

    _common.set_threads(args.threads)
    machine = _common.machine_info(device)
    machine["load_average_1m_at_start"] = load_at_start
    pixel = runs.get("pixel", {})
    encoding = runs.get("encode-cache", {}).get("cache_latents")
    rows = []
    for variant in args.variants:
        run = runs[variant]
        run["images_per_s_vs_pixel"] = ratio(run["images_per_s"], pixel.get("images_per_s"))
        run["peak_training_mib_vs_pixel"] = ratio(
            run["peak_training_mib"], pixel.get("peak_training_mib")
        )
        rows.append(
            [
                variant,
                run["images_per_s"],
                run["images_per_s_vs_pixel"] or "-",
                run["peak_training_mib"],
                run["peak_training_mib_vs_pixel"] or "-",
                run["peak_training_mib"] - run["memory_at_train_start_mib"],
                f"{encoding['seconds']:.1f}" if variant == "latent-cached" and encoding else "-",
                f"{run['data_wait_share']:.1%}",
                run["process_peak_mib"],
            ]
        )
    cuda = device == "cuda"
    memory_name = "GPU" if cuda else "RSS"
    headers = [
        "variant",
        "images/s",
        "vs pixel",
        "peak GPU MiB (training)" if cuda else "peak RSS MiB (training)",
        "vs pixel",
        "MiB above train start",
        "cache encoding s",
        "data wait",
        "process peak MiB (setup too)",
    ]
    cached = runs.get("latent-cached")
    every_step = runs.get("latent-encode-every-step")
    headline: dict[str, Any] = {}
    if cached and pixel:
        headline["latent_cached_vs_pixel_images_per_s"] = cached["images_per_s_vs_pixel"]
        headline["latent_cached_vs_pixel_peak_memory"] = cached["peak_training_mib_vs_pixel"]
    if cached and every_step:
        headline["latent_cached_vs_encode_every_step_images_per_s"] = ratio(
            cached["images_per_s"], every_step["images_per_s"]
        )
        headline["latent_cached_vs_encode_every_step_peak_memory"] = ratio(
            cached["peak_training_mib"], every_step["peak_training_mib"]
        )
    if encoding and cached and every_step:
        # Training images after which encoding once costs less than encoding every step.
        saved_per_image = 1 / every_step["images_per_s"] - 1 / cached["images_per_s"]
        if saved_per_image > 0:
            headline["cache_pays_off_after_images"] = encoding["seconds"] / saved_per_image
            headline["cache_pays_off_after_epochs"] = (
                headline["cache_pays_off_after_images"] / num_images
            )
    print()
    print(
        f"{_common.describe_machine(machine)}; {args.image_size} px, batch {args.batch_size}, "
        f"{precision}, UNet {tuple(args.block_out_channels)} x {args.layers_per_block}, "
        f"{args.timed_steps} timed steps after {args.warmup_steps}; {num_images} images; "
        f"{seconds:.0f} s in all"
    )
    print(markdown_table(headers, rows))
    memory_note = (
        "torch.cuda.max_memory_allocated from on_train_start"
        if cuda
        else "the process's peak resident memory from on_train_start (VmHWM), Python and "
        "torch included"
    )
    print(f"Peak memory: {memory_note}.")
    if "latent_cached_vs_pixel_images_per_s" in headline:
        print(
            f"latent-cached / pixel: {headline['latent_cached_vs_pixel_images_per_s']:.2f}x "
            f"images/s, {headline['latent_cached_vs_pixel_peak_memory']:.2f}x peak memory"
        )
    if "latent_cached_vs_encode_every_step_images_per_s" in headline:
        print(
            "latent-cached / encode-every-step: "
            f"{headline['latent_cached_vs_encode_every_step_images_per_s']:.2f}x images/s, "
            f"{headline['latent_cached_vs_encode_every_step_peak_memory']:.2f}x peak memory"
        )
    if encoding:
        print(
            f"cache encoding: {encoding['encoded_views']} encoder passes ({encoding['images']} "
            f"images{' and their mirror images' if args.random_flip else ''}) in "
            f"{encoding['seconds']:.1f} s (peak {memory_name} "
            f"{runs['encode-cache']['process_peak_mib']:,.0f} MiB)"
            + (
                f"; it pays for itself after {headline['cache_pays_off_after_images']:.0f} "
                f"training images ({headline['cache_pays_off_after_epochs']:.2f} epochs)"
                if "cache_pays_off_after_images" in headline
                else ""
            )
        )
    results = {
        "benchmark": "latent_throughput",
        "machine": machine,
        "arguments": {k: str(v) if k == "output" else v for k, v in vars(args).items()},
        "device": device,
        "precision": precision,
        "num_images": num_images,
        "memory_kind": memory_note,
        "facts": facts,
        "cache_encoding": encoding,
        "encode_cache_run": runs.get("encode-cache"),
        "variants": {variant: runs[variant] for variant in args.variants},
        "headline": headline,
        "seconds": seconds,
    }
    _common.write_json(args.output, results)
    return results


if __name__ == "__main__":
    main()
