"""Each formula of models.md written out by hand, on the official-layout tensors of tiny models.

The reference below reads weights by their official names (``transformerClip.resblocks.0.*``,
``frame2t_attention``, ``actionClip``, ``weight_center`` ...) from ``official_state_dict()``
and computes attention per sample and per head with explicit loops, so it also checks the
name mapping, the -1e6 key mask, QuickGELU and the LayerNorm eps of the official blocks.
"""

from __future__ import annotations

import math

import pytest
import torch

from clip2video.models.heads import interleave
from tests.support.tiny_clip import tiny_model, tiny_text, tiny_video

ATOL = 2e-5


# ----------------------------------------------------------------- reference
def ln(x, w, b, eps):
    mu = x.mean(-1, keepdim=True)
    var = ((x - mu) ** 2).mean(-1, keepdim=True)
    return (x - mu) / torch.sqrt(var + eps) * w + b


def ref_block(sd, prefix, x, m):
    """One official residual attention block on one sample: x [L, D], m [L] (1 = real)."""
    d = x.shape[-1]
    heads = max(1, d // 64)
    dh = d // heads
    h = ln(x, sd[prefix + "ln_1.weight"], sd[prefix + "ln_1.bias"], 1e-12)
    qkv = h @ sd[prefix + "attn.in_proj_weight"].t() + sd[prefix + "attn.in_proj_bias"]
    q, k, v = qkv.split(d, dim=-1)
    outs = []
    for hd in range(heads):
        sl = slice(hd * dh, (hd + 1) * dh)
        scores = q[:, sl] @ k[:, sl].t() / math.sqrt(dh) + (1.0 - m.float())[None, :] * -1e6
        outs.append(torch.softmax(scores, dim=-1) @ v[:, sl])
    attn = torch.cat(outs, -1) @ sd[prefix + "attn.out_proj.weight"].t() + sd[prefix + "attn.out_proj.bias"]
    x = x + attn
    h = ln(x, sd[prefix + "ln_2.weight"], sd[prefix + "ln_2.bias"], 1e-12)
    h = h @ sd[prefix + "mlp.c_fc.weight"].t() + sd[prefix + "mlp.c_fc.bias"]
    h = h * torch.sigmoid(1.702 * h)
    h = h @ sd[prefix + "mlp.c_proj.weight"].t() + sd[prefix + "mlp.c_proj.bias"]
    return x + h


def ref_transformer(sd, name, x, m):
    i = 0
    while f"{name}.resblocks.{i}.ln_1.weight" in sd:
        x = ref_block(sd, f"{name}.resblocks.{i}.", x, m)
        i += 1
    return x


def nrm(v):
    return v / v.norm(dim=-1, keepdim=True)


def ref_meanp(x, m):
    z = nrm(x) * m[:, None].float()
    return nrm(z.sum(0) / max(1.0, float(m.sum())))


def ref_tdb_tokens(sd, proj, x, m):
    """The 2F-1 TDB tokens (with P and type rows) and their mask, built token by token."""
    pos = sd["frame_position_embeddings.weight"]
    typ = sd["type_position_embeddings.weight"]
    n = x.shape[0]
    d = torch.stack([x[f + 1] - x[f] for f in range(n - 1)])
    if proj == "selfattn":
        d = ref_transformer(sd, "frame2t_attention", d + pos[1:n], m[1:])
        d = 2 * torch.sigmoid(ln(d, sd["trans_layernorm.weight"], sd["trans_layernorm.bias"], 1e-5)) - 1
    elif proj == "mlp":
        d = d @ sd["frame2t_projection"]
        d = 2 * torch.sigmoid(ln(d, sd["trans_layernorm.weight"], sd["trans_layernorm.bias"], 1e-5)) - 1
    tokens, mask = [], []
    for f in range(n):
        tokens.append(x[f] + pos[f] + typ[1])
        mask.append(m[f])
        if f < n - 1:
            tokens.append(d[f] + pos[f] + typ[0])
            mask.append(m[f])
    return torch.stack(tokens), torch.stack(mask)


def ref_global(sd, variant, proj, x, m):
    if variant == "meanp":
        return ref_meanp(x, m)
    pos = sd["frame_position_embeddings.weight"]
    if variant in ("seqtransf", "tab"):
        y = ref_transformer(sd, "transformerClip", x + pos[: x.shape[0]], m)
        return ref_meanp(y + x, m)
    tokens, tmask = ref_tdb_tokens(sd, proj, x, m)
    y = ref_transformer(sd, "transformerClip", tokens, tmask)
    return ref_meanp(y[0::2] + x, m)


def ref_aggregate(sd, tokens, weights):
    wc, ec = sd["weight_center"], sd["emb_center"]
    rs = []
    for k in range(wc.shape[0]):
        r = torch.zeros(tokens.shape[-1])
        for i in range(tokens.shape[0]):
            p = torch.softmax(tokens[i] @ wc.t(), dim=0)
            r = r + weights[i] * p[k] * (tokens[i] - ec[k])
        rs.append(nrm(r))
    return nrm(torch.stack(rs).mean(0))


def ref_tab_video_tokens(sd, variant, proj, x, m):
    pos = sd["frame_position_embeddings.weight"]
    xs, ms = x[0::2], m[0::2]
    if variant == "tab":
        ys = ref_transformer(sd, "actionClip", xs + pos[: xs.shape[0]], ms)
    else:
        tokens, tmask = ref_tdb_tokens(sd, proj, xs, ms)
        ys = ref_transformer(sd, "actionClip", tokens, tmask)[0::2]
    return torch.cat([x, ys + xs]), torch.cat([m, ms])


def ref_video(model, variant, proj, frames, mask):
    """Reference embedding of one video: frames [F, 3, S, S] zero-padded as the official loader does."""
    sd = model.official_state_dict(clip_dtype=torch.float32)
    x = model.clip.encode_image(frames)
    out = [ref_global(sd, variant, proj, x, mask)]
    if variant in ("tab", "clip2video"):
        out.append(ref_aggregate(sd, *ref_tab_video_tokens(sd, variant, proj, x, mask)))
    return torch.cat(out)


def ref_text(model, variant, ids, mask):
    sd = model.official_state_dict(clip_dtype=torch.float32)
    h = model.text_hidden(ids[None])[0]
    out = [nrm(h[int(ids.argmax())])]
    if variant in ("tab", "clip2video"):
        w = mask.float().clone()
        w[0] = 0
        out.append(ref_aggregate(sd, h, w))
    return torch.cat(out)


VARIANTS = [
    ("meanp", None),
    ("seqtransf", None),
    ("tdb", "selfattn"),
    ("tdb", "mlp"),
    ("tdb", "none"),
    ("tab", None),
    ("clip2video", "selfattn"),
    ("clip2video", "mlp"),
]


# --------------------------------------------------------------------- tests
@pytest.mark.parametrize("variant,proj", VARIANTS)
def test_video_embedding_matches_models_md(variant, proj):
    options = {"tdb_proj": proj} if proj else {}
    model = tiny_model(variant, **options)
    frames, mask = tiny_video(2, 6, lengths=[6, 4], seed=1)
    with torch.no_grad():
        got = model.encode_video(frames, mask)
        for i in range(2):
            want = ref_video(model, variant, proj or "selfattn", frames[i], mask[i])
            torch.testing.assert_close(got[i], want, atol=ATOL, rtol=0)


@pytest.mark.parametrize("variant", ["meanp", "tab", "clip2video"])
def test_text_embedding_matches_models_md(variant):
    model = tiny_model(variant)
    ids, mask = tiny_text(3, 12)
    with torch.no_grad():
        got = model.encode_text(ids, mask)
        for i in range(3):
            torch.testing.assert_close(got[i], ref_text(model, variant, ids[i], mask[i]), atol=ATOL, rtol=0)


def test_text_hidden_is_clip_text_tower_with_truncated_causal_mask():
    """EOT embedding equals open_clip's own encode_text at full context, and padding to it changes nothing."""
    model = tiny_model("meanp")
    ids, mask = tiny_text(3, 12)
    full = torch.zeros(3, model.clip.context_length, dtype=torch.long)
    full[:, :12] = ids
    with torch.no_grad():
        eot = model.text_hidden(ids)[torch.arange(3), ids.argmax(-1)]
        want = model.clip.encode_text(full)
        torch.testing.assert_close(eot, want, atol=1e-5, rtol=0)
        torch.testing.assert_close(model.text_hidden(full)[:, :12], model.text_hidden(ids), atol=1e-5, rtol=0)


def test_text_aligned_weights_zero_at_sot():
    """Changing the SOT token's hidden state cannot change TAB's text embedding; other tokens do."""
    model = tiny_model("tab")
    _, mask = tiny_text(2, 10)
    hidden = torch.randn(2, 10, model.embed_dim)
    with torch.no_grad():
        base = model.tab.text(hidden, mask)
        changed = hidden.clone()
        changed[:, 0] += 5.0
        torch.testing.assert_close(model.tab.text(changed, mask), base)
        changed[:, 1] += 5.0
        assert not torch.allclose(model.tab.text(changed, mask), base)


@pytest.mark.parametrize("proj", ["selfattn", "mlp", "none"])
def test_tdb_token_order_positions_and_types(proj):
    model = tiny_model("tdb", tdb_proj=proj)
    sd = model.official_state_dict(clip_dtype=torch.float32)
    pos, typ = sd["frame_position_embeddings.weight"], sd["type_position_embeddings.weight"]
    x = torch.randn(1, 5, model.embed_dim)
    m = torch.tensor([[1, 1, 1, 0, 0]])
    with torch.no_grad():
        tokens, tmask = model.tdb.tokens(x, m, model.frame_position_embeddings.weight)
        want, want_mask = ref_tdb_tokens(sd, proj, x[0], m[0])
    assert tokens.shape == (1, 9, model.embed_dim)
    torch.testing.assert_close(tokens[0], want, atol=ATOL, rtol=0)
    assert tmask[0].tolist() == [1, 1, 1, 1, 1, 1, 0, 0, 0] == want_mask.tolist()
    # frame tokens: x_f + P[f] + type row 1, at even positions
    for f in range(5):
        torch.testing.assert_close(tokens[0, 2 * f], x[0, f] + pos[f] + typ[1])
    if proj == "none":  # raw subtraction: difference token f = x_{f+1} - x_f + P[f] + type row 0
        for f in range(4):
            torch.testing.assert_close(tokens[0, 2 * f + 1], x[0, f + 1] - x[0, f] + pos[f] + typ[0])
    else:  # projected differences lie in (-1, 1)
        d = tokens[0, 1::2] - pos[:4] - typ[0]
        assert d.abs().max() < 1


def test_interleave_order():
    frames = torch.tensor([[10, 11, 12]])
    diffs = torch.tensor([[20, 21]])
    assert interleave(frames, diffs).tolist() == [[10, 20, 11, 21, 12]]


@pytest.mark.parametrize("variant", ["tab", "clip2video"])
def test_tab_video_tokens_are_12_plus_6(variant):
    model = tiny_model(variant)
    sd = model.official_state_dict(clip_dtype=torch.float32)
    x = torch.randn(1, 12, model.embed_dim)
    m = torch.tensor([[1] * 9 + [0] * 3])
    tdb = model.tdb if variant == "clip2video" else None
    with torch.no_grad():
        tokens, weights = model.tab.video_tokens(x, m, model.frame_position_embeddings.weight, tdb)
        want, want_w = ref_tab_video_tokens(sd, variant, "selfattn", x[0], m[0])
    assert tokens.shape == (1, 18, model.embed_dim)
    torch.testing.assert_close(tokens[0, :12], x[0])
    torch.testing.assert_close(tokens[0], want, atol=ATOL, rtol=0)
    assert weights[0].tolist() == m[0].tolist() + m[0, 0::2].tolist() == want_w.tolist()


def test_tab_temporal_tokens_use_positions_0_to_5():
    """For ``tab``, temporal token j is actionClip(x_{2j} + P[j]) + x_{2j}: shifting P[6:] changes nothing."""
    model = tiny_model("tab")
    x = torch.randn(1, 12, model.embed_dim)
    m = torch.ones(1, 12, dtype=torch.long)
    pos = model.frame_position_embeddings.weight.detach().clone()
    with torch.no_grad():
        base, _ = model.tab.video_tokens(x, m, pos)
        shifted = pos.clone()
        shifted[6:] += 3.0
        torch.testing.assert_close(model.tab.video_tokens(x, m, shifted)[0], base)
        shifted[5] += 3.0
        assert not torch.allclose(model.tab.video_tokens(x, m, shifted)[0], base)


def test_tab_aggregate_formula():
    model = tiny_model("tab", center_k=3)
    sd = model.official_state_dict(clip_dtype=torch.float32)
    tokens = torch.randn(2, 7, model.embed_dim)
    weights = torch.tensor([[1, 1, 1, 0, 1, 0, 1], [0, 1, 1, 1, 1, 1, 1]], dtype=torch.float32)
    with torch.no_grad():
        got = model.tab.aggregate(tokens, weights)
    for b in range(2):
        torch.testing.assert_close(got[b], ref_aggregate(sd, tokens[b], weights[b]), atol=ATOL, rtol=0)
    torch.testing.assert_close(got.norm(dim=-1), torch.ones(2))


def test_meanp_pool_formula():
    model = tiny_model("meanp")
    x = torch.randn(2, 4, model.embed_dim)
    m = torch.tensor([[1, 1, 0, 0], [1, 1, 1, 1]])
    with torch.no_grad():
        got = model.pool_video(x, m)
    want0 = (x[0, 0] / x[0, 0].norm() + x[0, 1] / x[0, 1].norm()) / 2
    torch.testing.assert_close(got[0], want0 / want0.norm())
    torch.testing.assert_close(got[1], ref_meanp(x[1], m[1]))


def test_seqtransf_residual_formula():
    model = tiny_model("seqtransf")
    sd = model.official_state_dict(clip_dtype=torch.float32)
    x = torch.randn(1, 5, model.embed_dim)
    m = torch.tensor([[1, 1, 1, 1, 0]])
    with torch.no_grad():
        got = model.pool_video(x, m)[0]
    y = ref_transformer(sd, "transformerClip", x[0] + sd["frame_position_embeddings.weight"][:5], m[0])
    torch.testing.assert_close(got, ref_meanp(y + x[0], m[0]), atol=ATOL, rtol=0)
