"""recalign: post-train generative recommenders on logged feedback.

Exponential reward-weighted SFT (Chidambaram et al., 2026) and the baselines it is compared
against, on SASRec/HSTU backbones, with full-ranking and reward-aware evaluation.
"""

__version__ = "0.1.0"
