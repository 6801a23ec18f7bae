"""Models: Block (mixer + FFN) and SeqEncoder (embed -> L x Block -> norm), with streaming step()."""

from longrec.model.encoder import SeqEncoder

__all__ = ["SeqEncoder"]
