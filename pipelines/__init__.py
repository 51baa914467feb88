"""Executors (local and Ray Data) that run the curation stages, and the ``filmweaver`` command line."""
