"""Building blocks shared by backbones and the LightningModule: norms, pooling, heads."""
