"""How every store serialises a UserRecord's tensors: a small header, then raw little-endian tensor bytes.

Format 2 (issue 20): `LRS2`, u32 header length, then per tensor (name, dtype code, shape), then each tensor's
bytes in header order. A batch of records shares one header and one numpy view per stacked tensor
(encode_rows), so encoding B users costs a few bytes-slices per user instead of a safetensors header and a
tensor copy per tensor per user; decoding parses a header once and caches it (every user of a model shares it).
Format 1 (safetensors blobs) is refused by the stores with a clear message, not read.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping
from functools import lru_cache

import numpy as np
import torch
from torch import Tensor

from longrec.serve.store import StoreError, UserRecord

MAGIC = b"LRS2"
CODES: dict[torch.dtype, int] = {torch.float64: 1, torch.float32: 2, torch.float16: 3, torch.bfloat16: 4,
                                 torch.int64: 5, torch.int32: 6, torch.int16: 7, torch.int8: 8, torch.uint8: 9,
                                 torch.bool: 10, torch.complex64: 11, torch.complex128: 12}  # fmt: skip
DTYPES = {c: d for d, c in CODES.items()}
Layout = tuple[tuple[str, torch.dtype, tuple[int, ...], int], ...]  # (name, dtype, shape, nbytes) per tensor


@lru_cache(maxsize=4096)
def _header(layout: tuple[tuple[str, torch.dtype, tuple[int, ...]], ...]) -> bytes:
    """The header of rows with these (name, dtype, row shape): cached, as every user of a model shares one (and
    seen sets share one per length)."""
    parts = [struct.pack("<H", len(layout))]
    for name, dtype, shape in layout:
        raw = name.encode()
        parts.append(struct.pack(f"<H{len(raw)}sBB{len(shape)}I", len(raw), raw, CODES[dtype], len(shape), *shape))
    body = b"".join(parts)
    return MAGIC + struct.pack("<I", len(body)) + body


def _bytes_view(t: Tensor) -> np.ndarray:
    """[B, nbytes per row] uint8 view of a batched tensor (bf16 and bool have no numpy twin: reinterpret)."""
    t = t.detach().cpu().contiguous()
    return t.reshape(t.shape[0], -1).view(torch.uint8).numpy()


def encode_rows(state: Mapping[str, Tensor]) -> list[bytes]:
    """One blob per row of a batched state dict ([B, ...] tensors): the header is built once for all rows."""
    names = sorted(state)
    tensors = [state[k] for k in names]
    head = _header(tuple((k, t.dtype, tuple(t.shape[1:])) for k, t in zip(names, tensors, strict=True)))
    views = [_bytes_view(t) for t in tensors]
    rows = tensors[0].shape[0] if tensors else 0
    return [head + b"".join(v[b].tobytes() for v in views) for b in range(rows)]


def encode(tensors: Mapping[str, Tensor]) -> bytes:
    """One record's (unbatched) tensors."""
    return encode_rows({k: v[None] for k, v in tensors.items()})[0]


def _size(dtype: torch.dtype) -> int:
    return torch.empty(0, dtype=dtype).element_size()


@lru_cache(maxsize=64)
def _layout(head: bytes) -> Layout:
    (n,) = struct.unpack_from("<H", head, 0)
    at, out = 2, []
    for _ in range(n):
        (size,) = struct.unpack_from("<H", head, at)
        name = head[at + 2 : at + 2 + size].decode()
        code, ndim = struct.unpack_from("<BB", head, at + 2 + size)
        shape = struct.unpack_from(f"<{ndim}I", head, at + 4 + size)
        at += 4 + size + 4 * ndim
        dtype = DTYPES[code]
        numel = int(np.prod(shape)) if shape else 1
        out.append((name, dtype, tuple(shape), numel * _size(dtype)))
    return tuple(out)


def decode(user: str, blob: bytes) -> dict[str, Tensor]:
    """The inverse of encode; a StoreError naming the user when the blob is not a format-2 record."""
    try:
        if blob[:4] != MAGIC:
            raise ValueError("not a format-2 record")
        (size,) = struct.unpack_from("<I", blob, 4)
        layout = _layout(bytes(blob[8 : 8 + size]))
        buf = bytearray(blob[8 + size :])  # one copy: the tensors below share it, and it is writable
        out, at = {}, 0
        for name, dtype, shape, nbytes in layout:
            if nbytes:
                out[name] = torch.frombuffer(buf, dtype=dtype, count=nbytes // _size(dtype), offset=at).reshape(shape)
            else:
                out[name] = torch.empty(shape, dtype=dtype)
            at += nbytes
        if at != len(buf):
            raise ValueError(f"{len(buf) - at} trailing bytes")
        return out
    except (ValueError, KeyError, struct.error, RuntimeError, UnicodeDecodeError) as e:
        raise StoreError(f"state store: the record of user '{user}' is corrupt ({e})") from None


def encode_record(r: UserRecord) -> tuple[bytes, bytes, int]:
    """(state blob, seen blob, events) of one record."""
    return encode(r.state), encode({"seen": r.seen}), r.events


def decode_record(user: str, state: bytes, seen: bytes, events: int | bytes | str, version: int | bytes | str
                  ) -> UserRecord:
    """The inverse of encode_record; a StoreError naming the user when a blob is corrupt."""
    seen_t = decode(user, seen).get("seen")
    if seen_t is None:
        raise StoreError(f"state store: the record of user '{user}' has no seen items")
    return UserRecord(decode(user, state), seen_t, int(events), int(version))
