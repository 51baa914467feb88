"""Curation stages: plain Python, no Ray. Each stage is a callable class built from its config section."""
