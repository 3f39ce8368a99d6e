"""Backbones: plain ``nn.Module``s mapping features (and lengths) to a pooled embedding.

Each backbone exposes ``embed_dim`` and never imports Lightning, losses or wandb.
"""
