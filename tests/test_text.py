"""CaptionTokenizer: the official [SOT] + bpe[:max_words-2] + [EOT] layout on open_clip's BPE."""

from __future__ import annotations

import open_clip
import pytest
import torch
from open_clip.tokenizer import SimpleTokenizer

from clip2video.data.text import CaptionTokenizer, EmptyCaptionError

SOT, EOT = 49406, 49407


@pytest.fixture(scope="module")
def tok() -> CaptionTokenizer:
    return CaptionTokenizer(max_words=32)


def test_layout_short_caption(tok):
    ids, mask = tok(["a man is playing a guitar"])
    bpe = SimpleTokenizer().encode("a man is playing a guitar")
    n = len(bpe) + 2
    assert ids.shape == mask.shape == (1, 32) and ids.dtype == mask.dtype == torch.long
    assert ids[0, :n].tolist() == [SOT, *bpe, EOT]
    assert ids[0, n:].tolist() == [0] * (32 - n)
    assert mask[0].tolist() == [1] * n + [0] * (32 - n)
    # the EOT has the largest id: argmax finds the sentence embedding's position
    assert int(ids[0].argmax()) == n - 1


def test_long_caption_truncated_keeps_eot(tok):
    caption = " ".join(f"word{i}" for i in range(60))
    bpe = SimpleTokenizer().encode(caption)
    assert len(bpe) > 30
    ids, mask = tok([caption])
    assert ids[0].tolist() == [SOT, *bpe[:30], EOT]
    assert mask[0].tolist() == [1] * 32


def test_agrees_with_open_clip_on_short_captions(tok):
    captions = ["A dog runs on the beach.", "two people cooking pasta", "Café naïve 東京 😀 !!", "x"]
    ids, mask = tok(captions)
    reference = open_clip.tokenize(captions)  # context 77, zero padded
    for row in range(len(captions)):
        n = int(mask[row].sum())
        assert ids[row, :n].tolist() == reference[row, :n].tolist()
        assert reference[row, n:].abs().sum() == 0


def test_long_captions_differ_from_open_clip_only_by_truncation(tok):
    caption = "the quick brown fox jumps over the lazy dog " * 12
    ours = tok([caption])[0][0].tolist()
    theirs = open_clip.tokenize([caption])[0].tolist()  # 77 tokens, EOT at 76
    assert ours[:31] == theirs[:31]  # same SOT and BPE ids
    assert ours[31] == EOT and theirs[31] != EOT and theirs[76] == EOT
    # open_clip with the same context length truncates the same way
    assert open_clip.tokenize([caption], context_length=32)[0].tolist() == ours


def test_unicode_and_html_are_cleaned(tok):
    ids, _ = tok(["Caf&eacute;   NAÏVE\n\tplayer"])
    ids2, _ = tok(["café naïve player"])
    assert torch.equal(ids, ids2)
    assert tok.decode(ids[0]) == "café naïve player"


def test_exclamation_is_token_zero_not_padding(tok):
    ids, mask = tok(["wow!~"])
    n = int(mask[0].sum())
    assert 0 in ids[0, :n].tolist()  # "!" (not word-final) is id 0: the mask marks padding
    assert tok.decode(ids[0]) == "wow !~"


@pytest.mark.parametrize("caption", ["", "   ", "\n\t "])
def test_empty_caption_is_an_error_naming_its_index(tok, caption):
    with pytest.raises(EmptyCaptionError, match=r"caption 1 "):
        tok(["fine caption", caption])
    with pytest.raises(EmptyCaptionError, match=r"caption 11 "):
        tok(["fine caption", caption], start=10)


def test_empty_caption_keep_rule():
    ids, mask = CaptionTokenizer(max_words=8, empty="keep")(["  "])
    assert ids[0].tolist() == [SOT, EOT, 0, 0, 0, 0, 0, 0]
    assert mask[0].tolist() == [1, 1, 0, 0, 0, 0, 0, 0]


def test_bad_arguments():
    with pytest.raises(ValueError, match="max_words"):
        CaptionTokenizer(max_words=1)
    with pytest.raises(ValueError, match="empty"):
        CaptionTokenizer(empty="skip")
    with pytest.raises(TypeError, match="caption 0"):
        CaptionTokenizer()([None])


def test_single_string_and_max_words():
    ids, mask = CaptionTokenizer(max_words=4)("one two three four")
    bpe = SimpleTokenizer().encode("one two three four")
    assert ids.tolist() == [[SOT, bpe[0], bpe[1], EOT]]
    assert mask.tolist() == [[1, 1, 1, 1]]
