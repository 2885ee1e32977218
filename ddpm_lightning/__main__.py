"""``python -m ddpm_lightning`` runs the ``ddpm-lightning`` command."""

from ddpm_lightning.cli import main

if __name__ == "__main__":
    main()
