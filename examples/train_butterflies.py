"""The diffusers tutorial in a user's own script: Trainer.fit with ddpm_lightning's parts.

    python examples/train_butterflies.py                      # the tutorial (needs the Hub)
    python examples/train_butterflies.py --data-dir ../shared/data/butterflies --image-size 32 \
        --epochs 2 --tiny                                     # a quick CPU run on a folder
"""

import argparse

import lightning as L

from ddpm_lightning import ButterfliesDataModule, DDPMModule, ImageDataModule
from ddpm_lightning.sampling import SamplingSettings
from ddpm_lightning.training_outputs import TrainingOutputs

parser = argparse.ArgumentParser()
parser.add_argument("--data-dir", help="a local image folder instead of the Hub dataset")
parser.add_argument("--image-size", type=int, default=128)
parser.add_argument("--epochs", type=int, default=50)
parser.add_argument("--output-dir", default="ddpm-butterflies-128")
parser.add_argument("--tiny", action="store_true", help="a small UNet for CPU smoke runs")
args = parser.parse_args()

L.seed_everything(0)
if args.data_dir:
    data = ImageDataModule(data_dir=args.data_dir, image_size=args.image_size)
else:
    data = ButterfliesDataModule(image_size=args.image_size)
unet = (
    {"block_out_channels": (32, 64), "layers_per_block": 1, "norm_num_groups": 8}
    if args.tiny
    else {}
)
model = DDPMModule(image_size=args.image_size, learning_rate=1e-4, lr_warmup_steps=500, **unet)
outputs = TrainingOutputs(
    output_dir=args.output_dir,
    save_image_epochs=10,
    save_model_epochs=30,
    eval_batch_size=16,
    sampling=SamplingSettings("ddim", 20) if args.tiny else SamplingSettings("ddpm", 1000),
    overwrite_output_dir=True,
)
trainer = L.Trainer(
    max_epochs=args.epochs,
    precision="16-mixed" if not args.tiny else "32-true",
    callbacks=outputs.callbacks(),
    plugins=outputs.plugins(),  # atomic checkpoint writes
    logger=outputs.logger(),
)
trainer.fit(model, data)
print(f"Samples in {args.output_dir}/samples, pipeline in {args.output_dir}")
