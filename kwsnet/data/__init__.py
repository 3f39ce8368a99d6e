"""Datasets (one module per format), decoding, features and the DataModule."""
