"""Metrics: image-set fidelity (features, FID) and downstream classification (metrics, statistics)."""
