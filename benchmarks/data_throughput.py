"""Images/s that ImageDataModule delivers, against the tutorial's decode-every-epoch pipeline.

The tutorial decodes and resizes every JPEG in every epoch; ImageDataModule does that once and
then only indexes uint8 arrays. The figure that matters for training is the steady state, so the
headline is the second epoch; the first one (with the one-time decode) is reported beside it.
Each side and each repeat gets a fresh, empty ``datasets`` cache, so the decode is never a
leftover from an earlier run.

``--compare num_proc`` times the decode into the cache (``prepare_data`` on a fresh cache)
with ``num_proc`` 1 and 2 on photo-sized JPEGs made from the butterflies, and checks the bytes
are the same; ``--compare streaming`` sets the streaming path's steady images/s beside the
cached path's.
"""

from __future__ import annotations

import argparse
import hashlib
import itertools
import tempfile
import time
from pathlib import Path
from typing import Any

import _common
import torch
from PIL import Image
from tutorial_loop import tutorial_dataloader, tutorial_dataset

from ddpm_lightning import ImageDataModule
from ddpm_lightning.utils.tables import markdown_table


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=str(_common.DEFAULT_DATA_DIR), help="image folder")
    parser.add_argument("--image-size", type=int, default=128)
    parser.add_argument("--batch", type=int, default=16, help="images per batch")
    parser.add_argument(
        "--compare",
        choices=("tutorial", "num_proc", "streaming"),
        default="tutorial",
        help="tutorial: ours against the tutorial's loader; num_proc: decode with 1 and 2 "
        "processes; streaming: streamed against cached",
    )
    parser.add_argument(
        "--decode-images", type=int, default=2000, help="num_proc: JPEGs in the workload"
    )
    parser.add_argument(
        "--decode-width", type=int, default=768, help="num_proc: the JPEGs' width in px"
    )
    parser.add_argument(
        "--workers",
        type=int,
        nargs="+",
        default=[0],
        help="DataLoader workers; several values run each",
    )
    parser.add_argument(
        "--epochs", type=int, default=2, help="epochs per run (>= 2; the 2nd is the headline)"
    )
    parser.add_argument(
        "--repeats", type=int, default=3, help="runs per side, alternating (median)"
    )
    parser.add_argument(
        "--train-images-per-s",
        type=float,
        default=None,
        help="images/s a training run consumes; if given, report how many times faster the data is",
    )
    _common.add_common_arguments(parser, "data_throughput")
    args = parser.parse_args(argv)
    if args.compare != "tutorial" and args.output == _common.RESULTS_DIR / "data_throughput.json":
        args.output = _common.RESULTS_DIR / f"data_throughput_{args.compare}.json"
    if args.epochs < 2:
        parser.error("--epochs must be at least 2: the second epoch is what is measured")
    return args


def _time_epochs(loader: Any, epochs: int, per_batch: Any = None) -> list[dict[str, float]]:
    """Iterate ``epochs`` epochs, timing each (iterator creation included: workers start there)."""
    results = []
    for epoch in range(epochs):
        if hasattr(loader.sampler, "set_epoch"):
            loader.sampler.set_epoch(epoch)  # as the Trainer does
        images = 0
        started = time.perf_counter()
        for batch in loader:
            if per_batch is not None:
                batch = per_batch(batch)
            images += batch["images"].shape[0]
        seconds = time.perf_counter() - started
        results.append({"epoch": epoch + 1, "images": images, "seconds": seconds})
    return results


def run_tutorial(args: argparse.Namespace, workers: int) -> dict[str, Any]:
    """``load_dataset`` + ``set_transform`` + ``DataLoader(shuffle=True)``, as in the tutorial."""
    torch.manual_seed(args.seed)
    with tempfile.TemporaryDirectory(prefix="bench_tutorial_cache_") as cache_dir:
        started = time.perf_counter()
        dataset = tutorial_dataset(args.data_dir, args.image_size, cache_dir=cache_dir)
        setup_s = time.perf_counter() - started
        loader = tutorial_dataloader(dataset, args.batch, num_workers=workers)
        epochs = _time_epochs(loader, args.epochs)
        del loader
    return {"setup_seconds": setup_s, "epochs": epochs}


def run_ours(args: argparse.Namespace, workers: int) -> dict[str, Any]:
    """ImageDataModule: decode once in prepare_data/setup, then flip + scale per batch."""
    torch.manual_seed(args.seed)
    with tempfile.TemporaryDirectory(prefix="bench_ours_cache_") as cache_dir:
        datamodule = ImageDataModule(
            dataset_name="imagefolder",
            data_dir=args.data_dir,
            image_size=args.image_size,
            train_batch_size=args.batch,
            num_workers=workers,
            seed=args.seed,
            cache_dir=cache_dir,
        )
        started = time.perf_counter()
        datamodule.prepare_data()
        datamodule.setup("fit")
        setup_s = time.perf_counter() - started
        # One loader for all epochs, as the Trainer keeps it (its workers persist).
        loader = datamodule.train_dataloader()

        epochs = _time_epochs(
            loader,
            args.epochs,
            per_batch=lambda batch: datamodule.on_after_batch_transfer(batch, 0),
        )
        del loader  # stops its persistent workers before the cache folder goes
    return {"setup_seconds": setup_s, "epochs": epochs}


def _rate(epoch: dict[str, float], extra_seconds: float = 0.0) -> float:
    return epoch["images"] / (epoch["seconds"] + extra_seconds)


def summarise(runs: list[dict[str, Any]]) -> dict[str, float]:
    """Medians over repeats: second-epoch and first-epoch (setup included) images/s."""
    return {
        "second_epoch_images_per_s": _common.median([_rate(r["epochs"][1]) for r in runs]),
        "first_epoch_images_per_s_with_setup": _common.median(
            [_rate(r["epochs"][0], r["setup_seconds"]) for r in runs]
        ),
        "setup_seconds": _common.median([r["setup_seconds"] for r in runs]),
        "first_epoch_seconds": _common.median([r["epochs"][0]["seconds"] for r in runs]),
        "second_epoch_seconds": _common.median([r["epochs"][1]["seconds"] for r in runs]),
        "images_per_epoch": runs[0]["epochs"][1]["images"],
    }


def make_photo_workload(source: Path, folder: Path, count: int, width: int) -> Path:
    """``count`` JPEGs of photo size: the butterflies resized to ``width`` px wide, repeated."""
    sources = sorted(source.glob("*.jpg"))
    for index, path in zip(range(count), itertools.cycle(sources)):
        with Image.open(path) as image:
            height = round(image.height * width / image.width)
            image.convert("RGB").resize((width, height), Image.BICUBIC).save(
                folder / f"{index:05d}.jpg", quality=90
            )
    return folder


class LoadedOnce(ImageDataModule):
    """Returns a dataset loaded before the clock starts, so that only the decode is timed."""

    def __init__(self, raw: Any, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.raw = raw

    def load_dataset(self) -> Any:
        return self.raw


def decode_once(data_dir: Path, args: argparse.Namespace, num_proc: int) -> dict[str, Any]:
    """Seconds of the decode (the map into a fresh cache), and a digest of the decoded pixels."""
    with tempfile.TemporaryDirectory(prefix="bench_decode_cache_") as cache_dir:
        settings = {
            "data_dir": str(data_dir),
            "image_size": args.image_size,
            "cache_dir": cache_dir,
        }
        started = time.perf_counter()
        raw = ImageDataModule(**settings).load_dataset()  # the file listing, not timed as decode
        load_s = time.perf_counter() - started
        datamodule = LoadedOnce(raw, num_proc=num_proc, **settings)
        started = time.perf_counter()
        datamodule.prepare_data()  # the map into the (fresh) cache
        decode_s = time.perf_counter() - started
        datamodule.setup("fit")
        dataset = datamodule.train_dataset
        pixels = dataset.__getitems__(list(range(len(dataset))))["images"].numpy()
        digest = hashlib.sha256(pixels).hexdigest()
    return {
        "num_proc": num_proc,
        "load_seconds": load_s,
        "decode_seconds": decode_s,
        "sha256": digest,
    }


def compare_num_proc(args: argparse.Namespace, results: dict[str, Any]) -> None:
    with tempfile.TemporaryDirectory(prefix="bench_photos_") as folder:
        started = time.perf_counter()
        data_dir = make_photo_workload(
            Path(args.data_dir), Path(folder), args.decode_images, args.decode_width
        )
        print(
            f"made {args.decode_images} JPEGs {args.decode_width} px wide in "
            f"{time.perf_counter() - started:.1f}s",
            flush=True,
        )
        runs: dict[int, list[dict[str, Any]]] = {1: [], 2: []}
        for repeat in range(args.repeats):
            for num_proc in (1, 2) if repeat % 2 == 0 else (2, 1):
                run = decode_once(data_dir, args, num_proc)
                runs[num_proc].append(run)
                print(
                    f"repeat {repeat} num_proc={num_proc}: decode {run['decode_seconds']:.2f}s "
                    f"(load {run['load_seconds']:.2f}s)",
                    flush=True,
                )
    digests = {run["sha256"] for run in runs[1] + runs[2]}
    one, two = (_common.median([r["decode_seconds"] for r in runs[n]]) for n in (1, 2))
    results.update(
        runs=runs,
        same_bytes=len(digests) == 1,
        decode_speedup=one / two,
        target_met=one / two >= 1.6,
    )
    rows = []
    for num_proc, seconds in ((1, one), (2, two)):
        rows.append(
            [num_proc, args.decode_images, seconds, args.decode_images / seconds, one / seconds]
        )
    print(markdown_table(["num_proc", "images", "decode s", "images/s", "speed-up"], rows))
    print(
        f"same bytes: {len(digests) == 1}; num_proc=2 decodes {one / two:.2f}x as fast "
        f"(target >= 1.6x: {'met' if one / two >= 1.6 else 'NOT met'})"
    )


def steady_images_per_s(args: argparse.Namespace, streaming: bool) -> dict[str, Any]:
    """Images/s of the second epoch (the first includes the cached path's decode)."""
    with tempfile.TemporaryDirectory(prefix="bench_stream_cache_") as cache_dir:
        datamodule = ImageDataModule(
            data_dir=args.data_dir,
            image_size=args.image_size,
            train_batch_size=args.batch,
            cache_dir=cache_dir,
            streaming=streaming,
        )
        datamodule.prepare_data()
        datamodule.setup("fit")
        loader = datamodule.train_dataloader()
        epochs = []
        for epoch in range(2):
            if streaming:
                datamodule.train_dataset.epoch_of = lambda epoch=epoch: epoch  # as the Trainer's
            else:
                loader.sampler.set_epoch(epoch)
            images, started = 0, time.perf_counter()
            for batch in loader:
                images += datamodule.on_after_batch_transfer(batch, 0)["images"].shape[0]
            epochs.append({"images": images, "seconds": time.perf_counter() - started})
    return {"streaming": streaming, "epochs": epochs, "images_per_s": _rate(epochs[1])}


def compare_streaming(args: argparse.Namespace, results: dict[str, Any]) -> None:
    runs: dict[str, list[dict[str, Any]]] = {"cached": [], "streaming": []}
    for repeat in range(args.repeats):
        for streaming in (False, True) if repeat % 2 == 0 else (True, False):
            run = steady_images_per_s(args, streaming)
            runs["streaming" if streaming else "cached"].append(run)
            print(
                f"repeat {repeat} {'streaming' if streaming else 'cached'}: "
                f"{run['images_per_s']:.1f} images/s",
                flush=True,
            )
    cached, streamed = (_common.median([r["images_per_s"] for r in runs[k]]) for k in runs)
    results.update(runs=runs, streaming_to_cached=streamed / cached)
    rows = [["cached (decoded once)", cached, 1.0], ["streaming", streamed, streamed / cached]]
    print(markdown_table(["path", "epoch 2 images/s", "ratio"], rows))


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    _common.set_threads(args.threads)
    machine = _common.machine_info("cpu")
    if args.compare != "tutorial":
        results = {
            "benchmark": f"data_throughput_{args.compare}",
            "machine": machine,
            "arguments": {k: str(v) for k, v in vars(args).items()},
        }
        print(
            f"{_common.describe_machine(machine)}; {args.image_size} px, median of "
            f"{args.repeats} runs per side, alternating"
        )
        (compare_num_proc if args.compare == "num_proc" else compare_streaming)(args, results)
        _common.write_json(args.output, results)
        return results
    results: dict[str, Any] = {
        "benchmark": "data_throughput",
        "machine": machine,
        "arguments": {k: str(v) if k == "output" else v for k, v in vars(args).items()},
        "fresh_datasets_cache_per_run": True,
        "by_workers": {},
    }
    rows = []
    for workers in args.workers:
        tutorial_runs, our_runs = [], []
        for repeat in range(args.repeats):
            # Alternate which side goes first, so drift (page cache, CPU clocks) cancels.
            order = [("tutorial", tutorial_runs), ("ours", our_runs)]
            for side, runs in order if repeat % 2 == 0 else order[::-1]:
                load = _common.load_average()
                run = run_tutorial(args, workers) if side == "tutorial" else run_ours(args, workers)
                run["load_average_before"] = load
                runs.append(run)
                print(
                    f"workers={workers} repeat={repeat} {side:8s} load {load:.1f}, "
                    f"setup {run['setup_seconds']:.2f}s, "
                    + ", ".join(f"epoch {e['epoch']} {e['seconds']:.3f}s" for e in run["epochs"]),
                    flush=True,
                )
        tutorial, ours = summarise(tutorial_runs), summarise(our_runs)
        ratio = ours["second_epoch_images_per_s"] / tutorial["second_epoch_images_per_s"]
        entry: dict[str, Any] = {
            "tutorial": {"summary": tutorial, "runs": tutorial_runs},
            "ddpm_lightning": {"summary": ours, "runs": our_runs},
            "second_epoch_ratio": ratio,
            "target_second_epoch_ratio": 5.0,
            "target_met": ratio >= 5.0,
        }
        if args.train_images_per_s:
            entry["times_training_consumption"] = (
                ours["second_epoch_images_per_s"] / args.train_images_per_s
            )
        results["by_workers"][str(workers)] = entry
        for name, summary in (
            ("tutorial (set_transform)", tutorial),
            ("ddpm_lightning ImageDataModule", ours),
        ):
            rows.append(
                [
                    workers,
                    name,
                    summary["second_epoch_images_per_s"],
                    summary["second_epoch_images_per_s"] / tutorial["second_epoch_images_per_s"],
                    summary["first_epoch_images_per_s_with_setup"],
                    summary["setup_seconds"],
                ]
            )
    headers = [
        "workers",
        "pipeline",
        "epoch 2 images/s",
        "epoch 2 ratio",
        "epoch 1 images/s (setup incl.)",
        "setup s (load + decode)",
    ]
    print()
    print(
        f"{_common.describe_machine(machine)}; "
        f"{args.image_size} px, batch {args.batch}, median of {args.repeats} runs per side, "
        "fresh datasets cache per run"
    )
    print(markdown_table(headers, rows))
    for workers, entry in results["by_workers"].items():
        verdict = "met" if entry["target_met"] else "NOT met"
        ratio = entry["second_epoch_ratio"]
        line = f"workers={workers}: epoch-2 ratio {ratio:.1f}x (target >= 5x: {verdict})"
        if "times_training_consumption" in entry:
            times = entry["times_training_consumption"]
            line += f"; {times:.1f}x what training consumes (target >= 10x)"
        print(line)
    _common.write_json(args.output, results)
    return results


if __name__ == "__main__":
    main()
