"""kwsnet: keyword-spotting and speaker-classification training on PyTorch Lightning."""

__version__ = "0.1.0"
