"""User-facing errors: one clear line naming the file/line/field, turned into exit code 2 by the CLI."""

from __future__ import annotations

import re

# what str.splitlines breaks at: a message quoting a file's bytes shows these escaped, so it stays one line
_LINE_BREAKS = re.compile("[\n\r\v\f\x1c\x1d\x1e\x85\u2028\u2029]")


class LongrecError(Exception):
    """Base class of every error caused by bad input (data, config, checkpoint, arguments); its message is one
    line, whatever text from the input it quotes."""

    def __str__(self) -> str:
        return _LINE_BREAKS.sub(lambda m: repr(m.group())[1:-1], super().__str__())


class DataError(LongrecError):
    """A data file is malformed, empty or missing; the message names the file and line."""


class ConfigError(LongrecError):
    """A configuration key or value is invalid; the message names the key."""


class CheckpointError(LongrecError):
    """A checkpoint or run directory is missing, corrupt or incompatible."""
