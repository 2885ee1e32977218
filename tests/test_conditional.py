"""Class-conditional training and classifier-free guidance: data, model, outputs, export, CLI."""

from __future__ import annotations

from pathlib import Path

import datasets
import lightning as L
import numpy as np
import pytest
import torch
from diffusers import UNet2DModel
from PIL import Image

from ddpm_lightning import DDPMModule, ImageDataModule
from ddpm_lightning.errors import InvalidSettingError, MissingColumnError
from ddpm_lightning.loading import load_module
from ddpm_lightning.pipelines import ClassConditionalDDPMPipeline
from ddpm_lightning.sampling import SamplingSettings

from .conftest import TINY_UNET, assert_exact_resume, fit_tiny, quiet_trainer
from .test_cli import tiny_command
from .test_console import console
from .test_distributed import RecordRank

CONFIGS = Path(__file__).resolve().parents[1] / "examples" / "configs"
COLOURS = {"red": 0, "blue": 2}  # the RGB channel that is bright in each class


def blob(colour: str, rng: np.random.Generator, size: int = 16) -> np.ndarray:
    """A bright disc of one colour on a dark background, at a random place and size."""
    yy, xx = np.mgrid[:size, :size]
    cy, cx, radius = rng.uniform(4, size - 4, 2).tolist() + [rng.uniform(3, 6)]
    pixels = np.full((size, size, 3), 20, np.uint8)
    pixels[(yy - cy) ** 2 + (xx - cx) ** 2 < radius**2, COLOURS[colour]] = 230
    return pixels


def write_blob_folder(folder: Path, per_class: int = 6, seed: int = 0) -> Path:
    """An image folder with one subfolder per class: ``datasets`` gives it a ``label`` column."""
    rng = np.random.default_rng(seed)
    for colour in COLOURS:
        (folder / colour).mkdir(parents=True, exist_ok=True)
        for index in range(per_class):
            Image.fromarray(blob(colour, rng)).save(folder / colour / f"{colour}_{index:02d}.png")
    return folder


class Blobs(ImageDataModule):
    """Red and blue blobs in memory, with the class in a column of the given kind."""

    def __init__(self, kind: str = "string", count: int = 64, **kwargs) -> None:
        super().__init__(image_size=16, label_column="colour", **kwargs)
        self.kind, self.count = kind, count

    def load_dataset(self) -> datasets.Dataset:
        rng = np.random.default_rng(0)
        colours = ["red" if index % 2 == 0 else "blue" for index in range(self.count)]
        values = {"string": colours, "integer": [7 if c == "red" else 3 for c in colours]}
        dataset = datasets.Dataset.from_dict(
            {"image": [blob(colour, rng) for colour in colours], "colour": values[self.kind]}
        )
        return dataset.cast_column("image", datasets.Image())


def tiny_conditional(datamodule: ImageDataModule, **kwargs) -> DDPMModule:
    settings = {"lr_warmup_steps": 1, **kwargs}
    id2label = datamodule.discover_classes()  # reads the label column once
    return DDPMModule(
        image_size=16,
        **TINY_UNET,
        num_classes=datamodule.num_classes,
        id2label=id2label,
        **settings,
    )


# ---------------------------------------------------------------------------- data
def test_label_columns_of_every_kind_become_ids_with_names(tmp_path: Path) -> None:
    strings = Blobs("string", count=8)
    assert strings.discover_classes() == {0: "blue", 1: "red"}  # strings: alphabetical
    assert strings.id2label == {0: "blue", 1: "red"} and strings.num_classes == 2
    integers = Blobs("integer", count=8)
    assert integers.discover_classes() == {0: "3", 1: "7"}  # integers: numerical
    folder = ImageDataModule(
        data_dir=str(write_blob_folder(tmp_path / "images", 2)), image_size=16, label_column="label"
    )
    assert folder.discover_classes() == {0: "blue", 1: "red"}  # ClassLabel
    assert folder.num_classes == 2 and folder.id2label == {0: "blue", 1: "red"}
    for datamodule in (strings, integers, folder):
        datamodule.setup("fit")
        batch = next(iter(datamodule.train_dataloader()))
        assert batch["class_labels"].dtype == torch.int64
        # Each image carries its own class: red blobs are red.
        images = batch["images"].float()
        redder = images[:, 0].mean(dim=(1, 2)) > images[:, 2].mean(dim=(1, 2))
        assert torch.equal(redder, batch["class_labels"] == 1)
    unconditional = ImageDataModule(data_dir=str(tmp_path / "images"), image_size=16)
    assert unconditional.discover_classes() is None and unconditional.num_classes is None
    unconditional.setup("fit")
    assert set(next(iter(unconditional.train_dataloader()))) == {"images"}


def test_a_missing_label_column_lists_the_columns() -> None:
    class NoSuchColumn(Blobs):
        def __init__(self) -> None:
            super().__init__()
            self.label_column = "species"

    with pytest.raises(MissingColumnError, match=r"species.*\['image', 'colour'\]"):
        assert NoSuchColumn().discover_classes() is None  # never reached: the error comes first


# ---------------------------------------------------------------------------- behaviour
def redness(images: torch.Tensor) -> torch.Tensor:
    """Per image: mean red minus mean blue of its brightest pixels (the blob)."""
    red, blue = images[:, 0].flatten(1), images[:, 2].flatten(1)
    return (red.topk(20, dim=1).values - blue.topk(20, dim=1).values).mean(dim=1)


def trained_on_blobs(**model_kwargs) -> DDPMModule:
    """A tiny conditional model after 300 steps on red and blue blobs (seeded)."""
    L.seed_everything(0)
    datamodule = Blobs(train_batch_size=16)
    module = tiny_conditional(datamodule, learning_rate=2e-3, lr_warmup_steps=20, **model_kwargs)
    quiet_trainer(max_steps=300).fit(module, datamodule)
    return module


def test_guidance_makes_red_samples_redder_than_blue_ones() -> None:
    module = trained_on_blobs()
    seeds = list(range(8))
    margins = {}
    for scale in (1.0, 3.0):
        generator = module.image_generator(SamplingSettings("ddim", 25, guidance_scale=scale))
        red, blue = (generator(seeds, class_labels=[colour] * 8) for colour in ("red", "blue"))
        margins[scale] = (redness(red).mean() - redness(blue).mean()).item()
    assert margins[1.0] > 0.2, margins  # red samples are plainly redder than blue ones
    assert margins[3.0] > margins[1.0], margins  # and guidance widens the gap


# ---------------------------------------------------------------------------- export
def test_export_round_trip_reproduces_generate(tmp_path: Path) -> None:
    datamodule = Blobs(count=8)
    module = tiny_conditional(datamodule)
    labels = ["red", "blue", "red"]
    expected = module.generate(
        seed=3,
        class_labels=labels,
        guidance_scale=3.0,
        sampler="ddpm",
        num_inference_steps=4,
        output_type="pt",
    )
    module.save_pretrained(tmp_path / "pipeline")
    pipeline = ClassConditionalDDPMPipeline.from_pretrained(tmp_path / "pipeline")
    generate = {"seed": 3, "class_labels": labels, "guidance_scale": 3.0, "sampler": "ddpm"}
    assert pipeline.labels == {"blue": 0, "red": 1}
    images = pipeline(
        pipeline.get_label_ids(labels),
        guidance_scale=3.0,
        generator=torch.Generator().manual_seed(3),
        num_inference_steps=4,
        output_type="pt",
    ).images
    assert torch.equal(images, expected)
    pil = pipeline(
        [1], guidance_scale=3.0, generator=torch.Generator().manual_seed(3), num_inference_steps=4
    ).images[0]
    assert pil.size == (16, 16)
    # The UNet loads in plain diffusers; load_module rebuilds the conditional model with names.
    unet = UNet2DModel.from_pretrained(tmp_path / "pipeline", subfolder="unet")
    assert unet.config.num_class_embeds == 3  # two classes and the null class
    reloaded = load_module(tmp_path / "pipeline")
    assert reloaded.hparams.num_classes == 2 and reloaded.hparams.id2label == {0: "blue", 1: "red"}
    again = reloaded.generate(**generate, num_inference_steps=4, output_type="pt")
    assert torch.equal(again, expected)


def test_fine_tuning_a_conditional_model_from_its_export(tmp_path: Path) -> None:
    datamodule = Blobs(count=8, train_batch_size=4)
    tiny_conditional(datamodule).save_pretrained(tmp_path / "pipeline")
    source = str(tmp_path / "pipeline")
    module = DDPMModule(
        image_size=16, pretrained_model_name_or_path=source, num_classes=2, lr_warmup_steps=1
    )
    trainer = L.Trainer(max_steps=2, logger=False, enable_checkpointing=False)
    trainer.fit(module, datamodule)
    assert trainer.global_step == 2
    with pytest.raises(InvalidSettingError, match="has 2 classes"):
        DDPMModule(image_size=16, pretrained_model_name_or_path=source)


# ---------------------------------------------------------------------------- errors
def test_mistakes_are_clear_errors_before_any_work(tmp_path: Path) -> None:
    datamodule = Blobs(count=8)
    module = tiny_conditional(datamodule)
    with pytest.raises(InvalidSettingError, match=r"'green'.*0: blue.*1: red"):
        module.generate(class_labels=["green"])
    with pytest.raises(InvalidSettingError, match=r"5.*0: blue"):
        module.generate(class_labels=[5])
    for wrong, words in (
        ({"num_classes": 0}, "num_classes"),
        ({"num_classes": 2, "id2label": {0: "red"}}, "id2label names 1 classes"),
        ({"num_classes": 2, "class_dropout_prob": 1.0}, "class_dropout_prob"),
    ):
        with pytest.raises(InvalidSettingError, match=words):
            DDPMModule(image_size=16, **TINY_UNET, **wrong)
    unconditional = DDPMModule(image_size=16, **TINY_UNET)
    with pytest.raises(InvalidSettingError, match="guidance_scale 3.0 needs a class-conditional"):
        unconditional.generate(guidance_scale=3.0)
    with pytest.raises(InvalidSettingError, match="unconditional"):
        unconditional.generate(class_labels=[0])
    # num_classes that disagrees with the data: refused in setup, before the first step.
    trainer = L.Trainer(max_steps=1, logger=False, enable_checkpointing=False)
    wrong = DDPMModule(image_size=16, **TINY_UNET, num_classes=3)
    with pytest.raises(InvalidSettingError, match="2 classes.*3 classes"):
        trainer.fit(wrong, datamodule)
    assert trainer.global_step == 0
    with pytest.raises(InvalidSettingError, match="no classes.*2 classes"):
        unlabelled = ImageDataModule(data_dir=str(write_blob_folder(tmp_path)), image_size=16)
        trainer.fit(tiny_conditional(datamodule), unlabelled)


# ---------------------------------------------------------------------------- training
def test_a_conditional_run_resumed_at_an_epoch_boundary_ends_with_the_same_weights(
    tmp_path: Path,
) -> None:
    assert_exact_resume(
        tmp_path,
        write_blob_folder(tmp_path / "images"),
        data={"label_column": "label"},
        model={"num_classes": 2, "class_dropout_prob": 0.5},
        outputs={"use_ema": False, "save_image_epochs": 100, "save_model_epochs": 100},
    )


def test_label_dropout_is_seeded_and_uses_the_null_class() -> None:
    module = tiny_conditional(Blobs(count=8), class_dropout_prob=0.5)
    labels = torch.zeros(1000, dtype=torch.int64)
    dropped = module.drop_labels(labels, batch_idx=0)
    assert torch.equal(dropped, module.drop_labels(labels, batch_idx=0))
    assert set(dropped.unique().tolist()) == {0, module.classes.null_class}
    assert 400 < int((dropped == module.classes.null_class).sum()) < 600
    assert not torch.equal(dropped, module.drop_labels(labels, batch_idx=1))


def test_two_process_ddp_conditional_run(tmp_path: Path) -> None:
    folder = write_blob_folder(tmp_path / "images")
    L.seed_everything(0)
    fit_tiny(
        tmp_path / "run",
        folder,
        [RecordRank(tmp_path)],
        train_batch_size=3,
        data={"label_column": "label"},
        model={"num_classes": 2},
        outputs={"eval_batch_size": 9, "save_model_epochs": 100},
        accelerator="cpu",
        devices=2,
        strategy="ddp_fork",
        max_epochs=1,
    )
    ranks = [torch.load(tmp_path / f"rank{rank}.pt") for rank in (0, 1)]
    for name, value in ranks[0]["state"].items():
        assert torch.equal(value, ranks[1]["state"][name]), name
    grids = sorted((tmp_path / "run" / "samples").iterdir())
    assert [grid.name for grid in grids] == ["0000.png"]
    # A 3x3 grid of 16 px images, cut to one row per class: 2 rows of 3.
    assert Image.open(grids[0]).size == (3 * 16, 2 * 16)


# ---------------------------------------------------------------------------- command line
def test_the_conditional_command_line_end_to_end(tmp_path: Path) -> None:
    folder = write_blob_folder(tmp_path / "images", per_class=4)
    run = tmp_path / "run"
    labelled = "--data.init_args.label_column=label"
    fit = console(
        *tiny_command(
            "fit",
            folder,
            run,
            labelled,
            "--trainer.max_epochs=1",
            "--output.sampling.guidance_scale=2",
        )
    )
    assert fit.returncode == 0, (fit.stdout + fit.stderr)[-3000:]
    assert (run / "samples" / "0000.png").is_file()
    pipeline = ClassConditionalDDPMPipeline.from_pretrained(run)
    assert pipeline.labels == {"blue": 0, "red": 1}
    sampled = console(
        "sample",
        f"--source={run}",
        f"--output_dir={tmp_path / 'sampled'}",
        "--num_images=4",
        "--num_inference_steps=2",
        "--sampler=ddim",
        "--class_labels=red,blue",
        "--guidance_scale=2",
    )
    assert sampled.returncode == 0, sampled.stderr[-3000:]
    assert sorted(p.name for p in (tmp_path / "sampled").iterdir()) == [
        "00000_red.png",
        "00001_red.png",
        "00002_blue.png",
        "00003_blue.png",
        "grid.png",
    ]
    predicted = console(
        *tiny_command(
            "predict",
            folder,
            run,
            labelled,
            f"--ckpt_path={run / 'checkpoints' / 'last.ckpt'}",
            "--predict.num_images=4",
            "--predict.sampling.num_inference_steps=2",
            "--predict.sampling.sampler=ddim",
        )
    )
    assert predicted.returncode == 0, predicted.stderr[-3000:]
    assert sorted(p.name for p in (run / "predictions").iterdir()) == [
        "00000_blue.png",
        "00001_blue.png",
        "00002_red.png",
        "00003_red.png",
    ]
    unknown = console("sample", f"--source={run}", "--class_labels=green", "--num_images=1")
    assert unknown.returncode == 2 and "0: blue" in unknown.stderr


def test_labels_follow_the_given_proportions() -> None:
    from ddpm_lightning.sampling.seeds import labels_in_proportion

    assert labels_in_proportion([3, 1], 8) == [0] * 6 + [1] * 2
    assert labels_in_proportion([1, 1, 1], 4) == [0, 0, 1, 2]  # largest remainder, lower id first
    assert labels_in_proportion([5, 0, 5], 3) == [0, 0, 2]


def test_fid_of_a_conditional_model_follows_the_real_class_mix(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from ddpm_lightning.callbacks import FIDCallback
    from ddpm_lightning.quality import FIDSettings
    from ddpm_lightning.sampling import ImageGenerator

    requested: list[int] = []
    original = ImageGenerator.__call__

    def record(self, seeds, on_batch=None, class_labels=None):
        requested.extend(class_labels or [])
        return original(self, seeds, on_batch, class_labels)

    monkeypatch.setattr(ImageGenerator, "__call__", record)
    datamodule = Blobs(count=8, train_batch_size=4)  # 4 blue (id 0), 4 red (id 1)...
    datamodule.load_dataset = lambda: Blobs.load_dataset(datamodule).select(range(7))  # 3 blue
    settings = FIDSettings(
        num_images=7, sampling=SamplingSettings("dpm-solver++", 1, batch_size=64), cache_dir=None
    )
    fid = FIDCallback(settings, feature_extractor=torch.nn.Flatten())
    trainer = L.Trainer(
        max_steps=1,
        logger=False,
        enable_checkpointing=False,
        callbacks=[fid],
        num_sanity_val_steps=0,
    )
    module = tiny_conditional(datamodule)
    trainer.fit(module, datamodule)
    assert datamodule.class_counts() == [3, 4]
    assert requested == [0, 0, 0, 1, 1, 1, 1]  # 7 images in the training set's 3:4 mix
    # The same for the evaluate command's path, given the real images' label column.
    from ddpm_lightning.quality import evaluate_samplers

    requested.clear()
    flatten = torch.nn.Flatten()
    evaluate_samplers(module, datamodule, [("ddim", 1)], settings, feature_extractor=flatten)
    assert requested == [0, 0, 0, 1, 1, 1, 1]


def test_a_streamed_class_folder_carries_labels(tmp_path: Path) -> None:
    folder = write_blob_folder(tmp_path / "images", per_class=3)
    datamodule = ImageDataModule(
        data_dir=str(folder), image_size=16, label_column="label", streaming=True
    )
    assert datamodule.discover_classes() == {0: "blue", 1: "red"}
    datamodule.setup("fit")
    batch = next(iter(datamodule.train_dataloader()))
    assert sorted(batch["class_labels"].tolist()) == [0, 0, 0, 1, 1, 1]
    images = batch["images"].float()
    redder = images[:, 0].mean(dim=(1, 2)) > images[:, 2].mean(dim=(1, 2))
    assert torch.equal(redder, batch["class_labels"] == 1)


def test_the_species_config_with_a_wrong_column_lists_the_real_ones(tmp_path: Path) -> None:
    folder = write_blob_folder(tmp_path / "images", per_class=2)
    result = console(
        "fit",
        f"--config={CONFIGS / 'butterflies.yaml'}",
        f"--config={CONFIGS / 'butterflies_species.yaml'}",
        "--data=ImageDataModule",
        f"--data.init_args.data_dir={folder}",
        "--data.init_args.label_column=scientific_name",
        f"--output.output_dir={tmp_path / 'run'}",
    )
    assert result.returncode == 2, result.stderr[-2000:]
    assert "scientific_name" in result.stderr and "['image', 'label']" in result.stderr
    assert not (tmp_path / "run" / "checkpoints").exists()  # stopped before any training
