"""How much the final norm changes what a value vector promotes (docs/METHODS.md, ffn_vocab): on
200 seeded SmolLM2 value vectors, the share of the top-8 promoted tokens of E v_i that E norm_f(v_i) keeps.

    python scripts/ffn_final_norm_overlap.py   (a few seconds once SmolLM2 is converted)
"""
import random
import tempfile
from pathlib import Path

import numpy as np

from lensframe.board import Board
from lensframe.graph import Node

ROOT = Path(__file__).resolve().parent.parent
b = Board.from_file(ROOT / "tests" / "specs" / "smollm2_small.yaml", cache_dir=tempfile.mkdtemp())

rng = random.Random(0)
L, D = b.infos["main"].n_layers, b.infos["main"].d_mlp
plain, normed = Node.make("ffn_static", "main", k=8), Node.make("ffn_static", "main", k=8, final_norm=True)
overlap = []
for _ in range(200):
    l, n = rng.randrange(L), rng.randrange(D)
    p = set(b.executor.lookup(plain, layer=l, neuron=n)["promoted_ids"].tolist())
    q = set(b.executor.lookup(normed, layer=l, neuron=n)["promoted_ids"].tolist())
    overlap.append(len(p & q) / 8)
o = np.array(overlap)
print(f"200 value vectors: mean share of top-8 promoted tokens kept {o.mean():.3f}; changed {1 - o.mean():.3f}; "
      f"identical top-8 sets {np.mean(o == 1):.3f}; none kept {np.mean(o == 0):.3f}")
