"""Small helpers shared by the module, the callbacks and the CLI."""
