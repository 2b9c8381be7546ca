"""Score the published proxy-check pool on a supernet trained here; compare with the published scores.

    python experiments/head_to_head/rescore_pool.py RUN_DIR   # a study folder whose ../supernets holds the supernet

The pool (experiments/oneshot_checks/macs300_oneshot-0690aee35625) was scored on supernet 21bd9fbfcd6364ac
trained on another machine; the same definition (same key, seed and code) trained again is scored here on the
same 28 architectures with the same scoring (1 recalibration batch, 500 images). Writes supernet_retrain.jsonl
beside this file and prints the rank agreement of the two supernets and of each with the stand-alone means.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pandas as pd

from mfsearch.models import get_config
from mfsearch.oneshot.score import score
from mfsearch.oneshot.strategy import load
from mfsearch.proxycheck import pair_bootstrap, rank_correlations
from mfsearch.proxycheck.oneshot import architectures
from mfsearch.space import load_space

POOL = Path("experiments/oneshot_checks/macs300_oneshot-0690aee35625")
SEEDS = (0, 1)


def main() -> None:
    space = load_space("spaces/macs300_oneshot.yaml")
    pub = [json.loads(line) for line in open(POOL / "oneshot-21bd9fbfcd6364ac-r1v500" / "scores.jsonl")]
    sample, paper = architectures(space, 24)
    cfgs = {c.arch_id: c for c in sample} | {get_config(m).arch_id: get_config(m) for m in paper}
    loaded = load(space, sys.argv[1])
    runs = pd.DataFrame([json.loads(line) for line in open(POOL / "architectures.jsonl")])
    runs = runs[runs["seed"].isin(SEEDS)]  # the seeds the published comparison used (the pool has more since)
    means = runs[runs["accuracy"].notna()].groupby("arch_id")["accuracy"].mean()
    rows = []
    with open(Path(__file__).with_name("supernet_retrain.jsonl"), "w") as out:
        for r in pub:
            a = r["arch_id"]
            row = {"arch_id": a, "kind": r["kind"], "name": r["name"], "summary": r["summary"],
                   "published": r["oneshot"], "retrained": score(loaded.run.supernet, cfgs[a], loaded.data),
                   "standalone_mean": round(float(means[a]), 3) if a in means.index else None}
            rows.append(row)
            out.write(json.dumps(row) + "\n")
    df = pd.DataFrame(rows)
    s = df[df["standalone_mean"].notna()]
    print(f"{len(df)} architectures ({len(s)} sampled, with stand-alone 2-seed means); mean score published "
          f"{df.published.mean():.2f}, retrained {df.retrained.mean():.2f}; "
          f"{int((df.published == df.retrained).sum())} identical")
    for label, x, y in (("published vs retrained supernet, all 28", df.published, df.retrained),
                        ("published supernet vs stand-alone means, 24 sampled", s.published, s.standalone_mean),
                        ("retrained supernet vs stand-alone means, 24 sampled", s.retrained, s.standalone_mean)):
        sp, kt = rank_correlations(list(x), list(y))
        ci = pair_bootstrap(list(x), list(y), seed=0)
        print(f"  {label}: Kendall {kt:.2f} {ci['kendall']}, Spearman {sp:.2f} {ci['spearman']} (95% bootstrap)")


if __name__ == "__main__":
    main()
