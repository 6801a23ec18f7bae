"""How every store serialises a UserRecord: safetensors blobs of CPU tensors, written here for speed."""

from __future__ import annotations

import json
import struct
from collections.abc import Mapping
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save
from torch import Tensor

from longrec.serve.store import StoreError, UserRecord

ST_DTYPES = {torch.float64: "F64", torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16",
             torch.int64: "I64", torch.int32: "I32", torch.int16: "I16", torch.int8: "I8", torch.uint8: "U8",
             torch.bool: "BOOL"}  # fmt: skip


def _encode(tensors: Mapping[str, Tensor]) -> bytes:
    """The safetensors format, written here: safetensors.torch.save spends ~0.1-0.4 ms per tensor on small
    tensors (np.prod over a torch.Size), which was most of a streamed event's store cost. Read by st_load."""
    ts = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
    if any(v.dtype not in ST_DTYPES for v in ts.values()):
        return st_save({k: v.clone() for k, v in ts.items()})
    header: dict[str, Any] = {}
    data: list[bytes] = []
    offset = 0
    for k in sorted(ts, key=lambda k: -ts[k].element_size()):  # widest first: every tensor stays aligned
        raw = ts[k].reshape(-1).view(torch.uint8).numpy().tobytes()
        header[k] = {
            "dtype": ST_DTYPES[ts[k].dtype],
            "shape": list(ts[k].shape),
            "data_offsets": [offset, offset + len(raw)],
        }
        data.append(raw)
        offset += len(raw)
    head = json.dumps(header, separators=(",", ":")).encode()
    head += b" " * (-len(head) % 8)  # the data starts 8-byte aligned
    return struct.pack("<Q", len(head)) + head + b"".join(data)


def _decode(user: str, blob: bytes) -> dict[str, Tensor]:
    try:
        return st_load(blob)
    except (SafetensorError, ValueError) as e:
        raise StoreError(f"state store: the record of user '{user}' is corrupt ({e})") from None


def encode_record(r: UserRecord) -> tuple[bytes, bytes, int]:
    """(state blob, seen blob, events): how every store serialises a record (safetensors, CPU tensors)."""
    return _encode(r.state), _encode({"seen": r.seen}), r.events


def decode_record(user: str, state: bytes, seen: bytes, events: int | bytes | str) -> UserRecord:
    """The inverse of encode_record; a StoreError naming the user when a blob is corrupt."""
    seen_t = _decode(user, seen).get("seen")
    if seen_t is None:
        raise StoreError(f"state store: the record of user '{user}' has no seen items")
    return UserRecord(_decode(user, state), seen_t, int(events))
