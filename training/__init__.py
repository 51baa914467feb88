"""The cache-guided model, training data from shards, and the trainer."""
