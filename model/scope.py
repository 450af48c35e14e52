"""Text that no intent can answer, told apart before the model's confidence is read.

The intent model is trained on English inquiries. Three kinds of input can make it confident for no reason:
- text with no words at all ("???", "👍", "1234", zero-width characters): ``no_words``;
- text in a script it has never read (Chinese, Cyrillic, Arabic, ...), which the tokenizer turns into unknown
  or single-character pieces: ``unsupported_script``;
- text most of whose words are not English words that the model's tokenizer knows, whole or as a stem plus
  one ending ("quiero cancelar mi pedido", "hfjdksla fjdksl"): ``unrecognised_words``.
They are recognised from the characters and the tokenizer's vocabulary alone, and go to a person whatever the
model says. Everything else is left to the model's calibrated confidence (the policy's abstain threshold).

On the vendored Bitext inquiries (about 15,000) the rules mark 5 texts, all terse with a typo in the key word
("updating Premium acount"); on the same inquiries with added typos and noise, 0.3%.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable
from functools import lru_cache
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

NO_WORDS = "no_words"
UNSUPPORTED_SCRIPT = "unsupported_script"
UNRECOGNISED_WORDS = "unrecognised_words"
#: fewer letters than this is no request (a lone "k", "?", an emoji)
MIN_LETTERS = 2
#: the vocabulary rule needs this many words; a lone word ("refund") is left to the model
MIN_WORDS = 2
#: a text needs at least this share of recognised words
MIN_KNOWN_SHARE = 0.5
_WORD = re.compile(r"[^\W\d_]+")


def _latin(char: str) -> bool:
    return "LATIN" in unicodedata.name(char, "")


class ScopeGate:
    """The rules above; ``tokenize`` (a word -> its word pieces) and ``vocabulary`` come from the intent model's
    tokenizer. Without them only the first two rules apply."""

    def __init__(self, vocabulary: frozenset[str] = frozenset(), tokenize: Callable[[str], list[str]] | None = None):
        self.vocabulary = vocabulary
        self._tokenize = tokenize
        self._known = lru_cache(maxsize=65536)(self._known_uncached)

    @classmethod
    def for_tokenizer(cls, tokenizer: PreTrainedTokenizerBase) -> ScopeGate:
        """A gate reading an uncased WordPiece-style vocabulary (other tokenizers get the first two rules)."""
        try:
            vocab = tokenizer.get_vocab()
        except Exception:
            return cls()
        words = frozenset(w for w in vocab if w.isalpha() and w.islower())
        if len(words) < 1000 or not getattr(tokenizer, "do_lower_case", True):
            return cls()
        return cls(words, tokenizer.tokenize)

    def _known_uncached(self, word: str) -> bool:
        if word in self.vocabulary:
            return True
        pieces = self._tokenize(word) if self._tokenize is not None else []
        # a stem the vocabulary has plus one ending ("cancel" + "##ling"); foreign and made-up words fall apart
        return 0 < len(pieces) <= 2 and len(pieces[0]) >= 4

    def reason(self, text: str) -> str | None:
        """Why ``text`` is out of scope for an English intent model, or None when the model should decide."""
        letters = [c for c in text if c.isalpha()]
        if len(letters) < MIN_LETTERS:
            return NO_WORDS
        if sum(map(_latin, letters)) * 2 < len(letters):
            return UNSUPPORTED_SCRIPT
        if self.vocabulary:
            words = _WORD.findall(text.lower())
            if len(words) >= MIN_WORDS and sum(map(self._known, words)) < MIN_KNOWN_SHARE * len(words):
                return UNRECOGNISED_WORDS
        return None


def out_of_scope_reason(text: str) -> str | None:
    """The character rules only (no vocabulary): ``no_words`` or ``unsupported_script``."""
    return _PLAIN.reason(text)


_PLAIN = ScopeGate()
