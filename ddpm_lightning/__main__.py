"""``python -m ddpm_lightning`` runs the ``ddpm-lightning`` command."""

from ddpm_lightning.console import main

if __name__ == "__main__":
    main()
