"""An offline FD feature extractor: a small CNN trained to tell the 10 butterfly species apart.

Inception-v3 weights cannot be downloaded on the benchmark machines, and a random network's
features say little about what a butterfly looks like. A classifier of the species (labels
from the file names, ``001``-``010``) learns exactly the features that separate real
butterflies, at the recipes' own image size. Its penultimate layer (``FEATURES`` numbers per
image) plays the role of Inception's pool features in FID. It trains in seconds on two cores,
seeded, and is cached on disk keyed by the pixels, labels and settings, so every later run
scores with the same network.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import datasets
import torch
from torch import Tensor, nn

#: Where the classifier and the real-feature cache live (next to the package's FID cache).
CACHE_ROOT = Path("~/.cache/ddpm_lightning/quality")
#: Bumped whenever the network or its training changes what a cached file means.
CLASSIFIER_VERSION = 1
#: Width of the penultimate layer: the features.
FEATURES = 128


class SpeciesClassifier(nn.Module):
    """Four conv blocks, global average pooling, a linear head; uint8 images in.

    ``forward`` returns the pooled features (what FD needs and what the package's
    ``extract_features`` calls); :meth:`logits` adds the head for training. Any image size
    works (the pooling is global), so one class serves 32 and 64 px recipes.
    """

    def __init__(self, num_classes: int = 10, width: int = 16) -> None:
        super().__init__()
        channels = (3, width, 2 * width, 4 * width)
        blocks: list[nn.Module] = []
        for cin, cout in zip(channels, channels[1:]):
            blocks += [nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU()]
            blocks += [nn.MaxPool2d(2)]
        blocks += [nn.Conv2d(channels[-1], FEATURES, 3, padding=1), nn.BatchNorm2d(FEATURES)]
        blocks += [nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten()]
        self.body = nn.Sequential(*blocks)
        self.head = nn.Sequential(nn.Dropout(0.2), nn.Linear(FEATURES, num_classes))
        #: Read by the package's ``count_features`` instead of a probe pass.
        self.num_features = FEATURES

    def forward(self, images: Tensor) -> Tensor:
        """(N, FEATURES) float features of uint8 (N, 3, H, W) images."""
        return self.body(images.float().div(127.5).sub(1.0))

    def logits(self, images: Tensor) -> Tensor:
        """Class scores, for training and the accuracy check."""
        return self.head(self(images))


@dataclass(frozen=True)
class ClassifierSettings:
    """How the classifier is trained; all of it goes into the cache key."""

    steps: int = 400
    batch_size: int = 64
    learning_rate: float = 3e-3
    weight_decay: float = 5e-4
    held_out_fraction: float = 0.2
    seed: int = 0
    width: int = 16


@dataclass
class TrainedClassifier:
    """The frozen network, its held-out accuracy and where it is cached."""

    network: SpeciesClassifier
    held_out_accuracy: float
    num_held_out: int
    key: str
    path: Path
    cached: bool
    seconds: float


def species_labels(data_module) -> Tensor:
    """Int64 species ids 0..9 in the order of ``data_module.train_dataset``.

    The decoded dataset keeps the raw folder's order (no validation split), so the labels come
    from the raw dataset's file names: ``0010001.jpg`` is species ``001`` -> id 0.
    """
    raw = data_module.load_dataset()
    raw = raw.cast_column(data_module.image_column, datasets.Image(decode=False))
    names = [os.path.basename(item["path"]) for item in raw[data_module.image_column]]
    species = sorted({name[:3] for name in names})
    return torch.tensor([species.index(name[:3]) for name in names])


def classifier_key(images: Tensor, labels: Tensor, settings: ClassifierSettings) -> str:
    """A digest of the training pixels, labels, settings and network version."""
    digest = hashlib.sha256()
    digest.update(images.contiguous().numpy().tobytes())
    digest.update(labels.numpy().tobytes())
    described = {"version": CLASSIFIER_VERSION, "features": FEATURES, **asdict(settings)}
    digest.update(json.dumps(described, sort_keys=True).encode())
    return digest.hexdigest()[:16]


def species_classifier(
    images: Tensor,
    labels: Tensor,
    settings: ClassifierSettings | None = None,
    cache_root: Path = CACHE_ROOT,
) -> TrainedClassifier:
    """The cached classifier of these images, else one trained now (and cached).

    ``images``: uint8 (N, 3, H, W), all real images at the recipes' size; ``labels``: (N,).
    """
    settings = settings or ClassifierSettings()
    key = classifier_key(images, labels, settings)
    path = cache_root.expanduser() / f"species-classifier-{key}.pt"
    num_classes = int(labels.max()) + 1
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(settings.seed)  # the initial weights (and dropout while training)
        network = SpeciesClassifier(num_classes, settings.width)
        started = time.perf_counter()
        cached = _load(path, network)
        if cached is not None:
            accuracy, num_held_out = cached
        else:
            accuracy, num_held_out = _train(network, images, labels, settings)
            _save(path, network, accuracy, num_held_out)
    network.eval().requires_grad_(False)
    seconds = time.perf_counter() - started
    return TrainedClassifier(
        network, accuracy, num_held_out, key, path, cached is not None, seconds
    )


def stratified_split(labels: Tensor, fraction: float, seed: int) -> tuple[Tensor, Tensor]:
    """Indices (train, held out): ``fraction`` of every species held out, seeded."""
    generator = torch.Generator().manual_seed(seed)
    train, held_out = [], []
    for species in labels.unique():
        members = (labels == species).nonzero().squeeze(1)
        members = members[torch.randperm(len(members), generator=generator)]
        cut = round(len(members) * fraction)
        held_out.append(members[:cut])
        train.append(members[cut:])
    return torch.cat(train), torch.cat(held_out)


def _train(
    network: SpeciesClassifier, images: Tensor, labels: Tensor, settings: ClassifierSettings
) -> tuple[float, int]:
    """AdamW with a cosine schedule on random flips and 2-pixel shifts; held-out accuracy."""
    train, held_out = stratified_split(labels, settings.held_out_fraction, settings.seed)
    generator = torch.Generator().manual_seed(settings.seed)
    optimizer = torch.optim.AdamW(
        network.parameters(), settings.learning_rate, weight_decay=settings.weight_decay
    )
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, settings.learning_rate, total_steps=settings.steps, pct_start=0.15
    )
    network.train()
    for _ in range(settings.steps):
        batch = train[torch.randint(len(train), (settings.batch_size,), generator=generator)]
        inputs = _augment(images[batch], generator)
        loss = nn.functional.cross_entropy(network.logits(inputs), labels[batch])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
    network.eval()
    with torch.no_grad():
        predicted = network.logits(images[held_out]).argmax(1)
    return float((predicted == labels[held_out]).float().mean()), len(held_out)


def _augment(images: Tensor, generator: torch.Generator) -> Tensor:
    """Random horizontal flips and shifts of up to 2 pixels (edge-padded), uint8 in and out."""
    flip = torch.rand(len(images), generator=generator) < 0.5
    images = torch.where(flip[:, None, None, None], images.flip(-1), images)
    size = images.shape[-1]
    padded = nn.functional.pad(images.float(), (2, 2, 2, 2), mode="replicate")
    dx, dy = torch.randint(5, (2,), generator=generator).tolist()
    return padded[..., dy : dy + size, dx : dx + size].to(torch.uint8)


def _load(path: Path, network: SpeciesClassifier) -> tuple[float, int] | None:
    if not path.is_file():
        return None
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
        network.load_state_dict(payload["state_dict"])
    except Exception as error:  # truncated or from another version: train again
        print(f"Ignoring the unreadable classifier cache {path}: {error}")
        return None
    return float(payload["held_out_accuracy"]), int(payload["num_held_out"])


def _save(path: Path, network: SpeciesClassifier, accuracy: float, num_held_out: int) -> None:
    payload = {
        "state_dict": network.state_dict(),
        "held_out_accuracy": accuracy,
        "num_held_out": num_held_out,
    }
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix(".partial")
        torch.save(payload, partial)
        partial.replace(path)  # atomic: a killed run leaves no half-written cache
    except OSError as error:
        print(f"Could not cache the classifier in {path}: {error}")
