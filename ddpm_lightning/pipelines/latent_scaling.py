"""How raw autoencoder latents become the unit-variance values the UNet denoises, and back."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch

from ddpm_lightning.errors import InvalidSettingError


@dataclass(frozen=True)
class LatentScaling:
    """diffusers' conventions for an ``AutoencoderKL``'s latents z (SD, SDXL, SD3, FLUX differ).

    Without ``latents_mean``/``latents_std``: ``(z - shift_factor) * scaling_factor`` (SD 1/2:
    0.18215 and no shift; SD3/FLUX add a shift). With them (SDXL-style per-channel statistics):
    ``(z - latents_mean) * scaling_factor / latents_std``. :meth:`unscale` inverts it.
    """

    scaling_factor: float
    shift_factor: float | None = None
    latents_mean: tuple[float, ...] | None = None
    latents_std: tuple[float, ...] | None = None

    @classmethod
    def from_config(cls, config: Any) -> LatentScaling:
        """The four values of an autoencoder config (or a dict of them)."""
        get = config.get if isinstance(config, dict) else lambda key: getattr(config, key, None)
        mean, std = get("latents_mean"), get("latents_std")
        return cls(
            float(get("scaling_factor") or 1.0),
            None if get("shift_factor") is None else float(get("shift_factor")),
            None if mean is None else tuple(float(value) for value in mean),
            None if std is None else tuple(float(value) for value in std),
        )

    def as_dict(self) -> dict[str, Any]:
        """The values as an autoencoder config's entries (and a checkpoint's hyperparameter)."""
        values = asdict(self)
        return {k: list(v) if isinstance(v, tuple) else v for k, v in values.items()}

    def _statistics(self, z: torch.Tensor) -> tuple[Any, Any]:
        if self.latents_mean is not None and self.latents_std is not None:
            shape = (1, -1, 1, 1)
            mean = torch.tensor(self.latents_mean, dtype=z.dtype, device=z.device).view(shape)
            std = torch.tensor(self.latents_std, dtype=z.dtype, device=z.device).view(shape)
            return mean, self.scaling_factor / std
        return (self.shift_factor or 0.0), self.scaling_factor

    def scale(self, z: torch.Tensor) -> torch.Tensor:
        """Autoencoder latents to the UNet's space."""
        shift, scale = self._statistics(z)
        return (z - shift) * scale

    def unscale(self, x: torch.Tensor) -> torch.Tensor:
        """The UNet's samples back to autoencoder latents (for ``vae.decode``)."""
        shift, scale = self._statistics(x)
        return x / scale + shift

    def with_scale_from_std(self, std: float) -> LatentScaling:
        """LDM's ``scale_by_std``: the scaling factor that gives the shifted latents unit std."""
        if not std > 0:
            raise InvalidSettingError(
                f"The cached latents have std {std}: cannot scale them to unit variance. Check the "
                "autoencoder, or set latent_scaling to 'config' or to explicit values."
            )
        return LatentScaling(1.0 / std, self.shift_factor, None, None)


def latent_std(
    means: Sequence[torch.Tensor], stds: Sequence[torch.Tensor], shift: float = 0.0
) -> float:
    """The std of latents z ~ N(mean, std^2) over all images, in float64: every rank gets the same.

    E[(z - shift)^2] - E[z - shift]^2, with E[z^2] = E[mean^2 + std^2].
    """
    count, total, squares = 0, 0.0, 0.0
    for mean, std in zip(means, stds):
        mean = mean.double() - shift
        total += mean.sum().item()
        squares += (mean.square() + std.double().square()).sum().item()
        count += mean.numel()
    if count == 0:
        raise InvalidSettingError("There are no cached latents to estimate their std from.")
    return (squares / count - (total / count) ** 2) ** 0.5
