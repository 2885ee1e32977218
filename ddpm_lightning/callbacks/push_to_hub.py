"""``PushToHubCallback``: upload each exported pipeline, the latest grid and a model card."""

from __future__ import annotations

import os
import shutil
import tempfile
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

from huggingface_hub import HfApi, get_token
from lightning.pytorch import Callback, LightningModule, Trainer

from ddpm_lightning.callbacks.model_card import model_card, training_settings
from ddpm_lightning.callbacks.pipeline_export import PipelineExportCallback
from ddpm_lightning.callbacks.sample_grid import SampleGridCallback
from ddpm_lightning.errors import InvalidSettingError, UsageError
from ddpm_lightning.utils.atomic_export import PIPELINE_MARKER


class HubPushError(UsageError, RuntimeError):
    """The Hub repository cannot be used (no token, no rights, unreachable) or a push failed."""


class PushToHubCallback(Callback):
    """Push the pipeline after every export, in the background, never a Lightning checkpoint.

    Needs a ``PipelineExportCallback`` (the tutorial pushed a folder with no pipeline in it).
    The token and the repository are checked at fit start, not after fifty epochs. Each push
    uploads a snapshot of the pipeline files, the latest sample grid and a model card on a
    background thread. Only global rank zero talks to the Hub.

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
        settings = training_settings(trainer, trainer.lightning_module)
        grid_name = f"samples/{grid.name}" if grid else None
        card = model_card(self.hub_model_id, settings, epoch, trainer.global_step, grid_name)
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
        for future in list(self._pending):
            future.exception()  # blocks until it is done
        self._raise_failed_pushes()

    def teardown(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        """Stop the background thread."""
        if self._executor is not None:
            self._executor.shutdown(wait=True)
            self._executor = None


def _snapshot(folder: Path, grid: Path | None, card: str) -> Path:
    """Hard-link the pipeline files, grid and card into a private folder for the upload.

    Exports replace files by renaming, so the links keep this version while the next export
    lands. Only pipeline entries are taken: no checkpoint or stray file reaches the Hub.
    """
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
