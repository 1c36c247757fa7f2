"""Datasets for re-ID frameworks that serve the original training images plus the generated ones."""
