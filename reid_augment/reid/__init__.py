"""Re-ID training with generated images: regimes, labels, the identity gate, fast data, statistics."""
