"""CLIP's byte-pair tokenizer with the official CLIP2Video input layout.

``ids = [SOT] + bpe[:max_words - 2] + [EOT]``, zero padded to ``max_words``; the mask is 1 on
real tokens. The BPE (vocabulary, cleaning: ftfy, html unescape, whitespace, lower case) is
open_clip's ``SimpleTokenizer``, which ships its vocabulary and works offline.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache
from typing import Any

import torch

from clip2video.errors import Clip2VideoError
from clip2video.settings import TextSettings

EMPTY_POLICIES = ("error", "keep")


class EmptyCaptionError(Clip2VideoError, ValueError):
    """A caption has no token left after cleaning (empty, whitespace only)."""


class CaptionTokenizer:
    """Tokenize captions into ``(ids LongTensor[N, max_words], mask LongTensor[N, max_words])``.

    ``empty``: what a caption with no BPE token after cleaning becomes. ``"error"`` (default)
    raises EmptyCaptionError naming the caption's index, since an empty caption in an annotation
    file is a data bug; ``"keep"`` encodes it as ``[SOT, EOT]``, as the official loader silently
    does.
    """

    def __init__(self, max_words: int = 32, empty: str = "error") -> None:
        if max_words < 2:
            raise ValueError(f"max_words must be >= 2 (SOT and EOT), got {max_words}")
        if empty not in EMPTY_POLICIES:
            raise ValueError(f"empty must be one of {EMPTY_POLICIES}, got {empty!r}")
        from open_clip.tokenizer import SimpleTokenizer

        self.max_words = max_words
        self.empty = empty
        self._bpe = SimpleTokenizer()
        self.sot_id: int = self._bpe.encoder["<start_of_text>"]
        self.eot_id: int = self._bpe.encoder["<end_of_text>"]

    @classmethod
    def from_settings(cls, text: TextSettings) -> CaptionTokenizer:
        """The tokenizer a suite's ``[text]`` section describes: the one place a tokenizer is built
        from settings. One instance per ``max_words`` and process (its BPE vocabulary takes ~0.4 s
        to build; encoding keeps no state between calls)."""
        return _shared_tokenizer(int(text.max_words))

    @classmethod
    def for_protocol(cls, protocol: Any) -> CaptionTokenizer:
        """The tokenizer of a suite on ``protocol`` that sets no ``[text] max_words``."""
        from clip2video.data.protocols import get_protocol

        return cls.from_settings(TextSettings.from_dict(get_protocol(protocol).settings()["text"]))

    @property
    def vocab_size(self) -> int:
        return len(self._bpe.encoder)

    def bpe(self, caption: str) -> list[int]:
        """BPE ids of a cleaned caption, without SOT/EOT and untruncated."""
        return self._bpe.encode(caption)

    def encode(self, caption: str, index: int = 0) -> list[int]:
        """``[SOT] + bpe[:max_words - 2] + [EOT]`` (unpadded); ``index`` names the caption in errors."""
        if not isinstance(caption, str):
            raise TypeError(f"caption {index} is {type(caption).__name__}, not str: {caption!r}")
        tokens = self.bpe(caption)
        if not tokens and self.empty == "error":
            raise EmptyCaptionError(
                f"caption {index} ({caption!r}) has no token after cleaning; fix the annotation or "
                f"use CaptionTokenizer(empty='keep') to encode it as [SOT, EOT] like the official code"
            )
        return [self.sot_id, *tokens[: self.max_words - 2], self.eot_id]

    def __call__(self, captions: str | Sequence[str], start: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
        """Ids and mask, ``[N, max_words]`` each; ``start`` offsets the indices named in errors."""
        if isinstance(captions, str):
            captions = [captions]
        ids = torch.zeros(len(captions), self.max_words, dtype=torch.long)
        mask = torch.zeros(len(captions), self.max_words, dtype=torch.long)
        for row, caption in enumerate(captions):
            tokens = self.encode(caption, start + row)
            ids[row, : len(tokens)] = torch.tensor(tokens, dtype=torch.long)
            mask[row, : len(tokens)] = 1
        return ids, mask

    def decode(self, ids: Sequence[int]) -> str:
        """Text of a row of ids: the tokens between SOT and the first EOT (id 0 is "!", not padding)."""
        row = [int(i) for i in ids]
        if row and row[0] == self.sot_id:
            row = row[1:]
        if self.eot_id in row:
            row = row[: row.index(self.eot_id)]
        return self._bpe.decode(row).strip()


@lru_cache(maxsize=8)
def _shared_tokenizer(max_words: int) -> CaptionTokenizer:
    return CaptionTokenizer(max_words=max_words)
