"""Full-catalog ranking against a brute-force reference, and metrics against hand-worked tables."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from recalign.eval.metrics import (
    evaluate_queries,
    hit_rate,
    mrr,
    mrr_at,
    ndcg,
    ranking_metrics,
    reward_metrics,
    target_ranks,
    topk_items,
)

# ---------------------------------------------------------------------------------------------
# Brute-force references (numpy, one user at a time)
# ---------------------------------------------------------------------------------------------


def brute_candidates(n_items, history, target):
    """Candidate tokens of one user: 1..N minus its history, the target always kept."""
    seen = set(int(t) for t in history) - {int(target)}
    return np.array([j for j in range(1, n_items + 1) if j not in seen], dtype=np.int64)


def brute_scores(q_u, w, tokens, listed=(), value=0.0, temperature=1.0):
    """Float64 scores of `tokens` for one user: `q . w_j / temperature + value * 1[j listed]`."""
    bonus = np.array([value if int(j) in set(listed) else 0.0 for j in tokens])
    return w[tokens] @ q_u / temperature + bonus


def brute_ranks(query, item_weight, targets, histories, offset_lists=None, value=0.0, temp=1.0):
    """rank = 1 + #(other candidates with score >= target score), scores in float64, with an
    optional offset `value` on the tokens of `offset_lists[u]`."""
    q = query.double().numpy()
    w = item_weight.double().numpy()
    n_items = w.shape[0] - 1
    out = []
    for u, t in enumerate(targets.tolist()):
        cand = brute_candidates(n_items, histories[u], t)
        listed = offset_lists[u] if offset_lists is not None else ()
        scores = brute_scores(q[u], w, cand, listed, value, temp)
        s_t = brute_scores(q[u], w, np.array([t]), listed, value, temp)[0]
        out.append(1 + int(np.sum((scores >= s_t) & (cand != t))))
    return np.array(out)


def to_csr(histories):
    lengths = torch.tensor([len(h) for h in histories], dtype=torch.long)
    indptr = torch.cat([torch.zeros(1, dtype=torch.long), torch.cumsum(lengths, 0)])
    flat = [t for h in histories for t in h]
    return indptr, torch.tensor(flat, dtype=torch.long)


def random_case(seed, n_users=9, n_items=23, dim=4, n_levels=3, hist_max=6):
    """Integer-valued embeddings (exact in float32 and float64) with many exact ties; random
    histories that sometimes contain the target, duplicates and padding."""
    g = torch.Generator().manual_seed(seed)
    query = torch.randint(-n_levels, n_levels + 1, (n_users, dim), generator=g).float()
    item_weight = torch.randint(-n_levels, n_levels + 1, (n_items + 1, dim), generator=g).float()
    targets = torch.randint(1, n_items + 1, (n_users,), generator=g)
    histories = []
    for u in range(n_users):
        h = torch.randint(
            0, n_items + 1, (int(torch.randint(0, hist_max + 1, (1,), generator=g)),), generator=g
        ).tolist()
        if u % 3 == 0:
            h.append(int(targets[u]))  # the target in the history: must stay a candidate
        histories.append(h)
    return query, item_weight, targets, histories


def random_offset_lists(seed, targets, n_items, list_max=6):
    """Random per-user offset lists with padding and duplicates; every second user lists its
    target (twice for every fourth), the others list it only by chance."""
    g = torch.Generator().manual_seed(seed + 1000)
    lists = []
    for u, t in enumerate(targets.tolist()):
        n = int(torch.randint(0, list_max + 1, (1,), generator=g))
        h = torch.randint(0, n_items + 1, (n,), generator=g).tolist()
        h += h[:2]  # duplicates
        if u % 2 == 0:
            h += [t] * (1 + (u % 4 == 0))
        lists.append(h)
    return lists


# ---------------------------------------------------------------------------------------------
# target_ranks
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("chunk", [1, 7, 23, 1000])
def test_target_ranks_match_brute_force_with_ties_and_exclusions(seed, chunk):
    query, item_weight, targets, histories = random_case(seed)
    expected = brute_ranks(query, item_weight, targets, histories)
    got = target_ranks(query, item_weight, targets, exclude=to_csr(histories), item_chunk=chunk)
    assert got.dtype == torch.long
    np.testing.assert_array_equal(got.numpy(), expected)


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("chunk", [1, 5, 23, 1000])
@pytest.mark.parametrize("value", [1.0, -2.0, 0.5, 3.0])
@pytest.mark.parametrize("with_exclude", [False, True])
def test_target_ranks_with_offset_match_brute_force(seed, chunk, value, with_exclude):
    """Integer scores and dyadic offsets: raw ties, ties created by the offset (an item listed
    with raw score s - value against an unlisted s), targets inside and outside the lists."""
    query, item_weight, targets, histories = random_case(seed)
    lists = random_offset_lists(seed, targets, 23)
    assert any(int(t) in h for t, h in zip(targets, lists))
    assert any(int(t) not in h for t, h in zip(targets, lists))
    hist = histories if with_exclude else [[] for _ in histories]
    expected = brute_ranks(query, item_weight, targets, hist, lists, value)
    got = target_ranks(
        query,
        item_weight,
        targets,
        exclude=to_csr(hist) if with_exclude else None,
        item_chunk=chunk,
        offset=(*to_csr(lists), value),
    )
    np.testing.assert_array_equal(got.numpy(), expected)
    assert not np.array_equal(expected, brute_ranks(query, item_weight, targets, hist))


@pytest.mark.parametrize("chunk", [1, 4, 1000])
def test_target_ranks_with_offset_and_temperature(chunk):
    """The offset is added after the division by the temperature (exact for powers of 2)."""
    query, item_weight, targets, histories = random_case(11)
    lists = random_offset_lists(11, targets, 23)
    for temp, value in ((0.5, 1.0), (4.0, 0.75), (4.0, -0.25)):
        expected = brute_ranks(query, item_weight, targets, histories, lists, value, temp)
        got = target_ranks(
            query,
            item_weight,
            targets,
            exclude=to_csr(histories),
            item_chunk=chunk,
            temperature=temp,
            offset=(*to_csr(lists), value),
        )
        np.testing.assert_array_equal(got.numpy(), expected)


@settings(max_examples=60, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    n_users=st.integers(1, 6),
    n_items=st.integers(1, 15),
    levels=st.integers(0, 2),
    chunk=st.integers(1, 17),
    value=st.sampled_from([-3.0, -1.0, -0.5, 0.5, 1.0, 2.0]),
)
def test_target_ranks_with_offset_property(seed, n_users, n_items, levels, chunk, value):
    query, item_weight, targets, histories = random_case(
        seed, n_users=n_users, n_items=n_items, dim=3, n_levels=levels, hist_max=n_items
    )
    lists = random_offset_lists(seed, targets, n_items, list_max=n_items)
    expected = brute_ranks(query, item_weight, targets, histories, lists, value)
    got = target_ranks(
        query,
        item_weight,
        targets,
        exclude=to_csr(histories),
        item_chunk=chunk,
        offset=(*to_csr(lists), value),
    )
    np.testing.assert_array_equal(got.numpy(), expected)


def test_offset_hand_worked():
    """Scores 5, 4, 3, 2, 1 for tokens 1..5, target token 5. Listing it twice with value 1.75
    gives 2.75 (once, not 3.5): rank 4. Listing token 3 too (4.75) keeps rank 4; excluding tokens
    1 and 3 then leaves rank 2. A value of 1 on the target ties it with token 4 (2 = 2): the tie
    counts against it, rank 5."""
    item_weight = torch.tensor([[0.0], [5.0], [4.0], [3.0], [2.0], [1.0]])
    query, targets = torch.ones(1, 1), torch.tensor([5])
    assert target_ranks(query, item_weight, targets).tolist() == [5]
    twice = (torch.tensor([0, 3]), torch.tensor([5, 0, 5]), 1.75)
    assert target_ranks(query, item_weight, targets, offset=twice, item_chunk=2).tolist() == [4]
    with3 = (torch.tensor([0, 3]), torch.tensor([5, 3, 5]), 1.75)
    assert target_ranks(query, item_weight, targets, offset=with3).tolist() == [4]
    exclude = (torch.tensor([0, 3]), torch.tensor([1, 3, 5]))  # the target is never excluded
    got = target_ranks(query, item_weight, targets, exclude=exclude, offset=with3, item_chunk=1)
    assert got.tolist() == [2]
    tie = (torch.tensor([0, 1]), torch.tensor([5]), 1.0)
    assert target_ranks(query, item_weight, targets, offset=tie, item_chunk=3).tolist() == [5]


def test_offset_keeps_float32_ties_exact():
    """Random float32 rows with exact copies of each target: with the same offset on the target
    and its copies, the copies still tie with it (rank >= 4) whatever the chunking."""
    g = torch.Generator().manual_seed(2)
    n_items, dim = 60, 16
    query = torch.randn(12, dim, generator=g)
    item_weight = torch.randn(n_items + 1, dim, generator=g)
    targets = torch.arange(1, 13)
    lists = []
    for t in targets.tolist():
        for shift in (12, 24, 36):
            item_weight[t + shift] = item_weight[t]
        lists.append([t, t + 12, t + 24, t + 36])
    offset = (*to_csr(lists), 0.37)
    ranks = [
        target_ranks(query, item_weight, targets, item_chunk=c, temperature=0.7, offset=offset)
        for c in (1, 5, 7, 13, 60)
    ]
    for r in ranks[1:]:
        torch.testing.assert_close(r, ranks[0], rtol=0, atol=0)
    assert bool((ranks[0] >= 4).all())


def test_offset_value_zero_is_no_offset():
    g = torch.Generator().manual_seed(12)
    query = torch.randn(9, 5, generator=g)
    item_weight = torch.randn(31, 5, generator=g)
    targets = torch.randint(1, 31, (9,), generator=g)
    lists = random_offset_lists(12, targets, 30)
    exclude = to_csr(random_offset_lists(13, targets, 30))
    zero = (*to_csr(lists), 0.0)
    for chunk in (4, 1000):
        base = target_ranks(query, item_weight, targets, exclude=exclude, item_chunk=chunk)
        got = target_ranks(
            query, item_weight, targets, exclude=exclude, item_chunk=chunk, offset=zero
        )
        torch.testing.assert_close(got, base, rtol=0, atol=0)
        s0, t0 = topk_items(query, item_weight, 5, exclude=exclude, item_chunk=chunk)
        s1, t1 = topk_items(query, item_weight, 5, exclude=exclude, item_chunk=chunk, offset=zero)
        torch.testing.assert_close(s1, s0, rtol=0, atol=0)
        torch.testing.assert_close(t1, t0, rtol=0, atol=0)


@pytest.mark.parametrize("value", [math.inf, -math.inf, math.nan])
def test_offset_rejects_non_finite_value(value):
    query, item_weight, targets, histories = random_case(0)
    offset = (*to_csr(histories), value)
    with pytest.raises(ValueError, match="offset value must be finite"):
        target_ranks(query, item_weight, targets, offset=offset)
    with pytest.raises(ValueError, match="offset value must be finite"):
        topk_items(query, item_weight, 3, offset=offset)


@pytest.mark.parametrize(
    ("offset", "match"),
    [
        ((torch.tensor([0, 1]), torch.tensor([1]), 1.0), "offset indptr"),
        ((torch.tensor([0, 1, 1]), torch.tensor([7]), 1.0), "offset indices must be tokens"),
        ((torch.tensor([0, 1, 1]), torch.tensor([1])), "offset must be"),
    ],
)
def test_offset_rejects_bad_csr(offset, match):
    query, item_weight = torch.randn(2, 3), torch.randn(6, 3)
    with pytest.raises(ValueError, match=match):
        target_ranks(query, item_weight, torch.tensor([1, 2]), offset=offset)
    with pytest.raises(ValueError, match=match):
        topk_items(query, item_weight, 2, offset=offset)


def test_target_ranks_without_exclusion_float64_random():
    g = torch.Generator().manual_seed(1)
    query = torch.randn(16, 8, generator=g, dtype=torch.float64)
    item_weight = torch.randn(51, 8, generator=g, dtype=torch.float64)
    targets = torch.randint(1, 51, (16,), generator=g)
    expected = brute_ranks(query, item_weight, targets, [[] for _ in range(16)])
    for chunk in (7, 50, 4096):
        got = target_ranks(query, item_weight, targets, item_chunk=chunk)
        np.testing.assert_array_equal(got.numpy(), expected)


def test_chunk_size_does_not_change_float32_ranks_with_duplicate_rows():
    """Random float32 rows where each target has 3 exact copies elsewhere in the catalog: the
    target's score comes from the same matmul as its copies, so the copies tie exactly and are
    all ranked above it, whatever the chunking."""
    g = torch.Generator().manual_seed(2)
    n_items, dim = 60, 16
    query = torch.randn(12, dim, generator=g)
    item_weight = torch.randn(n_items + 1, dim, generator=g)
    targets = torch.arange(1, 13)
    for t in targets.tolist():  # copies of target t at tokens t + 12, t + 24, t + 36
        for shift in (12, 24, 36):
            item_weight[t + shift] = item_weight[t]
    ranks = [target_ranks(query, item_weight, targets, item_chunk=c) for c in (1, 5, 7, 13, 60)]
    for r in ranks[1:]:
        torch.testing.assert_close(r, ranks[0], rtol=0, atol=0)
    # reference: one float32 matmul over the whole catalog, ties with the 3 copies count against
    full = query @ item_weight[1:].T  # [U, N], column j - 1 is token j
    s_t = full.gather(1, (targets - 1).unsqueeze(1))
    expected = (full >= s_t).sum(1)  # counts the target itself once: rank = 1 + #others
    torch.testing.assert_close(ranks[0], expected, rtol=0, atol=0)
    assert bool((ranks[0] >= 4).all())


@settings(max_examples=60, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    n_users=st.integers(1, 6),
    n_items=st.integers(1, 15),
    dim=st.integers(1, 4),
    levels=st.integers(0, 2),
    chunk=st.integers(1, 17),
)
def test_target_ranks_property_matches_brute_force(seed, n_users, n_items, dim, levels, chunk):
    query, item_weight, targets, histories = random_case(
        seed, n_users=n_users, n_items=n_items, dim=dim, n_levels=levels, hist_max=n_items
    )
    expected = brute_ranks(query, item_weight, targets, histories)
    got = target_ranks(query, item_weight, targets, exclude=to_csr(histories), item_chunk=chunk)
    np.testing.assert_array_equal(got.numpy(), expected)


def test_target_in_history_is_never_excluded():
    query, item_weight, targets, _ = random_case(3)
    only_targets = [[int(t)] for t in targets]
    ranks_with = target_ranks(
        query, item_weight, targets, exclude=to_csr(only_targets), item_chunk=5
    )
    ranks_without = target_ranks(query, item_weight, targets, item_chunk=5)
    torch.testing.assert_close(ranks_with, ranks_without, rtol=0, atol=0)


def test_exclusion_removes_rivals_above_the_target():
    """Scores 5, 4, 3, 2, 1 for tokens 1..5; target token 4 (score 2) has rank 4. Excluding
    tokens 1 and 5 (one above, one below) leaves rank 3."""
    item_weight = torch.tensor([[0.0], [5.0], [4.0], [3.0], [2.0], [1.0]])
    query = torch.ones(1, 1)
    targets = torch.tensor([4])
    assert target_ranks(query, item_weight, targets).tolist() == [4]
    exclude = (torch.tensor([0, 2]), torch.tensor([1, 5]))
    assert target_ranks(query, item_weight, targets, exclude=exclude, item_chunk=2).tolist() == [3]


def test_padding_is_never_ranked():
    query, item_weight, targets, histories = random_case(4)
    expected = target_ranks(query, item_weight, targets, exclude=to_csr(histories), item_chunk=4)
    item_weight[0] = 1e6 * query.sum(0).sign()  # padding would beat everything if it were scored
    got = target_ranks(query, item_weight, targets, exclude=to_csr(histories), item_chunk=4)
    torch.testing.assert_close(got, expected, rtol=0, atol=0)


@pytest.mark.parametrize("chunk", [3, 1000])
def test_constant_model_gets_the_worst_rank(chunk):
    n_items = 20
    g = torch.Generator().manual_seed(5)
    targets = torch.randint(1, n_items + 1, (6,), generator=g)
    # a zero query: every item scores exactly 0
    zero = target_ranks(
        torch.zeros(6, 8), torch.randn(n_items + 1, 8, generator=g), targets, item_chunk=chunk
    )
    assert zero.tolist() == [n_items] * 6
    # identical item rows with a random query: every item gets the same float32 score
    same = torch.randn(1, 8, generator=g).expand(n_items + 1, 8).contiguous()
    ranks = target_ranks(torch.randn(6, 8, generator=g), same, targets, item_chunk=chunk)
    assert ranks.tolist() == [n_items] * 6
    # with 2 excluded non-target items per user, the worst rank is N - 2
    hist = [[t % n_items + 1, (t + 1) % n_items + 1] for t in targets.tolist()]
    ranks = target_ranks(torch.zeros(6, 8), same, targets, exclude=to_csr(hist), item_chunk=chunk)
    assert ranks.tolist() == [n_items - 2] * 6


def test_target_ranks_temperature_and_dtype():
    query, item_weight, targets, histories = random_case(6)
    base = target_ranks(query, item_weight, targets, exclude=to_csr(histories))
    hot = target_ranks(query, item_weight, targets, exclude=to_csr(histories), temperature=0.5)
    torch.testing.assert_close(base, hot, rtol=0, atol=0)
    # item_weight in another dtype is cast to query's
    as64 = target_ranks(query.double(), item_weight, targets, exclude=to_csr(histories))
    torch.testing.assert_close(base, as64, rtol=0, atol=0)
    bf = target_ranks(query.bfloat16(), item_weight, targets, exclude=to_csr(histories))
    torch.testing.assert_close(base, bf, rtol=0, atol=0)  # small integers are exact in bf16


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"targets": torch.tensor([0, 1])}, "targets"),
        ({"targets": torch.tensor([1, 6])}, "targets"),
        ({"targets": torch.tensor([1])}, "targets"),
        ({"exclude": (torch.tensor([0, 1]), torch.tensor([1]))}, "indptr"),
        ({"exclude": (torch.tensor([0, 1, 1]), torch.tensor([7]))}, "tokens"),
        ({"item_chunk": 0}, "item_chunk"),
        ({"temperature": 0.0}, "temperature"),
        ({"query": torch.full((2, 3), math.nan)}, "NaN"),
    ],
)
def test_target_ranks_rejects_bad_input(kwargs, match):
    args = {
        "query": torch.randn(2, 3),
        "item_weight": torch.randn(6, 3),
        "targets": torch.tensor([1, 2]),
    }
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        target_ranks(**args)


def test_target_ranks_rejects_non_finite_item_weight():
    item_weight = torch.randn(6, 3)
    item_weight[4, 1] = math.inf
    with pytest.raises(ValueError, match="rows 3..4"):
        target_ranks(torch.randn(2, 3), item_weight, torch.tensor([1, 2]), item_chunk=2)


# ---------------------------------------------------------------------------------------------
# topk_items
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("chunk", [1, 4, 7, 1000])
@pytest.mark.parametrize("k", [1, 5, 12])
def test_topk_matches_brute_force_sort(chunk, k):
    g = torch.Generator().manual_seed(7)
    n_users, n_items, dim = 10, 30, 6
    query = torch.randn(n_users, dim, generator=g, dtype=torch.float64)
    item_weight = torch.randn(n_items + 1, dim, generator=g, dtype=torch.float64)
    item_weight[0] = 100.0 * query.mean(0)  # padding would win if scored
    histories = [torch.randint(0, n_items + 1, (u,), generator=g).tolist() for u in range(n_users)]
    scores, tokens = topk_items(query, item_weight, k, exclude=to_csr(histories), item_chunk=chunk)
    assert scores.shape == tokens.shape == (n_users, k)
    q, w = query.numpy(), item_weight.numpy()
    for u in range(n_users):
        seen = set(histories[u])
        cand = np.array([j for j in range(1, n_items + 1) if j not in seen])
        s = w[cand] @ q[u]
        order = np.argsort(-s, kind="stable")[:k]
        np.testing.assert_array_equal(tokens[u].numpy(), cand[order])
        np.testing.assert_allclose(scores[u].numpy(), s[order], rtol=1e-12)
        assert 0 not in tokens[u].tolist()
        assert not seen & set(tokens[u].tolist())


def test_topk_with_ties_returns_the_tied_scores():
    query, item_weight, _, histories = random_case(8, n_users=5, n_items=25)
    scores, tokens = topk_items(query, item_weight, 6, exclude=to_csr(histories), item_chunk=4)
    full = (query @ item_weight.T).numpy()
    for u in range(5):
        cand = brute_candidates(25, [t for t in histories[u] if t], -1)
        np.testing.assert_array_equal(scores[u].numpy(), np.sort(full[u, cand])[::-1][:6])
        np.testing.assert_array_equal(full[u, tokens[u].numpy()], scores[u].numpy())
        assert set(tokens[u].tolist()) <= set(cand.tolist())
        assert len(set(tokens[u].tolist())) == 6


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("chunk", [1, 4, 7, 1000])
@pytest.mark.parametrize("value", [2.0, -1.0, 0.5])
@pytest.mark.parametrize("with_exclude", [False, True])
def test_topk_with_offset_matches_brute_force(seed, chunk, value, with_exclude):
    """Integer scores with many ties: the returned scores are the k best brute-force scores,
    each returned token has its returned score, and every strictly better candidate is in."""
    n_users, n_items, k = 8, 25, 6
    query, item_weight, targets, histories = random_case(seed, n_users=n_users, n_items=n_items)
    item_weight[0] = 100.0  # padding would win for some users if it were scored
    lists = random_offset_lists(seed, targets, n_items, list_max=10)
    hist = histories if with_exclude else [[] for _ in histories]
    scores, tokens = topk_items(
        query,
        item_weight,
        k,
        exclude=to_csr(hist) if with_exclude else None,
        item_chunk=chunk,
        offset=(*to_csr(lists), value),
    )
    q, w = query.double().numpy(), item_weight.double().numpy()
    for u in range(n_users):
        cand = brute_candidates(n_items, hist[u], -1)
        s = brute_scores(q[u], w, cand, lists[u], value)
        best = np.sort(s)[::-1][:k]
        np.testing.assert_array_equal(scores[u].double().numpy(), best)
        got = tokens[u].tolist()
        assert len(set(got)) == k and set(got) <= set(cand.tolist())
        np.testing.assert_array_equal(brute_scores(q[u], w, np.array(got), lists[u], value), best)
        assert set(cand[s > best[-1]].tolist()) <= set(got)


def test_topk_offset_brings_an_item_in_and_ignores_excluded():
    """Scores 5, 4, 3, 2, 1; +3.5 on tokens 5 and 1 (1 excluded): top-2 is 5 (4.5) then 2 (4)."""
    item_weight = torch.tensor([[0.0], [5.0], [4.0], [3.0], [2.0], [1.0]])
    query = torch.ones(1, 1)
    offset = (torch.tensor([0, 3]), torch.tensor([5, 1, 5]), 3.5)
    exclude = (torch.tensor([0, 1]), torch.tensor([1]))
    for chunk in (1, 2, 10):
        scores, tokens = topk_items(
            query, item_weight, 2, exclude=exclude, item_chunk=chunk, offset=offset
        )
        assert tokens.tolist() == [[5, 2]] and scores.tolist() == [[4.5, 4.0]]


def test_topk_can_exhaust_the_candidates_but_not_more():
    item_weight = torch.tensor([[9.0], [1.0], [2.0], [3.0], [4.0]])
    query = torch.ones(1, 1)
    exclude = (torch.tensor([0, 2]), torch.tensor([4, 2]))
    scores, tokens = topk_items(query, item_weight, 2, exclude=exclude, item_chunk=1)
    assert tokens.tolist() == [[3, 1]] and scores.tolist() == [[3.0, 1.0]]
    with pytest.raises(ValueError, match="fewer than k"):
        topk_items(query, item_weight, 3, exclude=exclude)
    with pytest.raises(ValueError, match="k must be"):
        topk_items(query, item_weight, 5)


# ---------------------------------------------------------------------------------------------
# Metrics of ranks
# ---------------------------------------------------------------------------------------------


def test_metrics_hand_computed_table():
    """ranks [1, 3, 11, 60], k = 10 and 50:

    | rank | HR@10 | NDCG@10         | HR@50 | NDCG@50          | RR    | RR@10 |
    |------|-------|-----------------|-------|------------------|-------|-------|
    | 1    | 1     | 1/log2 2 = 1    | 1     | 1                | 1     | 1     |
    | 3    | 1     | 1/log2 4 = 0.5  | 1     | 0.5              | 1/3   | 1/3   |
    | 11   | 0     | 0               | 1     | 1/log2 12        | 1/11  | 0     |
    | 60   | 0     | 0               | 0     | 0                | 1/60  | 0     |

    HR@10 = 2/4 = 0.5, NDCG@10 = (1 + 0.5)/4 = 0.375, HR@50 = 0.75,
    NDCG@50 = (1 + 0.5 + 1/log2 12)/4 = (1.5 + 0.278943)/4 = 0.444736,
    MRR = (1 + 1/3 + 1/11 + 1/60)/4 = 0.360227, MRR@10 = (1 + 1/3)/4 = 1/3.
    """
    ranks = np.array([1, 3, 11, 60])
    np.testing.assert_array_equal(hit_rate(ranks, 10), [1, 1, 0, 0])
    np.testing.assert_allclose(ndcg(ranks, 10), [1, 0.5, 0, 0])
    np.testing.assert_allclose(ndcg(ranks, 50), [1, 0.5, 1 / math.log2(12), 0])
    np.testing.assert_allclose(mrr(ranks), [1, 1 / 3, 1 / 11, 1 / 60])
    np.testing.assert_allclose(mrr_at(ranks, 10), [1, 1 / 3, 0, 0])
    assert ndcg(ranks, 10).dtype == np.float64

    m = ranking_metrics(torch.tensor(ranks), ks=(10, 50))
    assert list(m) == ["hr@10", "ndcg@10", "hr@50", "ndcg@50", "mrr", "n"]
    assert m["hr@10"] == 0.5
    assert m["ndcg@10"] == pytest.approx(0.375)
    assert m["hr@50"] == 0.75
    assert m["ndcg@50"] == pytest.approx((1.5 + 1 / math.log2(12)) / 4)
    assert m["ndcg@50"] == pytest.approx(0.444736, abs=1e-6)
    assert m["mrr"] == pytest.approx((1 + 1 / 3 + 1 / 11 + 1 / 60) / 4)
    assert m["mrr"] == pytest.approx(0.360227, abs=1e-6)
    assert m["n"] == 4
    assert all(type(v) is float for key, v in m.items() if key != "n")


def test_default_ks_and_empty_ranks():
    m = ranking_metrics(np.array([1, 100, 199, 201]))
    assert [key for key in m if key.startswith("hr@")] == ["hr@10", "hr@50", "hr@200"]
    assert m["hr@200"] == 0.75
    empty = ranking_metrics(np.array([], dtype=np.int64))
    assert empty["n"] == 0 and empty["hr@10"] is None and empty["mrr"] is None


def test_metrics_reject_bad_ranks():
    with pytest.raises(ValueError, match="1-based"):
        hit_rate(np.array([0, 1]), 10)
    with pytest.raises(ValueError, match="k must"):
        ndcg(np.array([1]), 0)
    with pytest.raises(ValueError, match="integers"):
        mrr(np.array([1.5]))


def test_reward_metrics_hand_computed():
    """ranks [1, 3, 11, 60], rewards [5, 2, 4, 0], threshold 4 -> high subset = ranks [1, 11]:
    high/hr@10 = 0.5, high/ndcg@10 = 0.5, high/mrr = (1 + 1/11)/2, high/n = 2.

    rw_ndcg@10 = (5*1 + 2*0.5 + 4*0 + 0*0) / (5 + 2 + 4 + 0) = 6/11
    rw_ndcg@50 = (5 + 1 + 4/log2 12) / 11
    """
    ranks, rewards = np.array([1, 3, 11, 60]), np.array([5.0, 2.0, 4.0, 0.0])
    m = reward_metrics(ranks, rewards, (10, 50), 4.0)
    assert m["high/hr@10"] == 0.5 and m["high/ndcg@10"] == 0.5 and m["high/n"] == 2
    assert m["high/mrr"] == pytest.approx((1 + 1 / 11) / 2)
    assert m["rw_ndcg@10"] == pytest.approx(6 / 11)
    assert m["rw_ndcg@50"] == pytest.approx((6 + 4 / math.log2(12)) / 11)
    # equal rewards: rw_ndcg = ndcg
    m1 = reward_metrics(ranks, np.full(4, 3.0), (10, 50))
    assert "high/n" not in m1
    assert m1["rw_ndcg@50"] == pytest.approx(ranking_metrics(ranks, (50,))["ndcg@50"])


def test_reward_metrics_empty_high_subset_and_bad_rewards():
    m = reward_metrics(np.array([1, 2]), np.array([1.0, 2.0]), (10,), high_threshold=4.0)
    assert m["high/n"] == 0 and m["high/hr@10"] is None and m["high/mrr"] is None
    assert m["rw_ndcg@10"] == pytest.approx((1 * 1 + 2 / math.log2(3)) / 3)
    assert reward_metrics(np.array([1, 2]), np.zeros(2), (10,))["rw_ndcg@10"] is None
    # negative rewards are not clipped: a hit on a disliked target costs; sum <= 0 -> None
    signed = reward_metrics(np.array([1, 11]), np.array([-1.0, 3.0]), (10,))
    assert signed["rw_ndcg@10"] == pytest.approx((-1.0 * 1 + 3.0 * 0) / 2)
    assert reward_metrics(np.array([1, 2]), np.array([-2.0, 1.0]), (10,))["rw_ndcg@10"] is None
    with pytest.raises(ValueError, match="NaN"):
        reward_metrics(np.array([1, 2]), np.array([math.nan, 2.0]), (10,))
    with pytest.raises(ValueError, match="one value per rank"):
        reward_metrics(np.array([1, 2]), np.array([1.0]), (10,))


def test_evaluate_queries_combines_ranks_and_metrics():
    query, item_weight, targets, histories = random_case(9)
    rewards = torch.linspace(1, 5, len(targets))
    metrics, ranks = evaluate_queries(
        query,
        item_weight,
        targets,
        rewards,
        to_csr(histories),
        ks=(5, 10),
        high_threshold=4.0,
        item_chunk=6,
    )
    np.testing.assert_array_equal(
        ranks.numpy(), brute_ranks(query, item_weight, targets, histories)
    )
    expected = ranking_metrics(ranks, (5, 10)) | reward_metrics(ranks, rewards, (5, 10), 4.0)
    assert metrics == expected
    assert {"hr@5", "ndcg@10", "mrr", "n", "high/ndcg@5", "high/n", "rw_ndcg@10"} <= set(metrics)
    plain, _ = evaluate_queries(query, item_weight, targets, ks=(5,))
    assert set(plain) == {"hr@5", "ndcg@5", "mrr", "n"}
