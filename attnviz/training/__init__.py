"""Training dictionaries: configs, losses, dead-feature handling, the loops."""
