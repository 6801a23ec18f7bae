"""Token mixers; importing this package registers every mixer."""

from longrec.mixers import gru, softmax  # noqa: F401  (registration side effect)
from longrec.mixers.base import MIXERS, MixerState, TokenMixer, build_mixer

__all__ = ["MIXERS", "MixerState", "TokenMixer", "build_mixer"]
