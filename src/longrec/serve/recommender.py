"""Recommender: a trained run served per user; observe(user, item) advances a stored state, recommend ranks from it."""

from __future__ import annotations

import hashlib
import math
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from longrec.data.corpus import Corpus
from longrec.errors import ConfigError
from longrec.model.encoder import SeqEncoder
from longrec.objectives import mask_token
from longrec.scoring import EncoderQuery, EncoderScorer, banned_pairs, top_k
from longrec.serve.states import StateCache
from longrec.serve.store import StateStore, UserRecord, VersionConflict
from longrec.serve.store_url import open_store
from longrec.serve.streamers import STREAMERS, Streamer, StreamMode, encode_last, stream_mode
from longrec.serve.types import (
    Applied,
    Event,
    Scored,
    ServeError,
    StreamingUnsupported,
    UnknownItem,
    UnknownUser,
    check_id,
)
from longrec.serve.writer import Request, apply_requests, union
from longrec.train.run import load_run

__all__ = ["Applied", "Event", "Recommender", "Scored", "ServeError", "Served", "StreamingUnsupported",
           "UnknownItem", "UnknownUser", "run_fingerprint"]

MAX_LISTED = 5  # unknown ids named in one error message
ITEM_CHUNK = 65536  # items scored at a time: a request's memory is O(batch x chunk), whatever the catalogue
CACHE_MIB = 256.0  # default bound of the hot-state cache
PREFILL_ATTEMPTS = 5  # reads of one prefill batch when other workers keep storing some of its users meanwhile


@dataclass(frozen=True)
class Served:
    """The run a Recommender serves: its model, the fingerprint its store is bound to (run_fingerprint), the
    token appended after a history at scoring (BERT4Rec's mask; 0 for none) and its name."""

    model: SeqEncoder
    fingerprint: str
    mask_token: int = 0
    name: str = ""


def run_fingerprint(run_dir: Path) -> str:
    """sha256 over the model config and best weights: states built by other weights are never reused."""
    h = hashlib.sha256()
    for name in ("model.json", "best.safetensors"):
        h.update((run_dir / name).read_bytes())
    return h.hexdigest()


class Recommender:
    """Serves one trained run with raw (external) ids, mapped through the run's id maps.

    Users: the first observed event creates a user. A user of the run's corpus with no stored state starts from
    its whole corpus history (built on first use, or for everyone by prefill_from_corpus), as if every corpus
    event had been observed. recommend() for a user neither stored nor in the corpus raises UnknownUser (404):
    an empty history has nothing personal to rank from, and a typo should not look like a valid answer.
    Models with global mixers cannot stream (StreamingUnsupported) but still answer recommend_items.
    `mode` overrides the detected StreamMode (benchmarks: STEP on a softmax model keeps its KV cache per user,
    which grows without bound in the store).
    Writes go through writer.apply_requests (one batched update, one compare-and-set commit per batch); hot
    records stay in `cache` (write-through). `sole_writer` False (several workers on one store) makes recommend()
    read the store, as another worker may have advanced a cached user.
    """

    def __init__(self, run: Served, corpus: Corpus, store: StateStore, mode: StreamMode | None = None,
                 cache_mib: float = CACHE_MIB) -> None:
        model, mask_token_id, name = run.model.eval(), run.mask_token, run.name
        self.model = model
        self.corpus = corpus
        self.store = store
        self.name = name
        self.device = next(model.parameters()).device
        self.mode = stream_mode(model) if mode is None else mode
        if model.repeat is not None:
            raise ConfigError(f"model '{name}' has a repeat head (model.repeat=true): serving it is not supported yet "
                              "(its bonus needs each user's item counts beside the state); evaluate it offline")
        if self.mode != StreamMode.NONE and not model.causal:
            raise ConfigError(f"model '{name}' has global (bidirectional) mixers: it cannot stream ({self.mode.value})")
        self.mask_token = mask_token_id
        self.scorer = EncoderScorer(model, mask_token_id)
        self.item_ids: list[str] = [str(x) for x in corpus.item_ids.tolist()]
        self.item_index = {raw: i for i, raw in enumerate(self.item_ids) if i > 0}  # index 0 is PAD, never an item
        self.user_index = {str(raw): u for u, raw in enumerate(corpus.user_ids.tolist())}
        kind = STREAMERS.get(self.mode)
        self._streamer: Streamer | None = kind(model, mask_token_id) if kind else None
        self.cache = StateCache(int(cache_mib * 2**20))
        self.sole_writer = True  # recommend() may read the cache; False when other workers write the same store
        self.write_lock = threading.Lock()  # writer.apply_requests: one batch at a time in this process
        self.conflicts = 0  # batches recomputed after a VersionConflict (/healthz)
        store.bind(run.fingerprint)

    @classmethod
    def load(
        cls, run_dir: str | Path, store: StateStore | str | Path | None = None, device: str | None = None,
        cache_mib: float = CACHE_MIB,
    ) -> Recommender:
        """The run's best model; `store` is a StateStore, a store URL/path, or None for run_dir/serve-state.db;
        cache_mib bounds the hot-state cache (0: every event reads its user's record from the store)."""
        run_dir = Path(run_dir)
        cfg, model, splits = load_run(run_dir, torch.device(device) if device else None)
        if store is None or isinstance(store, (str, Path)):
            store = open_store(store if store is not None else run_dir / "serve-state.db")
        run = Served(model, run_fingerprint(run_dir), mask_token(model, cfg.train), cfg.name)
        return cls(run, splits.corpus, store, cache_mib=cache_mib)

    def close(self) -> None:
        self.store.close()

    # ---- streaming -------------------------------------------------------------------------------------------

    def observe(self, user: str, item: str, event_id: str | None = None) -> bool:
        """Apply one event; False when (user, event_id) was applied before."""
        return self.observe_many([Event(user, item, event_id)]).applied == 1

    @torch.inference_mode()
    def observe_many(self, events: Sequence[Event]) -> Applied:
        """Apply a batch in one store transaction: all of it or, on an error (unknown item), none of it. A user's
        events apply in the order given; users advance together, one batched step per event round."""
        request = self.validate(events)
        return apply_requests(self, [request])[0] if events else Applied(0, 0)

    def validate(self, events: Sequence[Event]) -> Request:
        """The events with their item indices, or a ServeError saying why none of them can be applied."""
        self.require_streaming()
        for e in events:
            check_id("user", e.user)
            if e.event_id is not None:
                check_id("event id", str(e.event_id))
        items = self._item_indices([e.item for e in events], "; nothing was applied")
        if self.model.uses_time and (missing := [e for e in events if e.ts is None or not math.isfinite(e.ts)]):
            raise ServeError(f"model '{self.name}' reads event times (model.time=gap): every event needs a finite "
                             f"ts, {len(missing)} have none (first: user {missing[0].user!r}); nothing was applied")
        return Request(events, items)

    @torch.inference_mode()
    def prefill_from_corpus(self, users_per_batch: int = 1024) -> int:
        """Store the state of every corpus user that has none yet (their whole history, batched prefill); users
        that already have a state keep it. Returns the number of users built."""
        self.require_streaming()
        users = list(self.user_index)
        built = 0
        for i in range(0, len(users), users_per_batch):
            part = users[i : i + users_per_batch]
            for attempt in range(PREFILL_ATTEMPTS):
                try:
                    with self.store.batch() as txn:
                        stored = txn.get(part)
                        missing = [u for u in part if u not in stored]
                        txn.put(self._from_corpus(missing))
                    break
                except VersionConflict:  # another worker stored some of them meanwhile: they keep theirs, the
                    if attempt == PREFILL_ATTEMPTS - 1:  # rest of the batch is read again and built
                        raise
            built += len(missing)
        return built

    # ---- ranking ---------------------------------------------------------------------------------------------

    @torch.inference_mode()
    def recommend(self, user: str, k: int = 10, exclude_seen: bool = True) -> list[Scored]:
        """Top-k items for a user's current state (a read: a corpus user's history is encoded, not stored)."""
        self.require_streaming()
        check_id("user", user)
        rec = self.cache.get([user]).get(user) if self.sole_writer else None
        if rec is None:
            rec = self.store.get([user]).get(user)
            if rec is not None and self.sole_writer:
                self.cache.put({user: rec})
        if rec is None:
            if user not in self.user_index:
                raise UnknownUser(
                    f"unknown user '{user}': no events observed and not in the run's data; "
                    "POST its events first, or rank an item list with POST /v1/recommendations"
                )
            rec = self._from_corpus([user])[user]
        return self._top_k(rec.state["h"][None].to(self.device), [rec.seen if exclude_seen else None], k)[0]

    @torch.inference_mode()
    def recommend_items(self, items: Sequence[str], k: int = 10, exclude_seen: bool = True,
                        ts: Sequence[float] | None = None) -> list[Scored]:
        """Top-k items after an anonymous history (raw ids, oldest first; `ts` their times in seconds, required
        by time-channel models): one forward over its newest max_len events. Works for every model, global
        mixers included."""
        if not items:
            raise ServeError("items: give at least one item id")
        if self.model.uses_time and (ts is None or len(ts) != len(items)):
            raise ServeError(f"model '{self.name}' reads event times (model.time=gap): give ts, one per item")
        idx = self._item_indices(items)
        h = encode_last(self.model, [idx], self.mask_token, [list(map(float, ts))] if self.model.uses_time and ts
                        else None)
        return self._top_k(h, [torch.tensor(idx) if exclude_seen else None], k)[0]

    def _top_k(self, h: Tensor, exclude: list[Tensor | None], k: int) -> list[list[Scored]]:
        """h [B,D] -> per row the k best items (PAD and the excluded indices never ranked), best first."""
        if k < 1:
            raise ServeError(f"k must be at least 1, got {k}")
        vals, idx = top_k(self.scorer, EncoderQuery(h), k, banned_pairs(exclude, self.device), ITEM_CHUNK)
        return [
            [Scored(self.item_ids[i], v) for v, i in zip(vr, ir, strict=True) if not math.isinf(v)]
            for vr, ir in zip(vals.tolist(), idx.tolist(), strict=True)
        ]

    # ---- helpers ---------------------------------------------------------------------------------------------

    def require_streaming(self) -> Streamer:
        if self._streamer is None:
            raise StreamingUnsupported(
                f"model '{self.name}' uses global (bidirectional) mixers: it keeps no per-user state, so it cannot "
                "observe events or recommend for a user; POST /v1/recommendations with the item list instead"
            )
        return self._streamer

    def _item_indices(self, items: Sequence[str], consequence: str = "") -> list[int]:
        for item in items:
            check_id("item", item)
        unknown = list(dict.fromkeys(i for i in items if i not in self.item_index))
        if unknown:
            more = f" and {len(unknown) - MAX_LISTED} more" if len(unknown) > MAX_LISTED else ""
            names = ", ".join(f"'{u}'" for u in unknown[:MAX_LISTED])
            raise UnknownItem(
                f"unknown item id(s) {names}{more}: not in the run's catalogue of "
                f"{len(self.item_index)} items{consequence}"
            )
        return [self.item_index[i] for i in items]

    def records(self, users: list[str], stored: dict[str, UserRecord]) -> dict[str, UserRecord]:
        """Stored records, else built from the corpus history, else empty (a new user)."""
        missing = [u for u in users if u not in stored]
        out = {**stored, **self._from_corpus([u for u in missing if u in self.user_index])}
        fresh = [u for u in missing if u not in out]
        if fresh:
            assert self._streamer is not None
            empty = self._streamer.empty(1)
            out.update({u: UserRecord(_row(empty, 0), torch.zeros(0, dtype=torch.long), 0) for u in fresh})
        return out

    def _from_corpus(self, users: list[str], batch_tokens: int = 32768) -> dict[str, UserRecord]:
        """Records of corpus users from their whole histories, in batches of about batch_tokens padded events."""
        streamer = self.require_streaming()
        seqs = {u: self.corpus.seq(self.user_index[u]).astype("int64").tolist() for u in users}
        times = None
        if self.model.uses_time:
            if self.corpus.times is None:
                raise ConfigError(f"model '{self.name}' reads event times, and the run's corpus has none")
            off = self.corpus.offsets
            times = {u: self.corpus.times[off[self.user_index[u]] : off[self.user_index[u] + 1]].tolist()
                     for u in users}
        order = sorted(users, key=lambda u: -len(seqs[u]))
        out: dict[str, UserRecord] = {}
        i = 0
        while i < len(order):
            n = max(len(seqs[order[i]]), 1)  # the longest in this batch: users are sorted by length
            part = order[i : i + max(1, batch_tokens // n)]
            state = streamer.from_history([seqs[u] for u in part], [times[u] for u in part] if times else None)
            for b, u in enumerate(part):
                out[u] = UserRecord(_row(state, b), union(torch.zeros(0, dtype=torch.long), seqs[u]), len(seqs[u]))
            i += len(part)
        return out


def _row(state: dict[str, Tensor], b: int) -> dict[str, Tensor]:
    return {k: v[b].cpu() for k, v in state.items()}
