"""linkstyle: link a classifier's penultimate layer to a generator's latent space."""

__version__ = "0.1.0"
