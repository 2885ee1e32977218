from __future__ import annotations

import csv
import json
from dataclasses import replace
from datetime import timedelta
from pathlib import Path
from urllib.error import URLError

import lightning as L
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from lightning.fabric.plugins.environments.lightning import find_free_network_port
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.strategies import DDPStrategy
from PIL import Image
from torch import nn

from ddpm_lightning import DDPMModule, ImageDataModule
from ddpm_lightning.callbacks import EMA
from ddpm_lightning.callbacks.fid import FIDCallback
from ddpm_lightning.errors import InvalidSettingError
from ddpm_lightning.quality import (
    FeatureExtractorUnavailableError,
    FIDSettings,
    SampleQualityEvaluator,
    build_feature_extractor,
    evaluate_samplers,
    feature_extractor_id,
    format_table,
    real_image_batches,
)
from ddpm_lightning.sampling import SamplingSettings, shard

from .conftest import TINY_UNET

NUM_IMAGES = 8


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny models gain nothing from a second thread; on a busy machine it costs 10x."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


class TinyFeatures(nn.Module):
    """16 deterministic features: 4x4 average-pooled RGB through a fixed random projection."""

    num_features = 16

    def __init__(self) -> None:
        super().__init__()
        generator = torch.Generator().manual_seed(0)
        self.register_buffer("projection", torch.randn(48, 16, generator=generator) / 48**0.5)
        self.images_seen = 0

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        assert images.dtype == torch.uint8 and images.shape[1] == 3
        self.images_seen += images.shape[0]
        return F.adaptive_avg_pool2d(images.float() / 255, 4).flatten(1) @ self.projection


def write_smooth_images(folder: Path, count: int, size: int = 20) -> Path:
    """Colour gradients in random directions: a distribution far from uniform noise."""
    rng = np.random.default_rng(0)
    ys, xs = np.mgrid[0:size, 0:size] / (size - 1)
    folder.mkdir(parents=True)
    for index in range(count):
        start, end = rng.uniform(0, 120, (2, 3))
        angle = rng.uniform(0, 2 * np.pi)
        ramp = np.cos(angle) * xs + np.sin(angle) * ys
        ramp = (ramp - ramp.min()) / (ramp.max() - ramp.min())
        pixels = start + (end - start) * ramp[..., None]
        Image.fromarray(pixels.round().astype(np.uint8)).save(folder / f"smooth_{index:03d}.png")
    return folder


@pytest.fixture
def smooth_folder(tmp_path: Path) -> Path:
    return write_smooth_images(tmp_path / "smooth", 32)


def datamodule_for(folder: Path, val_fraction: float = 0.0) -> ImageDataModule:
    datamodule = ImageDataModule(
        data_dir=str(folder), image_size=16, train_batch_size=8, val_fraction=val_fraction
    )
    datamodule.prepare_data()
    datamodule.setup("fit")
    return datamodule


def tiny_module(tiny_model_kwargs: dict, **overrides) -> DDPMModule:
    torch.manual_seed(0)
    return DDPMModule(**{**tiny_model_kwargs, **overrides})


def fid_callback(
    cache_dir: Path, sampling: SamplingSettings | None = None, **overrides
) -> FIDCallback:
    """FID of 8 images (3 DPM-Solver++ steps by default, one batch) with TinyFeatures."""
    settings = {
        "num_images": NUM_IMAGES,
        "sampling": sampling or SamplingSettings("dpm-solver++", 3, batch_size=NUM_IMAGES),
        "cache_dir": str(cache_dir),
        "kid_subsets": 10,
        **overrides,
    }
    return FIDCallback(FIDSettings(**settings), feature_extractor=TinyFeatures())


def trainer_for(tmp_path: Path, callbacks: list, **overrides) -> L.Trainer:
    settings = {
        "max_epochs": 2,
        "accelerator": "cpu",
        "devices": 1,
        "limit_train_batches": 2,
        "callbacks": callbacks,
        "logger": CSVLogger(tmp_path / "logs", name="", version=""),
        "enable_progress_bar": False,
        "enable_model_summary": False,
        "num_sanity_val_steps": 1,
        "log_every_n_steps": 1,
        "default_root_dir": tmp_path,
        **overrides,
    }
    return L.Trainer(**settings)


def test_shards_are_contiguous_and_cover_every_seed() -> None:
    assert [list(shard(9, rank, 2)) for rank in range(2)] == [[0, 1, 2, 3, 4], [5, 6, 7, 8]]
    assert [len(shard(2, rank, 3)) for rank in range(3)] == [1, 1, 0]
    assert sum((list(shard(10, rank, 4)) for rank in range(4)), []) == list(range(10))


def test_training_images_score_zero_and_noise_scores_far(smooth_folder: Path) -> None:
    dataset = datamodule_for(smooth_folder).train_dataset
    evaluator = SampleQualityEvaluator(TinyFeatures(), cache_dir=None, kid_subsets=20)
    evaluator.prepare(dataset, {"dataset": "smooth"})
    count = len(dataset)
    same = evaluator.score(real_image_batches(dataset, range(count), 5), count)
    generator = torch.Generator().manual_seed(1)
    noise_images = torch.randint(0, 256, (count, 3, 16, 16), generator=generator, dtype=torch.uint8)
    noise = evaluator.score([noise_images], count)
    assert abs(same["fid"]) < 1e-6
    # KID's unbiased estimate of a set against itself is slightly negative (it leaves out the
    # kernel's diagonal within a set, not across sets); near 0 next to noise's value.
    assert abs(same["kid"]) < 0.01
    assert noise["fid"] > 1.0
    assert noise["kid"] > 100 * abs(same["kid"])


def test_grayscale_images_reach_the_extractor_as_rgb() -> None:
    generator = torch.Generator().manual_seed(0)
    gray = torch.randint(0, 256, (12, 1, 16, 16), generator=generator, dtype=torch.uint8)
    evaluator = SampleQualityEvaluator(TinyFeatures(), cache_dir=None, kid_subsets=5)
    evaluator.prepare(gray, {"dataset": "gray"})  # TinyFeatures asserts 3 channels
    values = evaluator.score([gray], len(gray))
    assert abs(values["fid"]) < 1e-3


def test_evaluate_samplers_caches_real_statistics(
    tmp_path: Path, smooth_folder: Path, tiny_model_kwargs: dict
) -> None:
    datamodule = datamodule_for(smooth_folder)
    module = tiny_module(tiny_model_kwargs)
    cache = tmp_path / "cache"
    samplers = [("ddim", 2), ("dpm-solver++", 3)]
    settings = FIDSettings(num_images=NUM_IMAGES, cache_dir=str(cache), kid_subsets=10)
    rng_state = torch.get_rng_state()

    first = TinyFeatures()
    rows = evaluate_samplers(module, datamodule, samplers, settings, feature_extractor=first)
    assert first.images_seen == 32 + 2 * NUM_IMAGES
    assert len(list(cache.glob("*.pt"))) == 1
    assert not list(cache.glob(".*"))  # no temporary file left behind
    assert torch.equal(torch.get_rng_state(), rng_state)  # the global RNG is never touched

    second = TinyFeatures()
    again = evaluate_samplers(module, datamodule, samplers, settings, feature_extractor=second)
    assert second.images_seen == 2 * NUM_IMAGES  # real statistics came from the cache
    for row, same in zip(rows, again, strict=True):
        assert (same["sampler"], same["steps"]) == (row["sampler"], row["steps"])
        assert same["fid"] == pytest.approx(row["fid"], rel=1e-6)
        assert same["kid"] == pytest.approx(row["kid"], rel=1e-6, abs=1e-9)
        assert row["seconds"] > 0
    table = format_table(again)
    header, rule, *lines = table.splitlines()
    assert [cell.strip() for cell in header.split("|")[1:-1]] == [
        "sampler",
        "steps",
        "images",
        "FID",
        "KID",
        "KID std",
        "seconds",
    ]
    assert set(rule) == {"|", "-", ":"} and len(lines) == 2
    assert lines[1].split("|")[1].strip() == "dpm-solver++"

    # Another real set (the first 20 images) is another cache entry.
    third = TinyFeatures()
    first_20 = replace(settings, max_real_images=20)
    evaluate_samplers(module, datamodule, samplers[:1], first_20, feature_extractor=third)
    assert third.images_seen == 20 + NUM_IMAGES
    assert len(list(cache.glob("*.pt"))) == 2


def test_fid_does_not_depend_on_the_batch_size(
    smooth_folder: Path, tiny_model_kwargs: dict
) -> None:
    datamodule = datamodule_for(smooth_folder)
    module = tiny_module(tiny_model_kwargs)
    values = [
        evaluate_samplers(
            module,
            datamodule,
            [("ddim", 2)],
            FIDSettings(
                num_images=NUM_IMAGES,
                sampling=SamplingSettings("ddim", 2, batch_size=batch_size),
                cache_dir=None,
                kid_subsets=10,
            ),
            feature_extractor=TinyFeatures(),
        )[0]
        for batch_size in (3, NUM_IMAGES)
    ]
    assert values[0]["fid"] == pytest.approx(values[1]["fid"], rel=1e-4)
    assert values[0]["kid"] == pytest.approx(values[1]["kid"], rel=1e-3, abs=1e-6)


def offline(*args, **kwargs):
    raise URLError("no network in this test")


def test_missing_inception_weights_raise_a_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, smooth_folder: Path, tiny_model_kwargs: dict
) -> None:
    import torch_fidelity.feature_extractor_inceptionv3 as inception

    monkeypatch.setattr(inception, "load_state_dict_from_url", offline)
    with pytest.raises(FeatureExtractorUnavailableError) as error:
        build_feature_extractor()
    message = str(error.value)
    assert isinstance(error.value, RuntimeError)
    assert "Could not download the Inception-v3 weights" in message
    assert inception.URL_INCEPTION_V3 in message
    assert "feature_extractor_weights_path" in message and "feature_extractor" in message

    missing = tmp_path / "missing.pth"
    with pytest.raises(FeatureExtractorUnavailableError, match="missing.pth"):
        build_feature_extractor(feature_extractor_weights_path=str(missing))

    # Through a Trainer, it fails in setup, before any training step.
    module = tiny_module(tiny_model_kwargs)
    settings = FIDSettings(cache_dir=str(tmp_path / "cache"))
    trainer = trainer_for(tmp_path, [FIDCallback(settings)])
    with pytest.raises(FeatureExtractorUnavailableError, match="feature_extractor_weights_path"):
        trainer.fit(module, datamodule_for(smooth_folder))
    assert trainer.global_step == 0


def test_inception_loads_from_a_local_weights_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, smooth_folder: Path
) -> None:
    import torch_fidelity.feature_extractor_inceptionv3 as inception

    # Randomly initialised weights stand in for the real file (which needs a download).
    with monkeypatch.context() as patch:
        patch.setattr(inception, "load_state_dict_from_url", lambda *args, **kwargs: None)
        patch.setattr(
            inception.FeatureExtractorInceptionV3, "load_state_dict", lambda *a, **k: None
        )
        weights = tmp_path / "weights-inception-2015-12-05-6726825d.pth"
        torch.save(build_feature_extractor(feature=64).state_dict(), weights)
    monkeypatch.setattr(inception, "load_state_dict_from_url", offline)  # no download allowed

    extractor = build_feature_extractor(feature=64, feature_extractor_weights_path=str(weights))
    dataset = datamodule_for(smooth_folder).train_dataset
    evaluator = SampleQualityEvaluator(extractor, cache_dir=tmp_path / "cache", kid_subsets=5)
    evaluator.prepare(dataset, {"dataset": "smooth"}, max_real_images=12, batch_size=12)
    assert evaluator.num_features == 64
    assert evaluator.cache_file is not None and evaluator.cache_file.is_file()
    assert feature_extractor_id(extractor, 64, str(weights)).endswith(
        "NoTrainInceptionV3/64/weights-inception-2015-12-05-6726825d.pth"
    )
    values = evaluator.score(real_image_batches(dataset, range(12), 12), 12)
    assert abs(values["fid"]) < 1e-2


def read_logged(tmp_path: Path, name: str) -> list[float]:
    with open(tmp_path / "logs" / "metrics.csv") as file:
        return [float(row[name]) for row in csv.DictReader(file) if row.get(name)]


@pytest.mark.parametrize(
    ("val_fraction", "val_check_interval", "computed_at"),
    [
        (0.0, 1.0, "train epoch end"),  # no validation
        (0.25, 1.0, "train epoch end"),  # validation once per epoch
        (0.25, 0.5, "validation end"),  # ModelCheckpoint saves after each validation
    ],
)
def test_fit_logs_fid_that_model_checkpoint_monitors(
    tmp_path: Path,
    smooth_folder: Path,
    tiny_model_kwargs: dict,
    val_fraction: float,
    val_check_interval: float,
    computed_at: str,
) -> None:
    callback = fid_callback(tmp_path / "cache")
    checkpoint = ModelCheckpoint(dirpath=tmp_path / "checkpoints", monitor="val/fid", mode="min")
    trainer = trainer_for(
        tmp_path,
        [callback, checkpoint],
        val_check_interval=val_check_interval,
    )
    trainer.fit(tiny_module(tiny_model_kwargs), datamodule_for(smooth_folder, val_fraction))

    logged = read_logged(tmp_path, "val/fid")
    assert len(logged) == 2  # once per epoch, never in the sanity check
    assert {"val/fid", "val/kid", "val/kid_std"} <= set(trainer.callback_metrics)
    assert float(trainer.callback_metrics["val/fid"]) == pytest.approx(logged[-1])
    assert checkpoint.best_model_score is not None
    assert float(checkpoint.best_model_score) == pytest.approx(min(logged))
    assert Path(checkpoint.best_model_path).is_file()
    assert callback.last_metrics["fid"] == pytest.approx(logged[-1])


def test_evaluate_at_train_end_logs_to_the_loggers(
    tmp_path: Path, smooth_folder: Path, tiny_model_kwargs: dict
) -> None:
    callback = fid_callback(tmp_path / "cache", every_n_epochs=5, evaluate_at_train_end=True)
    trainer = trainer_for(tmp_path, [callback], max_epochs=1, limit_train_batches=1)
    trainer.fit(tiny_module(tiny_model_kwargs), datamodule_for(smooth_folder))
    assert read_logged(tmp_path, "val/fid") == [pytest.approx(callback.last_metrics["fid"])]
    assert "val/fid" not in trainer.callback_metrics  # not due in any epoch


def test_fid_is_computed_on_the_ema_weights(
    tmp_path: Path, smooth_folder: Path, tiny_model_kwargs: dict
) -> None:
    class RawWeights(L.Callback):
        def on_train_epoch_end(self, trainer, pl_module) -> None:
            self.state = {k: v.clone() for k, v in pl_module.state_dict().items()}

    raw = RawWeights()
    sampling = SamplingSettings("ddim", 2, batch_size=NUM_IMAGES)
    callback = fid_callback(tmp_path / "cache", sampling)
    module = tiny_module(tiny_model_kwargs, learning_rate=1e-2)
    trainer = trainer_for(tmp_path, [raw, EMA(decay=0.9), callback], max_epochs=1, logger=False)
    trainer.fit(module, datamodule_for(smooth_folder))
    assert module.training  # train mode restored after sampling

    def fid_of(weights: dict | None) -> float:
        scored = tiny_module(tiny_model_kwargs)
        scored.load_state_dict(weights if weights is not None else module.state_dict())
        settings = FIDSettings(
            num_images=NUM_IMAGES,
            sampling=sampling,
            cache_dir=str(tmp_path / "cache"),
            kid_subsets=10,
        )
        return evaluate_samplers(
            scored,
            datamodule_for(smooth_folder),
            [("ddim", 2)],
            settings,
            feature_extractor=TinyFeatures(),
        )[0]["fid"]

    # EMA's on_train_end copied the averaged weights into the module.
    assert callback.last_metrics["fid"] == pytest.approx(fid_of(None), rel=1e-5)
    assert callback.last_metrics["fid"] != pytest.approx(fid_of(raw.state), rel=1e-3)


def test_two_ranks_give_the_one_process_value(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, smooth_folder: Path, tiny_model_kwargs: dict
) -> None:
    # Lightning would leave its MASTER_PORT in this process's environment; monkeypatch undoes it.
    monkeypatch.setenv("MASTER_PORT", str(find_free_network_port()))

    class Recorded(FIDCallback):
        def on_train_end(self, trainer, pl_module) -> None:
            super().on_train_end(trainer, pl_module)
            record = {
                "metrics": self.last_metrics,
                "logged": float(trainer.callback_metrics["val/fid"]),
                "images_seen": self.feature_extractor.images_seen,
            }
            out = tmp_path / f"{trainer.world_size}-rank{trainer.global_rank}.json"
            out.write_text(json.dumps(record))

    def run(devices: int) -> None:
        # learning_rate=0 keeps the initial weights, so both runs sample the same model.
        strategy = DDPStrategy(start_method="fork", timeout=timedelta(seconds=60))
        settings = FIDSettings(
            num_images=9,  # 5 + 4 images: uneven shares
            sampling=SamplingSettings("dpm-solver++", 2, batch_size=4),
            cache_dir=str(tmp_path / f"cache{devices}"),
            kid_subsets=10,
            kid_subset_size=6,  # random subsets: equal only if features are gathered in order
        )
        callback = Recorded(settings, feature_extractor=TinyFeatures())
        trainer = trainer_for(
            tmp_path,
            [callback],
            max_epochs=1,
            limit_train_batches=1,
            logger=False,
            enable_checkpointing=False,
            devices=devices,
            strategy=strategy if devices > 1 else "auto",
        )
        trainer.fit(
            tiny_module(tiny_model_kwargs, learning_rate=0.0), datamodule_for(smooth_folder)
        )

    run(1)
    run(2)
    single = json.loads((tmp_path / "1-rank0.json").read_text())
    ranks = [json.loads((tmp_path / f"2-rank{rank}.json").read_text()) for rank in range(2)]
    # Each rank extracted half of the 32 real images and its own share of the 9 samples.
    assert [rank["images_seen"] for rank in ranks] == [16 + 5, 16 + 4]
    for rank in ranks:
        assert rank["metrics"]["fid"] == pytest.approx(single["metrics"]["fid"], rel=1e-4)
        assert rank["metrics"]["kid"] == pytest.approx(single["metrics"]["kid"], rel=1e-3, abs=1e-6)
        assert rank["logged"] == pytest.approx(single["logged"], rel=1e-4)
    # The cache written under DDP holds the full statistics, as one process writes them.
    (two,) = (tmp_path / "cache2").glob("*.pt")
    (one,) = (tmp_path / "cache1").glob("*.pt")
    assert two.name == one.name
    two, one = torch.load(two), torch.load(one)
    # The cache holds the real features; FID's sums and KID's set are computed from them.
    assert two["real_features"].shape == (32, TinyFeatures.num_features)
    assert torch.allclose(two["real_features"], one["real_features"])


def test_evaluate_command_prints_a_table_per_sampler(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    smooth_folder: Path,
    capsys: pytest.CaptureFixture,
) -> None:
    import torch_fidelity.feature_extractor_inceptionv3 as inception

    from ddpm_lightning.cli import run

    with monkeypatch.context() as patch:  # random weights stand in for the real download
        patch.setattr(inception, "load_state_dict_from_url", lambda *args, **kwargs: None)
        patch.setattr(
            inception.FeatureExtractorInceptionV3, "load_state_dict", lambda *a, **k: None
        )
        weights = tmp_path / "weights-inception-2015-12-05-6726825d.pth"
        torch.save(build_feature_extractor(feature=64).state_dict(), weights)
    monkeypatch.setattr(inception, "load_state_dict_from_url", offline)
    pipeline = tmp_path / "pipeline"
    DDPMModule(image_size=16, **TINY_UNET).save_pretrained(pipeline)
    rows = run(
        [
            "evaluate",
            f"--source={pipeline}",
            f"--data_dir={smooth_folder}",
            "--samplers=[ddim:2, unipc:3]",
            "--num_images=4",
            "--feature=64",
            f"--feature_extractor_weights_path={weights}",
            f"--cache_dir={tmp_path / 'cache'}",
            "--device=cpu",
            "--batch_size=4",
        ]
    )
    assert [(row["sampler"], row["steps"]) for row in rows] == [("ddim", 2), ("unipc", 3)]
    assert all(row["fid"] > 0 for row in rows)
    printed = capsys.readouterr().out
    assert "ddim" in printed and "unipc" in printed and "fid" in printed.lower()


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"feature": 100}, "feature must be one of"),
        ({"kid_subset_size": 1}, "kid_subset_size must be at least 2"),
        ({"num_images": 1}, "at least 2 generated images"),
        ({"every_n_epochs": 0}, "every_n_epochs must be at least 1"),
        ({"sampling": {"sampler": "euler"}}, "Unknown sampler"),
    ],
)
def test_bad_settings_fail_when_the_callback_is_built(settings: dict, message: str) -> None:
    # The callback's settings are made before it: they refuse the mistake, before any work.
    with pytest.raises(InvalidSettingError, match=message) as error:
        if "sampling" in settings:
            settings = {"sampling": SamplingSettings(**settings["sampling"])}
        FIDCallback(FIDSettings(**settings))
    assert isinstance(error.value, ValueError)


def test_evaluate_scores_a_center_cropped_model_against_cropped_real_images(
    tmp_path: Path, image_folder: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Issue 20, bug 1: the real images of `evaluate` are those of the in-training FID.
    from ddpm_lightning import evaluation_command
    from ddpm_lightning.quality.real_images import pixels_digest

    from .conftest import fit_tiny

    fit_tiny(tmp_path / "run", image_folder, [], data={"center_crop": True}, max_epochs=1)
    given: dict = {}

    def capture(module, real, pairs, settings):
        given["real"] = real
        return []

    monkeypatch.setattr(evaluation_command, "evaluate_samplers", capture)
    checkpoint = str(tmp_path / "run" / "checkpoints" / "last.ckpt")
    evaluation_command.evaluate(checkpoint, data_dir=str(image_folder), samplers="ddim:2")

    def real_pixels(center_crop: bool) -> str:
        data = ImageDataModule(
            data_dir=str(image_folder), image_size=16, random_flip=False, center_crop=center_crop
        )
        data.prepare_data()
        data.setup("fit")
        return pixels_digest(data.train_dataset, 12)

    real = given["real"]
    real.prepare_data()
    real.setup("fit")
    assert real.center_crop is True
    assert pixels_digest(real.train_dataset, 12) == real_pixels(center_crop=True)
    assert real_pixels(center_crop=True) != real_pixels(center_crop=False)  # the test can fail
    # A pipeline folder has no training data settings: no crop unless asked.
    assert evaluation_command.trained_with_center_crop(str(tmp_path / "run")) is False
