"""make_optimizer's weight-decay groups: embeddings are exempt unless train.decay_embeddings; biases and norms
always are."""

from __future__ import annotations

import pytest

from longrec.config import load_config
from longrec.objectives import build_model
from longrec.train.loop import make_optimizer


@pytest.mark.parametrize("embeddings", [False, True])
def test_weight_decay_reaches_the_embedding_tables_only_when_asked(embeddings: bool) -> None:
    cfg = load_config("sasrec", ["train.weight_decay=0.01", f"train.decay_embeddings={str(embeddings).lower()}"])
    model = build_model(30, cfg.model, cfg.train)
    opt = make_optimizer(model, cfg.train)
    decayed = {id(p) for g in opt.param_groups if g["weight_decay"] == 0.01 for p in g["params"]}
    names = {id(p): n for n, p in model.named_parameters()}
    assert sum(len(g["params"]) for g in opt.param_groups) == len(names)  # every parameter in one group
    for table in (model.item_emb.weight, model.pos_emb.weight):
        assert (id(table) in decayed) is embeddings, names[id(table)]
    assert id(model.blocks[0].mixer.qkv.weight) in decayed  # weight matrices always
    assert not any(p.ndim < 2 and id(p) in decayed for p in model.parameters())  # biases and norms never
