"""``PushToHubCallback``: upload each exported pipeline, the latest grid and a model card."""

from __future__ import annotations

import os
import shutil
import tempfile
from concurrent.futures import Future, ThreadPoolExecutor, wait
from pathlib import Path
from typing import Any

from huggingface_hub import HfApi, get_token
from lightning.pytorch import Callback, LightningModule, Trainer

from ddpm_lightning.callbacks.pipeline_export import PipelineExportCallback
from ddpm_lightning.callbacks.sample_grid import SampleGridCallback
from ddpm_lightning.errors import InvalidSettingError, UsageError
from ddpm_lightning.utils.atomic_export import PIPELINE_MARKER

#: Module hyperparameters and datamodule attributes worth a line in the card.
_MODULE_SETTINGS = """image_size channels block_out_channels layers_per_block num_classes
    learning_rate lr_scheduler lr_warmup_steps pretrained_model_name_or_path""".split()
_FORMULATION_SETTINGS = (
    """num_train_timesteps beta_schedule prediction_type min_snr_gamma""".split()
)
_DATA_SETTINGS = "dataset_name data_dir split train_batch_size random_flip center_crop".split()


def model_card(repo_id: str, trainer: Trainer, epoch: int, grid: Path | None) -> str:
    """A Hub model card (README.md) as diffusers' scripts write it, with the run's settings."""
    module = trainer.lightning_module
    hparams = module.hparams
    settings = {key: hparams.get(key) for key in _MODULE_SETTINGS if key in hparams}
    formulation = hparams.get("formulation") or {}
    settings["formulation"] = str(formulation.get("class_path", "")).rpartition(".")[2]
    init_args = formulation.get("init_args") or {}
    settings.update({key: init_args[key] for key in _FORMULATION_SETTINGS if key in init_args})
    datamodule = getattr(trainer, "datamodule", None)
    for key in _DATA_SETTINGS:
        if hasattr(datamodule, key):
            settings[key] = getattr(datamodule, key)
    settings["devices x nodes"] = f"{trainer.num_devices} x {trainer.num_nodes}"
    settings["accumulate_grad_batches"] = trainer.accumulate_grad_batches
    settings["precision"] = trainer.precision
    settings["ema"] = any(
        type(cb).__name__ in ("EMA", "EMAWeightAveraging") for cb in trainer.callbacks
    )
    dataset = settings.get("dataset_name", "unknown")
    if dataset == "imagefolder":
        dataset = f"a local image folder ({settings.get('data_dir')})"
    rows = "\n".join(f"| {key} | {value} |" for key, value in settings.items())
    samples = f"![Samples after epoch {epoch}](samples/{grid.name})\n" if grid else ""
    pipeline = type(module.to_pipeline()).__name__
    kind, tag, usage = _kind_and_usage(repo_id, module.classes, pipeline)
    return f"""---
library_name: diffusers
tags:
- pytorch
- diffusers
- {tag}
- ddpm_lightning
---

# {repo_id}

A{kind} image generation model (a `UNet2DModel`, exported as `{pipeline}`) on {dataset},
trained with [ddpm_lightning](https://pypi.org/project/ddpm-lightning/) following the diffusers
"train a diffusion model" tutorial. This upload is after epoch {epoch} (step {trainer.global_step}).

## Samples

{samples}
## Usage

{usage}

## Training settings

| setting | value |
| --- | --- |
{rows}
"""


def _kind_and_usage(repo_id: str, classes: Any, pipeline: str) -> tuple[str, str, str]:
    """The card's model kind, its tag and how to load it: the ``pipeline`` class exported."""
    conditional = classes.conditional
    kind, tag = (
        (" class-conditional", "class-conditional-image-generation")
        if conditional
        else ("n unconditional", "unconditional-image-generation")
    )
    if pipeline == "DDPMPipeline":
        usage = f"""```python
from diffusers import DDPMPipeline

pipeline = DDPMPipeline.from_pretrained("{repo_id}")
image = pipeline().images[0]
```"""
        return kind, tag, usage
    call, labels, guidance = "batch_size=1", "", ""
    if conditional:
        names = [classes.name(index) for index in range(classes.num_classes)]
        call = f'class_labels=pipeline.get_label_ids(["{names[0]}"]), guidance_scale=3.0'
        labels = f"\n\nClass labels ({len(names)}): {', '.join(f'`{n}`' for n in names)}."
        guidance = ", with classifier-free guidance above `guidance_scale` 1"
    usage = f"""A `{pipeline}` (`pip install ddpm_lightning`; importing its pipelines lets
diffusers find the class){guidance}.

```python
import ddpm_lightning.pipelines  # noqa: F401
from diffusers import DiffusionPipeline

pipeline = DiffusionPipeline.from_pretrained("{repo_id}")
image = pipeline({call}).images[0]
```{labels}"""
    return kind, tag, usage


class HubPushError(UsageError, RuntimeError):
    """The Hub repository cannot be used (no token, no rights, unreachable) or a push failed."""


class PushToHubCallback(Callback):
    """Push each export of ``PipelineExportCallback``, the latest grid and a model card.

    Token and repository are checked at fit start; pushes run on a thread, from rank zero only.

    Args:
        hub_model_id: ``user/name`` of the model repository.
        token: a Hub token; if None, the usual places (``HF_TOKEN``, ``hf auth login``).
    """

    def __init__(
        self, hub_model_id: str, hub_private_repo: bool = False, token: str | None = None
    ) -> None:
        if not hub_model_id or "/" not in hub_model_id:
            raise InvalidSettingError(
                f"hub_model_id must look like 'user/model-name', got {hub_model_id!r}."
            )
        self.hub_model_id = hub_model_id
        self.hub_private_repo = hub_private_repo
        self._token = token
        self._api: HfApi | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._pending: list[Future] = []
        self._grids: SampleGridCallback | None = None

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        """Fail fast: find the export callback and the token, and create the repository."""
        if stage != "fit":
            return
        exports = [cb for cb in trainer.callbacks if isinstance(cb, PipelineExportCallback)]
        if not exports:
            raise InvalidSettingError(
                "PushToHubCallback pushes what PipelineExportCallback writes: add one to the "
                "Trainer's callbacks (the CLI does when push_to_hub is set)."
            )
        grids = [cb for cb in trainer.callbacks if isinstance(cb, SampleGridCallback)]
        self._grids = grids[0] if grids else None
        exports[0].add_listener(self._schedule_push)
        if not trainer.is_global_zero:
            return
        token = self._token or get_token()
        if not token:
            raise HubPushError(
                f"push_to_hub is on but no Hugging Face token was found for {self.hub_model_id!r}. "
                "Log in with `hf auth login`, set the HF_TOKEN environment variable, or turn "
                "push_to_hub off."
            )
        self._api = HfApi(token=token)
        try:
            self._api.create_repo(self.hub_model_id, private=self.hub_private_repo, exist_ok=True)
        except Exception as error:  # any Hub failure must stop the run before training
            raise HubPushError(
                f"Could not create or reach the Hub repository {self.hub_model_id!r}: {error}. "
                "Check the name, your token's write access, and the network; or turn "
                "push_to_hub off."
            ) from error
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="hub-push")

    def _schedule_push(self, trainer: Trainer, folder: Path, epoch: int) -> None:
        if self._api is None or self._executor is None:
            return
        self._raise_failed_pushes()
        grid = self._grids.last_grid_path if self._grids else None
        card = model_card(self.hub_model_id, trainer, epoch, grid)
        snapshot = _snapshot(folder, grid, card)
        self._pending.append(self._executor.submit(self._push, snapshot, epoch))

    def _push(self, snapshot: Path, epoch: int) -> None:
        try:
            assert self._api is not None
            self._api.upload_folder(
                repo_id=self.hub_model_id,
                folder_path=snapshot,
                commit_message=f"Epoch {epoch}",
                ignore_patterns=["*.ckpt", "step_*", "epoch_*"],
            )
        finally:
            shutil.rmtree(snapshot, ignore_errors=True)

    def _raise_failed_pushes(self) -> None:
        done = [future for future in self._pending if future.done()]
        self._pending = [future for future in self._pending if future not in done]
        for future in done:
            if (error := future.exception()) is not None:
                raise HubPushError(f"Pushing to {self.hub_model_id!r} failed: {error}") from error

    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Wait for the last push, so the process does not exit with an upload half done."""
        wait(self._pending)
        self._raise_failed_pushes()

    def teardown(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        """Stop the background thread."""
        if self._executor is not None:
            self._executor.shutdown(wait=True)
            self._executor = None


def _snapshot(folder: Path, grid: Path | None, card: str) -> Path:
    """Hard-link the pipeline files, grid and card aside: the next export renames over them."""
    snapshot = Path(tempfile.mkdtemp(prefix="ddpm-lightning-push-"))
    subfolders = [name for name in ("unet", "scheduler") if (folder / name).exists()]
    for name in [PIPELINE_MARKER, *subfolders]:
        source = folder / name
        if source.is_dir():
            shutil.copytree(source, snapshot / name, copy_function=_link_or_copy)
        else:
            _link_or_copy(source, snapshot / name)
    if grid is not None and grid.exists():
        (snapshot / "samples").mkdir()
        _link_or_copy(grid, snapshot / "samples" / grid.name)
    (snapshot / "README.md").write_text(card, encoding="utf-8")
    return snapshot


def _link_or_copy(source: str | os.PathLike, destination: str | os.PathLike) -> None:
    try:
        os.link(source, destination)
    except OSError:
        shutil.copy2(source, destination)
