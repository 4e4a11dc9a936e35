"""Padded, truncated sequence batches, built with vectorised numpy (no per-row Python).

Token space: item code c is token c + 1; token 0 is padding. Batches are LEFT-padded so the most
recent item sits at position L - 1 and the hidden state there is the one that scores the next
item.

Training windows cover every training transition exactly once: a user's training rows
`s..e-1` are cut, from the most recent end backwards, into windows of up to `max_len + 1` rows
whose ends lie `stride` rows apart; each window scores only its last `stride` targets (the
earliest window of a user scores all of its own), so every target is scored once and, when
`stride < max_len`, sees at least `max_len - stride` items of history. `stride = max_len` gives
non-overlapping windows (the cheapest: each position is encoded once, but a target early in a
window sees little history); `stride = max_len // 2` encodes every position about twice. (SASRec
keeps only the most recent window; RecBole feeds every prefix separately, `stride = 1`, which
costs `max_len` times more compute for the same transitions.)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from recalign.data.split import Split, Targets


@dataclass
class SeqBatch:
    """One batch. Shapes `[B, L]`; `targets`, `rewards`, `target_rows` are aligned with `items`:
    position t holds the input item and the item that follows it (0 / 0.0 / -1 where none)."""

    items: torch.Tensor  # [B, L] long tokens, 0 = padding
    timestamps: torch.Tensor  # [B, L] long seconds of the input items, 0 at padding
    targets: torch.Tensor  # [B, L] long tokens of the next item, 0 = no target
    rewards: torch.Tensor  # [B, L] float reward of the target interaction
    target_rows: torch.Tensor  # [B, L] long row index of the target interaction in the table, -1 = none
    users: torch.Tensor  # [B] long user codes

    def to(self, device: torch.device | str, non_blocking: bool = False) -> SeqBatch:
        return SeqBatch(*(t.to(device, non_blocking=non_blocking) for t in
                          (self.items, self.timestamps, self.targets, self.rewards, self.target_rows, self.users)))

    def pin_memory(self) -> SeqBatch:
        return SeqBatch(*(t.pin_memory() for t in
                          (self.items, self.timestamps, self.targets, self.rewards, self.target_rows, self.users)))


def gather_windows(starts: np.ndarray, ends: np.ndarray, length: int) -> tuple[np.ndarray, np.ndarray]:
    """Row indices of the last `length` rows of each range `[starts[j], ends[j])`, left-padded.

    Returns `(rows [B, length] int64, valid [B, length] bool)`; invalid entries hold row 0.
    """
    idx = ends[:, None] - length + np.arange(length, dtype=np.int64)[None, :]
    valid = idx >= starts[:, None]
    return np.where(valid, idx, 0), valid


class SequenceData:
    """Training windows and evaluation contexts of a `Split`, ready to batch."""

    def __init__(self, split: Split, max_len: int, stride: int = 0):
        self.split = split
        self.max_len = max_len
        stride = stride or max_len
        if not 1 <= stride <= max_len:
            raise ValueError(f"window stride must be in [1, max_len={max_len}]; got {stride}")
        self.stride = stride
        inter = split.inter
        self.tokens = inter.item + 1
        self.ts = inter.timestamp
        self.reward = inter.reward
        # training windows: (user, start row, end row) with end - start <= max_len + 1; targets in
        # rows [first_new, end) are the window's own (earlier ones belong to an earlier window)
        s = split.offsets[:-1]
        e = split.train_end
        n_trans = np.maximum(e - s - 1, 0)  # transitions per user
        n_win = -(-n_trans // stride)  # ceil
        users = np.repeat(np.arange(len(s)), n_win)
        k = np.arange(users.size) - np.repeat(np.cumsum(n_win) - n_win, n_win)  # window index from the end
        w_end = e[users] - k * stride
        w_start = np.maximum(w_end - max_len - 1, s[users])
        self.win_user, self.win_start, self.win_end = users.astype(np.int64), w_start, w_end
        self.win_first_new = np.maximum(w_end - stride, w_start + 1)

    @property
    def n_windows(self) -> int:
        return int(self.win_user.shape[0])

    @property
    def n_train_targets(self) -> int:
        return int(np.sum(self.win_end - self.win_first_new))

    def train_batch(self, windows: np.ndarray) -> SeqBatch:
        """The batch of the given training windows (indices into the window list)."""
        start, end = self.win_start[windows], self.win_end[windows]
        rows, valid = gather_windows(start, end, self.max_len + 1)
        tok = np.where(valid, self.tokens[rows], 0)
        ts = np.where(valid, self.ts[rows], 0)
        rw = np.where(valid, self.reward[rows], 0.0).astype(np.float32)
        trow = np.where(valid, rows, -1)
        # a target needs an input before it, and belongs to this window (not an earlier one)
        has_input = valid[:, :-1] & (rows[:, 1:] >= self.win_first_new[windows][:, None])
        return SeqBatch(
            items=torch.from_numpy(tok[:, :-1]),
            timestamps=torch.from_numpy(ts[:, :-1]),
            targets=torch.from_numpy(np.where(has_input, tok[:, 1:], 0)),
            rewards=torch.from_numpy(np.where(has_input, rw[:, 1:], 0.0).astype(np.float32)),
            target_rows=torch.from_numpy(np.where(has_input, trow[:, 1:], -1)),
            users=torch.from_numpy(self.win_user[windows]),
        )

    def context_batch(self, targets: Targets, idx: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """Left-padded contexts `(items [B, L], timestamps [B, L])` of evaluation targets `idx`."""
        users = targets.users[idx]
        start = self.split.offsets[users]
        rows, valid = gather_windows(start, targets.context_end[idx], self.max_len)
        return (torch.from_numpy(np.where(valid, self.tokens[rows], 0)),
                torch.from_numpy(np.where(valid, self.ts[rows], 0)))

    def context_steps(self, targets: Targets, idx: np.ndarray | None = None) -> np.ndarray:
        """Logged interactions in each target's context (of the targets `idx`, default all): the
        simulator's `step`, so that its true rewards are those of that moment."""
        users, end = (targets.users, targets.context_end) if idx is None else (targets.users[idx], targets.context_end[idx])
        return end - self.split.offsets[users]

    def seen_items(self, targets: Targets, idx: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """CSR `(indptr [B+1], tokens [nnz])` of every item in each context (whole history, not
        only the last `max_len`), for masking already-seen items."""
        users = targets.users[idx]
        start = self.split.offsets[users]
        lengths = targets.context_end[idx] - start
        indptr = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        rows = np.repeat(start - indptr[:-1], lengths) + np.arange(indptr[-1])
        return torch.from_numpy(indptr), torch.from_numpy(self.tokens[rows])

    def target_tokens(self, targets: Targets, idx: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        rows = targets.target_row[idx]
        return torch.from_numpy(self.tokens[rows]), torch.from_numpy(self.reward[rows].astype(np.float32))


def history_batch(histories: list[np.ndarray], max_len: int) -> torch.Tensor:
    """Left-pad explicit token histories (for `recommend --history`) to `[B, max_len]`."""
    out = np.zeros((len(histories), max_len), dtype=np.int64)
    for j, h in enumerate(histories):  # B is tiny here (interactive requests)
        h = np.asarray(h, dtype=np.int64)[-max_len:]
        if h.size:
            out[j, -h.size:] = h
    return torch.from_numpy(out)
