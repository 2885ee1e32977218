"""Several GPUs from a notebook: Lightning's ``ddp_notebook`` (the tutorial's notebook_launcher).

Paste into Jupyter cells. Everything, the Trainer included, is created in the notebook process;
``strategy="ddp_notebook"`` forks one process per GPU when ``fit`` runs. Do not touch CUDA
(e.g. ``torch.cuda.is_available()`` is fine, ``tensor.cuda()`` is not) before ``fit``.
On a machine without GPUs, try the same code on two CPU processes:
``python examples/notebook_multi_gpu.py --cpu path/to/images [output_dir]``.
"""

import sys

import lightning as L

from ddpm_lightning import ButterfliesDataModule, DDPMModule, ImageDataModule
from ddpm_lightning.sampling import SamplingSettings
from ddpm_lightning.training_outputs import TrainingOutputs

on_cpu = "--cpu" in sys.argv
cpu_args = sys.argv[sys.argv.index("--cpu") + 1 :] if on_cpu else []
if on_cpu:  # a tiny stand-in that runs anywhere
    data = ImageDataModule(data_dir=cpu_args[0], image_size=16, train_batch_size=4)
    model = DDPMModule(
        image_size=16, block_out_channels=(32, 64), layers_per_block=1, norm_num_groups=8
    )
else:
    data = ButterfliesDataModule()  # the tutorial's data and 128 px UNet
    model = DDPMModule()
outputs = TrainingOutputs(
    output_dir=cpu_args[1] if len(cpu_args) > 1 else "outputs/notebook-ddp",
    save_image_epochs=1 if on_cpu else 10,
    eval_batch_size=4 if on_cpu else 16,
    sampling=SamplingSettings("ddim", 5) if on_cpu else SamplingSettings("ddpm", 1000),
    overwrite_output_dir=True,
    throughput_window=2,
)
trainer = L.Trainer(
    accelerator="cpu" if on_cpu else "gpu",
    devices=2 if on_cpu else -1,  # every GPU of the machine
    strategy="ddp_notebook",
    precision="32-true" if on_cpu else "16-mixed",
    max_epochs=1 if on_cpu else 50,
    callbacks=outputs.callbacks(),
    plugins=outputs.plugins(),  # atomic checkpoint writes
    logger=outputs.logger(),
)
trainer.fit(model, data)
