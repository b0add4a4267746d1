"""One module per architecture family; each function returns the IR for
(resolution, channels, num_classes). Registered in :mod:`models.registry`."""
