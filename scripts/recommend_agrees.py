"""Issue 19's acceptance check, by hand on a whole run: `longrec recommend RUN --users all --as-of test` agrees with
`longrec eval RUN`'s ranks, i.e. a user's top-k holds the test target exactly when its rank is <= k (and at that
place), and holds none of the user's earlier items. Prints the counts; exits 1 on any disagreement.

    longrec recommend RUN --users all --k 10 --as-of test --out top10.csv
    python scripts/recommend_agrees.py RUN top10.csv --k 10
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

from longrec.train.evaluate import evaluate
from longrec.train.run import load_scorer


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run", type=Path)
    p.add_argument("top", type=Path, help="the CSV longrec recommend wrote (user, rank, item, score)")
    p.add_argument("--k", type=int, default=10)
    args = p.parse_args()
    top: dict[str, list[str]] = {}
    with args.top.open() as f:
        for row in csv.DictReader(f):
            top.setdefault(row["user"], []).append(row["item"])
    cfg, scorer, splits = load_scorer(args.run)
    ranks = evaluate(scorer, splits, splits.test, cfg.eval)["ranks"].tolist()
    c, hits, bad = splits.corpus, 0, []
    for u, e, rank in zip(splits.test.users.tolist(), splits.test.ends.tolist(), ranks, strict=True):
        user, target = str(c.user_ids[u]), str(c.item_ids[c.seq(u)[e]])
        got = top.get(user, [])
        seen = {str(c.item_ids[i]) for i in c.seq(u)[:e]}
        place = got.index(target) + 1 if target in got else None
        wrong_place = place is not None and place != rank
        if len(got) != args.k or set(got) & seen or (place is not None) != (rank <= args.k) or wrong_place:
            bad.append(user)
        hits += place is not None
    print(f"{len(ranks)} test users, {len(top)} users in {args.top}; top-{args.k} holds the target for {hits} "
          f"(eval: {sum(r <= args.k for r in ranks)} ranked <= {args.k}); disagreements: {len(bad)}"
          + (f" (first: {bad[:5]})" if bad else ""))
    return 1 if bad or len(top) != len(ranks) else 0


if __name__ == "__main__":
    sys.exit(main())
