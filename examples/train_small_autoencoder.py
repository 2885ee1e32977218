"""Train a small AutoencoderKL on a folder of images, for latent diffusion on a CPU.

The real autoencoders (``stabilityai/sd-vae-ft-mse``: 84 M parameters) take seconds per batch
on two CPU cores. This one (0.24 M parameters) shrinks 64 px images 4x per side to
4 x 16 x 16 latents and learns to reconstruct them in about 4 minutes (8 epochs of the 832
butterflies); then
``examples/configs/latent_cpu.yaml`` trains a UNet on its latents:

    python examples/train_small_autoencoder.py --data_dir ../shared/data/butterflies
    ddpm-lightning fit --config examples/configs/latent_cpu.yaml

It is a plain ``LightningModule`` around diffusers' ``AutoencoderKL``: a reconstruction loss
and a small KL term (Stable Diffusion's autoencoder used 1e-6 of it), no GAN or perceptual loss,
so its reconstructions are blurrier than a real one's. The folder it writes is what
``AutoencoderKL.save_pretrained`` writes; ``scaling_factor`` is set to one over the std of
its latents on these images, as diffusers' autoencoders carry theirs.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import lightning as L
import torch
import torch.nn.functional as F
from diffusers import AutoencoderKL

from ddpm_lightning import ImageDataModule
from ddpm_lightning.errors import OutputExistsError


class AutoencoderTraining(L.LightningModule):
    """Reconstruction (mean squared error) plus ``kl_weight`` times the latents' KL term."""

    def __init__(self, image_size: int, kl_weight: float = 1e-6, learning_rate: float = 1e-3):
        super().__init__()
        self.save_hyperparameters()
        self.autoencoder = AutoencoderKL(
            down_block_types=("DownEncoderBlock2D",) * 3,
            up_block_types=("UpDecoderBlock2D",) * 3,
            block_out_channels=(16, 32, 32),
            layers_per_block=1,
            latent_channels=4,
            norm_num_groups=8,
            sample_size=image_size,
        )

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        images = batch["images"]
        posterior = self.autoencoder.encode(images).latent_dist
        reconstruction = self.autoencoder.decode(posterior.sample()).sample
        mse = F.mse_loss(reconstruction, images)
        loss = mse + self.hparams.kl_weight * posterior.kl().mean()
        self.log("train/mse", mse, prog_bar=True)
        return loss

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.AdamW(self.autoencoder.parameters(), lr=self.hparams.learning_rate)


@torch.no_grad()
def latent_std(autoencoder: AutoencoderKL, datamodule: ImageDataModule) -> float:
    """The std of the training images' latent means: diffusers' ``scaling_factor`` is 1/std."""
    autoencoder.eval()
    means = [
        autoencoder.encode(datamodule.on_after_batch_transfer(batch, 0)["images"]).latent_dist.mean
        for batch in datamodule.train_dataloader()
    ]
    return torch.cat(means).std().item()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data_dir", default="../shared/data/butterflies", help="image folder")
    parser.add_argument("--output_dir", default="outputs/small-autoencoder")
    parser.add_argument("--image_size", type=int, default=64)
    parser.add_argument("--max_epochs", type=int, default=8)
    parser.add_argument("--batch_size", type=int, default=16)
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output")
    args = parser.parse_args()
    if args.max_epochs < 1 or args.batch_size < 1:
        parser.error("--max_epochs and --batch_size must be at least 1")
    output = Path(args.output_dir)
    if (output / "config.json").exists() and not args.overwrite:
        raise OutputExistsError(
            f"{output} already holds an autoencoder: pass --overwrite to replace it, or choose "
            "another --output_dir."
        )
    L.seed_everything(0)
    datamodule = ImageDataModule(
        data_dir=args.data_dir, image_size=args.image_size, train_batch_size=args.batch_size
    )
    model = AutoencoderTraining(args.image_size)
    trainer = L.Trainer(
        max_epochs=args.max_epochs, logger=False, enable_checkpointing=False, accelerator="cpu"
    )
    trainer.fit(model, datamodule)
    autoencoder = model.autoencoder
    autoencoder.register_to_config(scaling_factor=1.0 / latent_std(autoencoder, datamodule))
    autoencoder.save_pretrained(output)
    scale = autoencoder.config.scaling_factor
    print(f"Saved the autoencoder to {output} (scaling_factor {scale:.4f}).")


if __name__ == "__main__":
    main()
