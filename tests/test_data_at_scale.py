"""Data beyond one process: parallel decoding, streaming (one and two ranks, resume), nodes."""

from __future__ import annotations

from pathlib import Path

import datasets
import lightning as L
import numpy as np
import pytest
import torch
from diffusers import DDPMPipeline

from ddpm_lightning import ImageDataModule
from ddpm_lightning.data import CorruptImageError
from ddpm_lightning.data.streaming import rank_stream
from ddpm_lightning.errors import InvalidSettingError

from .conftest import fit_tiny, write_images
from .test_cli import tiny_command
from .test_console import console
from .test_distributed import RecordRank


def decoded_pixels(folder: Path, cache: Path, num_proc: int) -> np.ndarray:
    datamodule = ImageDataModule(
        data_dir=str(folder), image_size=16, cache_dir=str(cache), num_proc=num_proc
    )
    datamodule.setup("fit")
    dataset = datamodule.train_dataset
    return dataset.__getitems__(list(range(len(dataset))))["images"].numpy()


def test_parallel_decoding_gives_the_same_bytes_as_one_process(
    image_folder: Path, tmp_path: Path
) -> None:
    one = decoded_pixels(image_folder, tmp_path / "cache1", num_proc=1)
    two = decoded_pixels(image_folder, tmp_path / "cache2", num_proc=2)
    assert one.shape == (12, 3, 16, 16) and one.dtype == np.uint8
    assert np.array_equal(one, two)
    # Two processes wrote two cache shards (a real parallel map, not a silent fallback).
    assert len(list((tmp_path / "cache2").rglob("cache-*_of_00002.arrow"))) == 2


def test_parallel_decoding_names_a_corrupt_file(image_folder: Path, tmp_path: Path) -> None:
    (image_folder / "image_007.png").write_bytes(b"not a png")
    with pytest.raises(CorruptImageError, match="image_007.png"):
        decoded_pixels(image_folder, tmp_path / "cache", num_proc=2)


@pytest.mark.parametrize("value", [0, -1])
def test_num_proc_and_buffer_must_be_positive(value: int) -> None:
    with pytest.raises(InvalidSettingError, match="num_proc"):
        ImageDataModule(data_dir=".", num_proc=value)
    with pytest.raises(InvalidSettingError, match="shuffle_buffer_size"):
        ImageDataModule(data_dir=".", streaming=True, shuffle_buffer_size=value)


def test_streaming_has_no_validation_split() -> None:
    with pytest.raises(InvalidSettingError, match="val_fraction"):
        ImageDataModule(data_dir=".", streaming=True, val_fraction=0.1)


def test_the_cache_is_built_once_per_node_or_once_for_all(tmp_path: Path) -> None:
    from lightning.pytorch.cli import LightningArgumentParser

    parser = LightningArgumentParser()
    parser.add_lightning_class_args(ImageDataModule, "data", subclass_mode=True)
    for value, expected in (("true", True), ("false", False)):
        config = parser.parse_args(
            ["--data=ImageDataModule", f"--data.init_args.prepare_data_per_node={value}"]
        )
        datamodule = parser.instantiate_classes(config)["data"]
        assert datamodule.prepare_data_per_node is expected  # the attribute Lightning reads


def streamed(folder: Path, **kwargs) -> ImageDataModule:
    return ImageDataModule(data_dir=str(folder), image_size=16, streaming=True, **kwargs)


def test_streaming_yields_every_image_once_per_epoch_in_a_new_order(image_folder: Path) -> None:
    datamodule = streamed(image_folder, train_batch_size=5, shuffle_buffer_size=4)
    datamodule.setup("fit")
    cached = ImageDataModule(data_dir=str(image_folder), image_size=16)
    cached.setup("fit")
    expected = sorted(
        image.sum().item() for image in cached.train_dataset.__getitems__(range(12))["images"]
    )
    loader = datamodule.train_dataloader()
    assert len(loader) == 3  # 12 images, batches of 5: the epoch's length is known
    epochs = []
    for epoch in (0, 1):
        datamodule.train_dataset.epoch_of = lambda epoch=epoch: epoch  # the Trainer's epoch
        batches = list(loader)
        assert [len(batch["images"]) for batch in batches] == [5, 5, 2]
        assert all(batch["images"].dtype == torch.uint8 for batch in batches)
        epochs.append([image.sum().item() for batch in batches for image in batch["images"]])
    # The same pixels as the cached path, every image once per epoch, reshuffled per epoch.
    assert sorted(epochs[0]) == sorted(epochs[1]) == expected
    assert epochs[0] != epochs[1]


def test_streaming_without_a_known_length_needs_max_steps(image_folder: Path) -> None:
    class GeneratedStream(ImageDataModule):
        def load_dataset(self) -> datasets.IterableDataset:
            def rows():
                for path in sorted(image_folder.iterdir()):
                    yield {"image": {"path": str(path), "bytes": None}}

            features = datasets.Features({"image": datasets.Image()})
            return datasets.IterableDataset.from_generator(rows, features=features)

    trainer = L.Trainer(max_epochs=1, logger=False, enable_checkpointing=False)
    datamodule = GeneratedStream(image_size=16, streaming=True)
    datamodule.trainer = trainer
    datamodule.setup("fit")
    with pytest.raises(InvalidSettingError, match="max_steps"):
        datamodule.train_dataloader()
    datamodule.trainer = L.Trainer(max_steps=2, logger=False, enable_checkpointing=False)
    batches = list(datamodule.train_dataloader())  # one pass over the stream: 12 images
    assert [tuple(batch["images"].shape) for batch in batches] == [(12, 3, 16, 16)]


def test_a_stream_that_ranks_cannot_share_by_shards_warns(image_folder: Path) -> None:
    stream = datasets.load_dataset(
        "imagefolder", data_dir=str(image_folder), split="train", streaming=True
    )
    assert stream.n_shards == 1
    with pytest.warns(UserWarning, match="every rank reads all of it"):
        rank_stream(stream, buffer_size=4, seed=0, rank=0, world_size=2)


def test_streaming_fit_through_the_console_writes_grid_and_pipeline(
    image_folder: Path, tmp_path: Path
) -> None:
    run = tmp_path / "run"
    result = console(
        *tiny_command(
            "fit",
            image_folder,
            run,
            "--data.init_args.streaming=true",
            "--output.save_image_epochs=1",
            "--trainer.max_epochs=1",
        )
    )
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    assert (run / "samples" / "0000.png").is_file()
    assert DDPMPipeline.from_pretrained(run).unet.config.sample_size == 16
    # Nothing was decoded into a cache: the stream was read on the fly.
    assert not list(tmp_path.rglob("cache-*.arrow"))


class StopAfterFirstEpoch(L.Callback):
    """Stops a run planned for more epochs, as Ctrl-C does (same LR schedule as the full run)."""

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        trainer.should_stop = True


def test_streaming_resumed_at_an_epoch_boundary_ends_with_the_uninterrupted_weights(
    image_folder: Path, tmp_path: Path
) -> None:
    # As the README says: the stream of each epoch depends on the seed and the epoch only, so
    # a run resumed from last.ckpt (written at every epoch's end) goes on exactly.
    def fit(run: Path, callbacks: list, ckpt_path: str | None = None) -> L.Trainer:
        L.seed_everything(0)
        return fit_tiny(
            run,
            image_folder,
            callbacks,
            ckpt_path=ckpt_path,
            data={"streaming": True, "shuffle_buffer_size": 4},
            outputs={"use_ema": False, "save_image_epochs": 100, "save_model_epochs": 100},
            max_epochs=2,
        )

    def weights(trainer: L.Trainer) -> dict:
        return {k: v.clone() for k, v in trainer.lightning_module.unet.state_dict().items()}

    straight = weights(fit(tmp_path / "straight", []))
    assert fit(tmp_path / "resumed", [StopAfterFirstEpoch()]).current_epoch == 1
    resumed = fit(tmp_path / "resumed", [], ckpt_path="last")
    assert resumed.global_step == 6
    for name, tensor in straight.items():
        torch.testing.assert_close(weights(resumed)[name], tensor, rtol=0, atol=1e-6, msg=name)


class SeenBatches(L.Callback):
    """Records (epoch, pixel sums) of every training batch; dies before batch ``die_at``."""

    def __init__(self, die_at: tuple[int, int] | None = None) -> None:
        self.die_at = die_at
        self.seen: list[tuple[int, list[float]]] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if (trainer.current_epoch, batch_idx) == self.die_at:
            raise RuntimeError("killed")  # as a crash: last.ckpt is the previous step's
        sums = [round(image.double().sum().item(), 3) for image in batch["images"]]
        self.seen.append((trainer.current_epoch, sums))


def test_streaming_resumed_mid_epoch_starts_that_epochs_stream_over(
    image_folder: Path, tmp_path: Path
) -> None:
    # As the README says: from a mid-epoch checkpoint the epoch's stream starts over, so the
    # resumed run sees that epoch's first batches again (not its remaining ones).
    def fit(run: Path, recorder: SeenBatches, ckpt_path: str | None = None) -> None:
        L.seed_everything(0)
        fit_tiny(
            run,
            image_folder,
            [recorder],
            ckpt_path=ckpt_path,
            data={"streaming": True, "shuffle_buffer_size": 4, "random_flip": False},
            outputs={"use_ema": False, "save_image_epochs": 100, "save_model_epochs": 100,
                     "checkpoint_every_n_train_steps": 1},
            max_epochs=2,
        )  # fmt: skip

    straight = SeenBatches()
    fit(tmp_path / "straight", straight)
    second_epoch = [sums for epoch, sums in straight.seen if epoch == 1]
    assert len(second_epoch) == 3
    with pytest.raises(RuntimeError, match="killed"):  # after epoch 1's first batch (step 4)
        fit(tmp_path / "resumed", SeenBatches(die_at=(1, 1)))
    resumed = SeenBatches()
    fit(tmp_path / "resumed", resumed, ckpt_path="last")
    assert [sums for _, sums in resumed.seen] == second_epoch[:2]


def test_two_process_ddp_streaming_gives_each_rank_its_own_images(
    tmp_path: Path,
) -> None:
    folder = write_images(tmp_path / "images", 10, seed=3)
    L.seed_everything(0)
    fit_tiny(
        tmp_path / "run",
        folder,
        [RecordRank(tmp_path)],
        train_batch_size=2,
        data={"streaming": True, "shuffle_buffer_size": 4},
        outputs={"save_image_epochs": 100, "save_model_epochs": 100},
        accelerator="cpu",
        devices=2,
        strategy="ddp_fork",
        max_epochs=1,
    )
    seen = [torch.load(tmp_path / f"rank{rank}.pt")["seen"] for rank in (0, 1)]
    assert [len(images) for images in seen] == [5, 5]  # the same number of steps on each rank
    cached = ImageDataModule(data_dir=str(folder), image_size=16)
    cached.setup("fit")
    # RecordRank's fingerprint: the sum of the [-1, 1] pixels (flips keep it).
    every_image = sorted(
        image.double().sum().item() / 127.5 - image.numel()
        for image in cached.train_dataset.__getitems__(list(range(10)))["images"]
    )
    # Disjoint and together the whole epoch: the two ranks' images are the ten images.
    np.testing.assert_allclose(sorted(seen[0] + seen[1]), every_image, atol=1e-3)


def test_fid_during_a_streamed_fit_is_a_clear_error(image_folder: Path, tmp_path: Path) -> None:
    from ddpm_lightning.callbacks import FIDCallback
    from ddpm_lightning.quality import FIDSettings

    settings = FIDSettings(num_images=2, cache_dir=None)
    fid = FIDCallback(settings, feature_extractor=torch.nn.Flatten())
    with pytest.raises(InvalidSettingError, match="streamed"):
        fit_tiny(tmp_path / "run", image_folder, [fid], data={"streaming": True}, max_epochs=1)
