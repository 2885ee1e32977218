"""EDM's deterministic Heun sampler (Karras et al. 2022, Algorithm 1) as a diffusers scheduler."""

from __future__ import annotations

from typing import Any

import torch
from diffusers import EDMEulerScheduler
from diffusers.schedulers.scheduling_edm_euler import EDMEulerSchedulerOutput


class EDMHeunScheduler(EDMEulerScheduler):
    """Second-order Heun steps on Karras sigmas (rho 7), the sampler EDM's figures use.

    Each step from sigma_i to sigma_{i+1} takes an Euler step, then corrects it with the
    derivative at sigma_{i+1} (the trapezoidal rule); the last step, to sigma 0, stays Euler.
    ``timesteps`` lists every network evaluation (2N - 1 for N steps), so the usual loop
    (``scale_model_input``, the network, ``step``) runs it unchanged. Preconditioning is
    :class:`~diffusers.EDMEulerScheduler`'s.
    """

    order = 2

    def set_timesteps(
        self,
        num_inference_steps: int | None = None,
        device: str | torch.device | None = None,
        sigmas: Any = None,
    ) -> None:
        """Karras sigmas for ``num_inference_steps`` steps, and the evaluations they need."""
        super().set_timesteps(num_inference_steps, device, sigmas)
        steps = self.sigmas  # sigma_0 .. sigma_{N-1}, then 0
        evaluations = [steps[0], *(sigma for sigma in steps[1:-1] for _ in range(2))]
        self.evaluation_sigmas = torch.stack(evaluations)
        self.timesteps = self.precondition_noise(self.evaluation_sigmas).to(device)
        self._evaluation = 0
        self._euler: tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor] | None = None

    @property
    def init_noise_sigma(self) -> float:
        """EDM starts from noise of standard deviation sigma_max."""
        return float(self.config.sigma_max)

    def scale_model_input(self, sample: torch.Tensor, timestep: Any) -> torch.Tensor:
        """c_in at the sigma of this evaluation."""
        return self.precondition_inputs(sample, self.evaluation_sigmas[self._evaluation])

    def step(
        self,
        model_output: torch.Tensor,
        timestep: Any,
        sample: torch.Tensor,
        generator: torch.Generator | None = None,
        return_dict: bool = True,
    ) -> EDMEulerSchedulerOutput | tuple[torch.Tensor, torch.Tensor]:
        """An Euler step to the next sigma, or the Heun correction of the last one."""
        sigma = self.evaluation_sigmas[self._evaluation]
        denoised = self.precondition_outputs(sample, model_output, sigma)
        derivative = (sample - denoised) / sigma
        if self._euler is None:
            sigma_next = self.sigmas[self._evaluation // 2 + 1]
            prev_sample = sample + (sigma_next - sigma) * derivative
            if sigma_next > 0:
                self._euler = (sample, derivative, sigma, sigma_next)
        else:
            start, first, sigma_start, sigma_next = self._euler
            prev_sample = start + (sigma_next - sigma_start) * (first + derivative) / 2
            self._euler = None
        self._evaluation += 1
        prev_sample = prev_sample.to(model_output.dtype)
        if not return_dict:
            return prev_sample, denoised
        return EDMEulerSchedulerOutput(prev_sample=prev_sample, pred_original_sample=denoised)
