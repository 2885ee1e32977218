"""Each private name of a dependency we use still exists (ddpm_lightning/private_apis.py)."""

from __future__ import annotations

import ast
from pathlib import Path

import lightning as L
import torch

from ddpm_lightning import DDPMModule, private_apis
from ddpm_lightning.callbacks import EMA

from .conftest import TINY_UNET

PACKAGE = Path(private_apis.__file__).parent
UPGRADE = (
    f"checked against Lightning {private_apis.CHECKED_LIGHTNING_VERSION}, installed "
    f"{L.__version__}: update ddpm_lightning/private_apis.py for this version (or pin lightning)."
)


def test_weight_averaging_still_keeps_its_averaged_model_where_we_read_it() -> None:
    callback = EMA()
    trainer = L.Trainer(callbacks=[callback], logger=False, accelerator="cpu")
    callback.setup(trainer, DDPMModule(image_size=16, **TINY_UNET), "fit")
    average = private_apis.averaged_model(callback)
    assert isinstance(average, torch.optim.swa_utils.AveragedModel), (
        f"WeightAveraging no longer has _average_model after setup; {UPGRADE}"
    )


def test_the_trainer_still_has_its_time_based_validation_interval() -> None:
    trainer = L.Trainer(val_check_interval="00:00:01:00", logger=False)
    assert private_apis.val_check_time_interval(trainer) is not None, (
        f"Trainer._val_check_time_interval is gone; {UPGRADE}"
    )
    assert private_apis.val_check_time_interval(L.Trainer(logger=False)) is None


def test_model_checkpoint_still_records_the_step_of_its_latest_save(tmp_path) -> None:
    from lightning.pytorch.callbacks import ModelCheckpoint

    callback = ModelCheckpoint(dirpath=tmp_path)
    module = DDPMModule(image_size=16, **TINY_UNET, lr_warmup_steps=1)
    images = torch.zeros(2, 3, 16, 16)
    loader = torch.utils.data.DataLoader([{"images": image} for image in images], batch_size=2)
    trainer = L.Trainer(max_steps=1, callbacks=[callback], logger=False, enable_progress_bar=False)
    trainer.fit(module, loader)
    assert private_apis.last_saved_step(callback) == 1, (
        f"ModelCheckpoint._last_global_step_saved is gone; {UPGRADE}"
    )


def test_no_module_imports_underscore_names_or_touches_private_attributes_elsewhere() -> None:
    for path in PACKAGE.rglob("*.py"):
        if path.name == "private_apis.py":
            continue
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom):
                private = [alias.name for alias in node.names if alias.name.startswith("_")]
                assert not private, f"{path.name} imports {private} from {node.module}"
            if isinstance(node, ast.Attribute) and node.attr.startswith("_"):
                owner = node.value
                own = isinstance(owner, ast.Name) and owner.id in ("self", "cls")
                dunder = node.attr.startswith("__")
                assert own or dunder, f"{path.name}:{node.lineno} uses the private .{node.attr}"
