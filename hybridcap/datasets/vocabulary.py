"""Caption tokens and the vocabulary that maps them to ids.

The caption metrics tokenise with the PTB tokenizer, which lower-cases and splits punctuation
off words but keeps hyphenated words whole. ``tokenize`` does the same for the text that
hybridcap produces, so a generated caption and its references are compared token for token.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Any

# A word is a run of letters and digits, with inner hyphens allowed ("medium-sized"). As in the
# PTB tokenizer, "n't" and clitics such as "'s" are split off ("don't" -> "do", "n't"). Any other
# visible character (comma, full stop, quote) becomes a token of its own.
# NOTE: the PTB tokenizer also rewrites brackets and quotes (-LRB-, ``), which this does not do.
_WORD = r"[a-z0-9]+(?:-[a-z0-9]+)*"
_TOKEN_PATTERN = re.compile(rf"{_WORD}(?=n't)|n't|'(?:s|re|ve|ll|d|m)\b|{_WORD}|[^\sa-z0-9]")

# Punctuation that decode() attaches to the previous word instead of separating with a space.
_ATTACHED_PUNCTUATION = {",", ".", "!", "?", ";", ":"}


def tokenize(text: str) -> list[str]:
    """Lower-case ``text`` and split it into word and punctuation tokens."""
    return _TOKEN_PATTERN.findall(text.lower())


class Vocabulary:
    """The token list of the captions, with four special tokens at fixed ids.

    Ids 0 to 3 are padding, start, end and unknown; caption tokens follow, most frequent first.
    """

    PAD = "<pad>"
    START = "<start>"
    END = "<end>"
    UNKNOWN = "<unk>"
    SPECIAL_TOKENS = (PAD, START, END, UNKNOWN)

    def __init__(self, tokens: Sequence[str]) -> None:
        """Build a vocabulary from its full token list, special tokens first.

        Raises:
            ValueError: when the list does not start with the four special tokens or repeats a token.
        """
        tokens = list(tokens)
        if tuple(tokens[: len(self.SPECIAL_TOKENS)]) != self.SPECIAL_TOKENS:
            raise ValueError(f"a vocabulary must start with {list(self.SPECIAL_TOKENS)}, got {tokens[:4]}")
        if len(set(tokens)) != len(tokens):
            raise ValueError("a vocabulary must not repeat a token")
        self.tokens = tokens
        self._ids = {token: index for index, token in enumerate(tokens)}

    @classmethod
    def from_captions(cls, captions: Iterable[str]) -> Vocabulary:
        """Build the vocabulary of all tokens in ``captions``, most frequent first, ties alphabetical."""
        counts = Counter(token for caption in captions for token in tokenize(caption))
        for special in cls.SPECIAL_TOKENS:
            counts.pop(special, None)
        ordered = sorted(counts, key=lambda token: (-counts[token], token))
        return cls([*cls.SPECIAL_TOKENS, *ordered])

    @property
    def pad_id(self) -> int:
        return 0

    @property
    def start_id(self) -> int:
        return 1

    @property
    def end_id(self) -> int:
        return 2

    @property
    def unknown_id(self) -> int:
        return 3

    def __len__(self) -> int:
        return len(self.tokens)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Vocabulary) and self.tokens == other.tokens

    def token_id(self, token: str) -> int:
        """Return the id of ``token``, or the unknown id when the vocabulary lacks it."""
        return self._ids.get(token, self.unknown_id)

    def encode(self, text: str, max_length: int) -> list[int]:
        """Encode ``text`` as start, tokens, end, then padding up to ``max_length`` ids.

        Tokens that do not fit are dropped from the end, but the end id is always kept.

        Raises:
            ValueError: when ``max_length`` is below 2, the room for start and end.
        """
        if max_length < 2:
            raise ValueError(f"max_length must be at least 2 to hold the start and end tokens, got {max_length}")
        token_ids = [self.token_id(token) for token in tokenize(text)][: max_length - 2]
        ids = [self.start_id, *token_ids, self.end_id]
        return ids + [self.pad_id] * (max_length - len(ids))

    def decode(self, ids: Iterable[int]) -> str:
        """Turn ids back into text, stopping at the first end id and skipping special and out-of-range ids."""
        words: list[str] = []
        for token_id in ids:
            token_id = int(token_id)
            if token_id == self.end_id:
                break
            if token_id < len(self.SPECIAL_TOKENS) or token_id >= len(self.tokens):
                continue
            token = self.tokens[token_id]
            if token in _ATTACHED_PUNCTUATION and words:
                words[-1] += token
            else:
                words.append(token)
        return " ".join(words)

    def to_dict(self) -> dict[str, Any]:
        return {"tokens": list(self.tokens)}

    @classmethod
    def from_dict(cls, value: dict[str, Any]) -> Vocabulary:
        """Rebuild a vocabulary from ``to_dict()`` output.

        Raises:
            ValueError: when ``value`` has no token list or the list is invalid.
        """
        tokens = value.get("tokens") if isinstance(value, dict) else None
        if not isinstance(tokens, list) or not all(isinstance(token, str) for token in tokens):
            raise ValueError("a vocabulary dict needs a 'tokens' list of strings")
        return cls(tokens)
