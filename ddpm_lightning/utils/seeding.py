"""One way to seed a generator from several numbers (seed, step, batch, rank, ...)."""

from __future__ import annotations

import numpy as np
import torch


def seeded_generator(*keys: int, device: torch.device | str = "cpu") -> torch.Generator:
    """A generator seeded from ``keys``, mixed by ``SeedSequence``: nearby keys, unrelated seeds."""
    mixed = np.random.SeedSequence([int(key) % 2**63 for key in keys]).generate_state(1, np.uint64)
    return torch.Generator(device).manual_seed(int(mixed[0]) % 2**63)
