"""Placeholder for the ``evaluate`` subcommand (FID/KID per sampler), wired once the metric lands."""

from __future__ import annotations


def evaluate(source: str) -> None:
    """Print FID and KID of a model for several samplers and step counts.

    Args:
        source: a .ckpt file, a diffusers pipeline folder, or a Hub id.
    """
    raise NotImplementedError("evaluate is not available yet")
