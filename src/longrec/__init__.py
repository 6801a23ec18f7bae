"""longrec: sequential recommendation over long user histories with linear-time token mixers."""

from __future__ import annotations

__version__ = "0.1.0"
