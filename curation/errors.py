"""Errors meant for users. Each carries a short ``reason`` (the reject reason) and an actionable message."""

from __future__ import annotations


class FilmweaverError(Exception):
    """Base of every error a user can act on. ``reason`` is the short slug used in reject rows."""

    reason = "error"

    def __init__(self, message: str, reason: str | None = None):
        super().__init__(message)
        if reason is not None:
            self.reason = reason


class UnreadableVideo(FilmweaverError):
    """The file cannot be opened or decoded as a video (missing, empty, corrupt, no video stream)."""

    reason = "unreadable"


class UnsupportedVideo(FilmweaverError):
    """The file decodes but cannot be used (too short, too small, ...)."""

    reason = "unsupported"


class ConfigError(FilmweaverError):
    """A configuration value is invalid or a needed setting is missing."""

    reason = "config"


class MissingDependency(FilmweaverError):
    """An optional package is needed; the message says which ``pip install`` fixes it."""

    reason = "missing-dependency"


class ModelUnavailable(FilmweaverError):
    """A model's weights cannot be loaded (not cached offline, bad path) or it lacks what was asked."""

    reason = "model-unavailable"


class CaptionerNotConfigured(ConfigError):
    """A captioning backend was asked for without what it needs (API key, server URL)."""


class CaptionFailed(FilmweaverError):
    """A scene could not be captioned; ``reason`` says why (safety block, malformed response, ...)."""

    reason = "caption-failed"
