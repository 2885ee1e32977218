"""What ``ddpm-lightning --help`` says: plain text, so the console prints it without torch."""

DESCRIPTION = """Train, sample and export DDPM image models (the diffusers tutorial, in Lightning).

Training: ddpm-lightning {fit,validate,predict} --config examples/configs/butterflies.yaml
Trained models: ddpm-lightning {export,sample,evaluate} --help"""

HELP = f"""usage: ddpm-lightning COMMAND [--help] [options]

{DESCRIPTION}

commands:
  fit        train a model (LightningCLI: --config, --model.*, --data.*, --trainer.*, --output.*)
  validate   the validation loss of a checkpoint (--ckpt_path) on held-out images
  predict    many images from a checkpoint, sharded over all devices, as PNG files
  export     a checkpoint to a diffusers pipeline folder
  sample     images and a grid from a checkpoint, a pipeline folder or a Hub id
  evaluate   FID and KID of a trained model per sampler

'ddpm-lightning COMMAND --help' lists a command's options."""
