"""arcli: train, sample and score autoregressive generative models from the command line."""

from arcli.errors import ArcliError

__version__ = "0.1.0"

__all__ = ["ArcliError", "__version__"]
