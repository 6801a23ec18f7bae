"""Token mixers; importing this package registers every mixer."""

import longrec.mixers.efficient  # noqa: F401  (registration side effect)
import longrec.mixers.gated_delta  # noqa: F401
import longrec.mixers.gla  # noqa: F401
import longrec.mixers.hydra  # noqa: F401  (registration side effect)
import longrec.mixers.linear  # noqa: F401
import longrec.mixers.linrec  # noqa: F401
import longrec.mixers.lru  # noqa: F401
import longrec.mixers.rela  # noqa: F401
import longrec.mixers.retention  # noqa: F401
from longrec.mixers import gru, softmax  # noqa: F401  (registration side effect)
from longrec.mixers.base import MIXERS, MixerState, TokenMixer, build_mixer

__all__ = ["MIXERS", "MixerState", "TokenMixer", "build_mixer"]
