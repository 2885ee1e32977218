"""``EDMPipeline``: a UNet2DModel trained with EDM preconditioning, sampled in diffusers."""

from __future__ import annotations

from ddpm_lightning.pipelines.labelled import LabelledPipeline


class EDMPipeline(LabelledPipeline):
    """Samples an EDM-trained UNet with an EDM scheduler (saved: ``EDMEulerScheduler``).

    The scheduler carries the preconditioning (``sigma_data``) and the sigmas; swap in
    ``EDMDPMSolverMultistepScheduler`` or ``ddpm_lightning.sampling.edm_heun.EDMHeunScheduler``
    with ``from_config(pipeline.scheduler.config)``. A class-conditional UNet takes class ids
    (``get_label_ids(names)``) and classifier-free guidance, as ``DiTPipeline`` does.
    """

    #: Euler steps when the call gives none (EDM's Heun takes 18 for 35 UNet calls).
    default_inference_steps = 40
