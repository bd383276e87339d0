"""Datasets: the manifest, discovery of image records, and validation before training."""
