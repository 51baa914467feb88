"""LLM group captioning and verification."""
