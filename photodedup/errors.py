"""Domain errors shared by client, server and engines; the server maps them to gRPC status codes."""

from __future__ import annotations


class PhotodedupError(Exception):
    """Base class for errors photodedup reports to a user in one line."""


class ModelUnavailableError(PhotodedupError):
    """The model weights could not be loaded (offline, missing file, unknown tag)."""


class EngineUnavailableError(PhotodedupError):
    """An engine or device cannot run here (library missing, no CUDA, ...)."""


class InvalidImageError(PhotodedupError):
    """An input is not a decodable image, or breaks a limit (too many pixels, wrong raw size)."""


class QueueFullError(PhotodedupError):
    """The batcher's queue is full; the caller should back off and retry."""


class ShuttingDownError(PhotodedupError):
    """The server is draining and accepts no new work."""
