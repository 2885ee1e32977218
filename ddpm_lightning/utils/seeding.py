"""One way to seed a generator from several numbers (seed, step, batch, rank, ...)."""

from __future__ import annotations

import numpy as np
import torch


def seeded_generator(*keys: int, device: torch.device | str = "cpu") -> torch.Generator:
    """A generator seeded from ``keys``: equal keys give equal streams, any change a new one.

    numpy's ``SeedSequence`` mixes the keys, so nearby keys (step 1 vs 2, rank 0 vs 1) give
    unrelated streams, with no hand-picked multipliers.
    """
    mixed = np.random.SeedSequence([int(key) % 2**63 for key in keys]).generate_state(1, np.uint64)
    return torch.Generator(device).manual_seed(int(mixed[0]) % 2**63)
