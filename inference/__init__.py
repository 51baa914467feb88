"""Shot cache, temporal cache, the sampler and evaluation metrics."""
