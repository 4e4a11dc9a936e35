"""The backbone configuration shared by SASRec and HSTU (`model.*` keys)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from recalign.configlib import field
from recalign.errors import InputError


@dataclass
class ModelConfig:
    name: Literal["sasrec", "hstu"] = field("sasrec", "backbone: sasrec (Kang & McAuley 2018) or hstu (Zhai et al. 2024)")
    dim: int = field(64, "hidden size D of item embeddings and every layer")
    layers: int = field(2, "number of attention blocks")
    heads: int = field(2, "attention heads per block")
    max_len: int = field(50, "longest history the model sees; longer histories keep their most recent items")
    ffn_mult: int = field(1, "sasrec: feed-forward inner size = ffn_mult × dim (paper: 1; RecBole: 4)")
    dropout: float = field(0.2, "dropout on embeddings and inside blocks (SASRec paper: 0.2 on ML-1M)")
    init_std: float = field(0.02, "std of the normal initialisation of the item (and sasrec position) embeddings; "
                                  "the item table is also the tied output, so this sets how fast its logits move "
                                  "under Adam (benchmarks/README.md: 0.02 against dim**-0.5)")
    scale_emb: bool = field(True, "multiply item embeddings by sqrt(dim) at the input (off = RecBole's SASRec: "
                                  "better on ml-100k with seen items left in the ranking, far worse on "
                                  "ml-latest-small; benchmarks/README.md)")
    head: Literal["full", "sampled"] = field("full", "output head: full softmax over the catalog, or sampled softmax for large catalogs")
    num_negatives: int = field(1024, "sampled head: shared negatives per batch (besides in-batch ones)")
    in_batch_negatives: int = field(-1, "sampled head: batch targets used as negatives: -1 = all (memory grows with "
                                        "the square of the batch's targets), 0 = none, S = a random S of them")
    negatives: Literal["uniform", "popularity"] = field("uniform", "sampled head: proposal for the shared negatives (logQ-corrected)")
    score: Literal["dot", "cosine"] = field("dot", "how a state scores an item: dot = raw dot product with the tied "
                                                  "item vector; cosine = both L2-normalised (the HSTU reference code's "
                                                  "SASRec and HSTU; use with a temperature such as 0.05)")
    temperature: float = field(1.0, "logits are divided by this temperature")
    seen_bias: bool = field(True, "learn one logit added to every item already in the state's context (the items "
                                  "it attends to): strongly negative where users never repeat an item (MovieLens), "
                                  "so such items leave the top-10 without a mask; near zero or positive where "
                                  "repeats are common (benchmarks/README.md, \"Which π0\")")
    time_buckets: int = field(64, "hstu: log-scaled buckets of the time gap for the relative time bias")
    abs_pos: bool = field(False, "hstu: add a learned absolute position embedding to the input, beside the "
                                 "relative bias (the reference code does; sasrec always has one)")
    inner_dropout: bool = field(False, "hstu: dropout before the output projection, x + f2(drop(LN(AV) * U)) "
                                       "(the reference code), instead of on its output")
    proj_bias: bool = field(True, "hstu: biases on the f1/f2 projections (off = the reference code: no bias, "
                                  "weights N(0, 0.02²))")
    rab_init_std: float = field(0.0, "hstu: std of the normal initialisation of the relative biases "
                                     "(0 = zeros; the reference code: 0.02)")

    def __post_init__(self) -> None:
        if self.dim <= 0 or self.heads <= 0 or self.dim % self.heads:
            raise InputError(f"model.dim ({self.dim}) must be a positive multiple of model.heads ({self.heads})")
        if not self.init_std > 0:
            raise InputError(f"model.init_std must be positive; got {self.init_std}")
        if self.layers < 1 or self.max_len < 1:
            raise InputError("model.layers and model.max_len must be at least 1")
