from __future__ import annotations

from pathlib import Path

import datasets
import numpy as np
import pytest
import torch
from PIL import Image

from ddpm_lightning import ButterfliesDataModule, ImageDataModule
from ddpm_lightning.data import CorruptImageError, DatasetUnavailableError

from .conftest import BUTTERFLIES_DIR, write_images


def first_batch(datamodule: ImageDataModule) -> torch.Tensor:
    datamodule.prepare_data()
    datamodule.setup("fit")
    batch = next(iter(datamodule.train_dataloader()))
    return datamodule.on_after_batch_transfer(batch, 0)["images"]


def test_image_folder_batches_are_float_in_minus_one_one(image_folder: Path) -> None:
    datamodule = ImageDataModule(data_dir=str(image_folder), image_size=16, train_batch_size=5)
    datamodule.prepare_data()
    datamodule.setup("fit")
    raw = next(iter(datamodule.train_dataloader()))["images"]
    assert raw.dtype == torch.uint8 and raw.shape == (5, 3, 16, 16)
    images = datamodule.on_after_batch_transfer({"images": raw}, 0)["images"]
    assert images.dtype == torch.float32
    assert images.shape == (5, 3, 16, 16)
    assert images.min() >= -1.0 and images.max() <= 1.0
    assert len(datamodule.train_dataset) == 12


def test_pixels_match_the_tutorials_transform(tmp_path: Path) -> None:
    from torchvision import transforms

    folder = write_images(tmp_path / "one", 1, sizes=((37, 23),))
    datamodule = ImageDataModule(data_dir=str(folder), image_size=16, random_flip=False)
    ours = first_batch(datamodule)[0]
    tutorial = transforms.Compose(
        [transforms.Resize((16, 16)), transforms.ToTensor(), transforms.Normalize([0.5], [0.5])]
    )
    expected = tutorial(Image.open(folder / "image_000.png").convert("RGB"))
    # Same resize; ours is quantised to uint8 once, the tutorial's stays float: <= half a level.
    assert torch.allclose(ours, expected, atol=1 / 127.5 + 1e-6)


def test_resize_squashes_like_the_tutorial_and_center_crop_keeps_aspect(tmp_path: Path) -> None:
    # A 40x20 image: left half black, right half white.
    pixels = np.zeros((20, 40, 3), dtype=np.uint8)
    pixels[:, 20:] = 255
    folder = tmp_path / "halves"
    folder.mkdir()
    Image.fromarray(pixels).save(folder / "halves.png")
    squashed = ImageDataModule(data_dir=str(folder), image_size=8, random_flip=False)
    cropped = ImageDataModule(
        data_dir=str(folder), image_size=8, random_flip=False, center_crop=True
    )
    squashed_row = first_batch(squashed)[0, 0, 4]
    cropped_row = first_batch(cropped)[0, 0, 4]
    # Squashed: the whole width survives, half black then half white.
    assert squashed_row[0] == -1 and squashed_row[-1] == 1
    # Cropped: the centre 20x20 square, whose left quarter is... the black/white edge at the middle.
    assert cropped_row[0] == -1 and cropped_row[-1] == 1
    assert (squashed_row < 0).sum() == 4 and (cropped_row < 0).sum() == 4


def test_in_memory_dataset_with_image_feature_and_odd_modes() -> None:
    rng = np.random.default_rng(0)
    gray = Image.fromarray(rng.integers(0, 256, (9, 13), dtype=np.uint8), mode="L")
    rgba = Image.fromarray(rng.integers(0, 256, (11, 7, 4), dtype=np.uint8), mode="RGBA")
    palette = gray.convert("RGB").convert("P", palette=Image.ADAPTIVE)
    sixteen_bit = Image.fromarray(np.full((10, 10), 65535, dtype=np.uint16))  # white in 16 bits
    assert sixteen_bit.mode.startswith("I")

    class InMemory(ImageDataModule):
        def load_dataset(self) -> datasets.Dataset:
            return datasets.Dataset.from_dict(
                {"picture": [gray, rgba, palette, sixteen_bit]},
                features=datasets.Features({"picture": datasets.Image()}),
            )

    for channels in (3, 1):
        datamodule = InMemory(
            image_column="picture",
            image_size=8,
            channels=channels,
            train_batch_size=4,
            random_flip=False,
        )
        images = first_batch(datamodule)
        assert images.shape == (4, channels, 8, 8)
        # The 16-bit image is scaled to 8 bits, not clipped: full white is 1.0.
        white = [i for i in range(4) if torch.allclose(images[i], torch.ones_like(images[i]))]
        assert len(white) == 1


def test_grayscale_folder_keeps_one_channel(tmp_path: Path) -> None:
    folder = tmp_path / "gray"
    folder.mkdir()
    for index in range(3):
        Image.fromarray(np.full((12, 12), 60 * index, dtype=np.uint8), mode="L").save(
            folder / f"{index}.png"
        )
    datamodule = ImageDataModule(data_dir=str(folder), image_size=8, channels=1, train_batch_size=3)
    images = first_batch(datamodule)
    assert images.shape == (3, 1, 8, 8)
    assert sorted(round(v, 3) for v in images[:, 0, 0, 0].tolist()) == sorted(
        round(60 * i / 127.5 - 1, 3) for i in range(3)
    )


def test_random_flip_flips_about_half_and_is_seeded(tmp_path: Path) -> None:
    # One asymmetric image repeated 200 times: a flip is visible as a mirrored row.
    pixels = np.zeros((8, 8, 3), dtype=np.uint8)
    pixels[:, :4] = 255
    folder = tmp_path / "asym"
    folder.mkdir()
    for index in range(200):
        Image.fromarray(pixels).save(folder / f"{index:03d}.png")

    def flipped_fraction(seed: int, random_flip: bool = True) -> tuple[float, list[bool]]:
        datamodule = ImageDataModule(
            data_dir=str(folder),
            image_size=8,
            train_batch_size=200,
            seed=seed,
            random_flip=random_flip,
        )
        images = first_batch(datamodule)
        flags = (images[:, 0, 0, 0] < 0).tolist()  # left pixel black means flipped
        return sum(flags) / len(flags), flags

    fraction, flags = flipped_fraction(seed=1)
    assert 0.35 < fraction < 0.65
    assert flipped_fraction(seed=1)[1] == flags
    assert flipped_fraction(seed=2)[1] != flags
    assert flipped_fraction(seed=1, random_flip=False)[0] == 0.0


def test_shuffle_is_seeded_and_covers_every_image_once(image_folder: Path) -> None:
    def order(seed: int) -> list[int]:
        datamodule = ImageDataModule(
            data_dir=str(image_folder),
            image_size=8,
            seed=seed,
            train_batch_size=4,
            random_flip=False,
        )
        datamodule.setup("fit")
        return list(iter(datamodule.train_dataloader().sampler))

    assert order(0) == order(0)
    assert order(0) != order(1)
    assert sorted(order(0)) == list(range(12))


def test_subclass_for_a_new_dataset_in_ten_lines() -> None:
    # The documented hook: return any datasets.Dataset with an image column.
    class CheckerboardDataModule(ImageDataModule):
        def load_dataset(self) -> datasets.Dataset:
            board = np.indices((32, 32)).sum(axis=0) % 2 * 255
            images = [Image.fromarray(board.astype(np.uint8)).convert("RGB")] * 6
            return datasets.Dataset.from_dict({"image": images}).cast_column(
                "image", datasets.Image()
            )

    datamodule = CheckerboardDataModule(image_size=16, train_batch_size=6)
    images = first_batch(datamodule)
    assert images.shape == (6, 3, 16, 16)
    assert images.min() >= -1 and images.max() <= 1


def test_butterflies_defaults_are_the_tutorials() -> None:
    datamodule = ButterfliesDataModule()
    assert datamodule.dataset_name == "huggan/smithsonian_butterflies_subset"
    assert (datamodule.image_size, datamodule.train_batch_size) == (128, 16)
    assert datamodule.random_flip and not datamodule.center_crop
    assert datamodule.split == "train" and datamodule.image_column == "image"


def test_unreachable_hub_dataset_says_so_and_shows_the_local_folder_alternative() -> None:
    datamodule = ButterfliesDataModule()
    with pytest.raises(DatasetUnavailableError) as error:
        datamodule.prepare_data()
    message = str(error.value)
    assert "huggan/smithsonian_butterflies_subset" in message
    assert "Hub" in message and "imagefolder" in message and "data_dir" in message


def test_missing_folder_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="does not exist"):
        ImageDataModule(data_dir=str(tmp_path / "nope")).prepare_data()


def test_folder_without_images_error(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("no pictures here")
    with pytest.raises(FileNotFoundError, match="No images found"):
        ImageDataModule(data_dir=str(tmp_path)).prepare_data()


def test_missing_image_column_lists_the_columns(image_folder: Path) -> None:
    datamodule = ImageDataModule(data_dir=str(image_folder), image_column="img")
    with pytest.raises(KeyError, match=r"no column 'img'.*\['image'\]"):
        datamodule.setup("fit")


def test_corrupt_image_is_named(tmp_path: Path) -> None:
    folder = write_images(tmp_path / "images", 3)
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n this is not an image")
    datamodule = ImageDataModule(data_dir=str(folder), image_size=8)
    with pytest.raises(CorruptImageError, match=r"broken\.png.*Remove or replace"):
        datamodule.setup("fit")


def test_decoded_cache_is_reused_by_setup_after_prepare_data(image_folder: Path) -> None:
    datamodule = ImageDataModule(data_dir=str(image_folder), image_size=8)
    datamodule.prepare_data()
    datamodule.setup("fit")
    cache_files = datamodule.train_dataset.decoded.cache_files
    assert cache_files, "the decoded arrays should live in the datasets cache on disk"
    second = ImageDataModule(data_dir=str(image_folder), image_size=8)
    second.setup("fit")
    assert second.train_dataset.decoded.cache_files == cache_files


def test_validation_split_holds_images_out(image_folder: Path) -> None:
    datamodule = ImageDataModule(data_dir=str(image_folder), image_size=8, val_fraction=0.25)
    datamodule.setup("fit")
    assert len(datamodule.train_dataset) == 9 and len(datamodule.val_dataset) == 3
    assert len(datamodule.val_dataloader()) == 1  # 3 images in one batch
    assert ImageDataModule(data_dir=str(image_folder)).val_dataloader() == []  # no validation


@pytest.mark.skipif(not BUTTERFLIES_DIR.is_dir(), reason="../shared/data/butterflies is absent")
def test_real_butterflies_folder_loads() -> None:
    datamodule = ImageDataModule(data_dir=str(BUTTERFLIES_DIR), image_size=32, train_batch_size=16)
    images = first_batch(datamodule)
    assert len(datamodule.train_dataset) == 832
    assert images.shape == (16, 3, 32, 32)
    assert -1 <= images.min() < images.max() <= 1


def test_lightnings_batch_size_finder_scales_train_batch_size(tmp_path: Path) -> None:
    # "The largest batch that fits": Lightning's finder doubles train_batch_size until a step
    # fails or max_trials is reached, then fit runs at the size it found.
    import lightning as L
    from lightning.pytorch.tuner import Tuner

    from ddpm_lightning import DDPMModule

    from .conftest import TINY_UNET

    datamodule = ImageDataModule(
        data_dir=str(write_images(tmp_path / "images", 32)), image_size=16, train_batch_size=2
    )
    trainer = L.Trainer(
        max_steps=2,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
    )
    module = DDPMModule(image_size=16, **TINY_UNET, lr_warmup_steps=1)
    found = Tuner(trainer).scale_batch_size(
        module, datamodule=datamodule, batch_arg_name="train_batch_size", max_trials=3, init_val=2
    )
    assert found == datamodule.train_batch_size == 8  # 2, 4, 8: three trials
    trainer.fit(module, datamodule)
    assert trainer.train_dataloader.batch_size == 8
    assert trainer.global_step == 2
    assert "val/loss" not in trainer.callback_metrics  # val_fraction 0: no validation loop
