"""User-facing errors: one clear line naming the file/line/field, turned into exit code 2 by the CLI."""

from __future__ import annotations


class LongrecError(Exception):
    """Base class of every error caused by bad input (data, config, checkpoint, arguments)."""


class DataError(LongrecError):
    """A data file is malformed, empty or missing; the message names the file and line."""


class ConfigError(LongrecError):
    """A configuration key or value is invalid; the message names the key."""


class CheckpointError(LongrecError):
    """A checkpoint or run directory is missing, corrupt or incompatible."""
