"""Raw text -> sentences of words with character offsets (pure Python, no models, no downloads).

Offsets are indices into the Python string (Unicode code points, not bytes or UTF-16 units), with an
exclusive end, so ``text[w.start:w.end] == w.text`` for every word.

Words (``tokenize``)
--------------------
* a run of letters, digits and combining marks, which may continue across a single internal
  apostrophe (' ’ ʼ) or hyphen (- ‐ ‑) between two letters/digits ("don't", "state-of-the-art"), a '.'
  or ',' between two digits ("3.14", "1,000"), or an invisible format character such as a soft hyphen
  or zero-width (non-)joiner between two letters/digits;
* an initialism of single letters each followed by '.', at least two of them ("U.S.", "e.g.");
* a known abbreviation or a single capital letter with its '.' ("Dr.", "Corp.", "Jan.", the initial "J.");
* English clitics split off as the Penn Treebank does, which is how the bundled training data are
  tokenised: "Kennedy's" -> "Kennedy" "'s", "don't" -> "do" "n't" (also 're 've 'll 'd 'm);
* a run of two or more hyphens ("--", a typed dash) as one word;
* each CJK ideograph on its own (as BERT's tokenizer does; Chinese/Japanese text has no spaces);
* every other character (punctuation, symbols, emoji) on its own, except that combining marks,
  variation selectors, emoji skin-tone modifiers, keycaps and zero-width-joiner sequences stay attached
  to the character before them ("👍🏽", "👨‍👩‍👧" and a flag "🇫🇷" are one word each).

Whitespace and stray control/format characters separate words and belong to none.

Sentences (``split_sentences``)
-------------------------------
A sentence ends after a terminator ('.', '!', '?', '…', or a run of them such as "?!" or "...") plus any
closing quotes/brackets attached to it, when whitespace follows and the next word starts with an
upper-case letter, a letter of a script without case (e.g. CJK), or an opening quote/bracket. The '.'
of a known abbreviation ("Dr.", "Mr.", "Inc.", "Jan.", ...) or of an initial ("J. Smith") belongs to
that word, so it never ends a sentence. The CJK terminators '。', '！', '？' end a sentence whatever
follows, and a blank line (two line breaks) always does. When in doubt the splitter does *not* split:
a missed boundary only makes a sentence longer (prediction windows long sentences anyway), while a
wrong one would cut entities and relations apart. Known misses: a sentence ending in an initialism or
an abbreviation ("... in the U.S. The ...") is not split there.

``python -m benchmarks.splitting`` measures these rules against splitting libraries from PyPI on the bundled
data's gold tokenisation (README, "Prediction on your text").
"""
from __future__ import annotations

import dataclasses
import re
import unicodedata

__all__ = ["Word", "tokenize", "split_sentences"]


@dataclasses.dataclass(frozen=True)
class Word:
    text: str
    start: int  # character offset of the first character
    end: int  # exclusive: source[start:end] == text


# Character kinds.
_SPACE, _WORD, _CJK, _ATTACH, _ZWJ, _FORMAT, _OTHER = range(7)

_APOSTROPHES = "'\u2019\u02bc"
_HYPHENS = "-\u2010\u2011"
_ZWJ_CHAR = "\u200d"
# Zero-width characters that separate rather than join (zero-width space, word joiner, BOM).
_INVISIBLE_SPACES = "\u200b\u2060\ufeff"
_TERMINATORS = {".", "!", "?", "\u2026", "\u203c", "\u2047", "\u2048", "\u2049"}
_CJK_TERMINATORS = {"\u3002", "\uff01", "\uff1f", "\uff61"}  # 。！？｡
_CLOSERS = set("\"')]}\u2019\u201d\u00bb\u203a\u300d\u300f\u3011\uff09")
_OPENERS = set("\"'([{\u2018\u201c\u00ab\u2039\u300c\u300e\u3010\uff08\u00bf\u00a1")
_INITIALISM = re.compile(r"(?:[^\W\d_]\.){2,}")
_ABBREVIATIONS = frozenset("""
    mr mrs ms dr prof sr jr st mt ft rev gen col lt sgt capt cmdr adm gov sen rep pres supt insp
    messrs mme mlle hon vs etc inc ltd co corp bros dept univ assn est approx no nos vol fig figs eq
    eqs ch sec art pp al ca cf op jan feb mar apr jun jul aug sep sept oct nov dec
""".split())


def _is_cjk_ideograph(cp: int) -> bool:
    # The ranges BERT's BasicTokenizer splits character by character.
    return (0x4E00 <= cp <= 0x9FFF or 0x3400 <= cp <= 0x4DBF or 0x20000 <= cp <= 0x2A6DF
            or 0x2A700 <= cp <= 0x2CEAF or 0xF900 <= cp <= 0xFAFF or 0x2F800 <= cp <= 0x2FA1F)


def _kind(ch: str) -> int:
    if ch.isspace() or ch in _INVISIBLE_SPACES:
        return _SPACE
    if ch == _ZWJ_CHAR:
        return _ZWJ
    cp = ord(ch)
    if 0x1F3FB <= cp <= 0x1F3FF or 0xE0020 <= cp <= 0xE007F:  # skin tones, emoji tag sequences
        return _ATTACH
    cat = unicodedata.category(ch)
    if cat[0] == "M":  # combining marks, variation selectors, enclosing keycap
        return _ATTACH
    if cat[0] in "LN":
        return _CJK if _is_cjk_ideograph(cp) else _WORD
    if cat in ("Cf", "Cc"):
        return _FORMAT
    return _OTHER


def _is_regional_indicator(ch: str) -> bool:
    return 0x1F1E6 <= ord(ch) <= 0x1F1FF


def tokenize(text: str) -> list[Word]:
    """Words of ``text`` with their character offsets (see the module docstring for the rules)."""
    words: list[Word] = []
    n = len(text)
    i = 0

    def kind_at(j: int) -> int:
        return _kind(text[j]) if j < n else _SPACE

    while i < n:
        ch = text[i]
        k = _kind(ch)
        if k == _SPACE:
            i += 1
            continue
        prev_adjacent = bool(words) and words[-1].end == i
        if k == _ATTACH and prev_adjacent:
            j = i + 1
        elif k == _ZWJ and prev_adjacent:
            # Joins the previous word and the next character (emoji ZWJ sequences).
            j = i + 1
            if j < n and kind_at(j) not in (_SPACE, _FORMAT):
                j += 1
        elif k == _FORMAT or k == _ZWJ:
            i += 1  # stray control/format character: belongs to no word
            continue
        elif _is_regional_indicator(ch) and prev_adjacent and len(words[-1].text) == 1 \
                and _is_regional_indicator(words[-1].text):
            j = i + 1  # second half of a flag
        else:
            j = None
        if j is not None:
            last = words[-1]
            words[-1] = Word(text[last.start:j], last.start, j)
            i = j
            continue
        if k == _WORD:
            m = _INITIALISM.match(text, i)
            if m and kind_at(m.end()) != _WORD:
                words.append(Word(m.group(), i, m.end()))
                i = m.end()
                continue
            j = i + 1
            while j < n:
                kj = _kind(text[j])
                if kj in (_WORD, _ATTACH):
                    j += 1
                    continue
                nxt = kind_at(j + 1)
                c = text[j]
                if nxt == _WORD and (c in _APOSTROPHES or c in _HYPHENS or kj == _FORMAT or kj == _ZWJ):
                    j += 2
                    continue
                if c in ".," and text[j - 1].isdigit() and j + 1 < n and text[j + 1].isdigit():
                    j += 2
                    continue
                break
            if j < n and text[j] == "." and (j + 1 >= n or text[j + 1] != ".") and _is_abbreviation(text[i:j]):
                j += 1  # "Dr." (but "etc..." keeps its ellipsis apart)
            words.extend(_split_clitic(text, i, j))
            i = j
            continue
        if ch in _HYPHENS and i + 1 < n and text[i + 1] in _HYPHENS:
            j = i + 1
            while j < n and text[j] in _HYPHENS:
                j += 1
            words.append(Word(text[i:j], i, j))  # "--": a dash typed as hyphens
            i = j
            continue
        # CJK ideograph, punctuation, symbol, emoji, a lone mark: one character (marks attach next round).
        words.append(Word(ch, i, i + 1))
        i += 1
    return words


def _starts_sentence(word: Word) -> bool:
    c = word.text[0]
    if c in _OPENERS:
        return True
    if c.isalpha():
        return c.isupper() or c.istitle() or c.lower() == c.upper()  # upper case, or a script without case
    return False


def _is_abbreviation(t: str) -> bool:
    """A word whose following '.' marks an abbreviation: a known one, or an initial ("J. Smith")."""
    if t.lower() in _ABBREVIATIONS:
        return True
    return len(t) == 1 and t.isalpha() and t.isupper()


_CLITICS = ("s", "re", "ve", "ll", "d", "m")


def _split_clitic(text: str, i: int, j: int) -> list[Word]:
    """The word text[i:j], or its stem and English clitic as two words ("Kennedy" "'s", "do" "n't")."""
    t = text[i:j]
    low = t.lower()
    cut = None
    if len(t) > 3 and low[-3:-2] == "n" and low[-2] in _APOSTROPHES and low[-1] == "t" and low[-4].isalpha():
        cut = j - 3
    else:
        for c in _CLITICS:
            k = len(t) - len(c) - 1
            if k > 0 and low.endswith(c) and t[k] in _APOSTROPHES and t[k - 1].isalnum():
                cut = i + k
                break
    if cut is None:
        return [Word(t, i, j)]
    return [Word(text[i:cut], i, cut), Word(text[cut:j], cut, j)]


def split_sentences(text: str, words: list[Word] | None = None) -> list[list[Word]]:
    """``text`` as sentences of words (see the module docstring); no sentence is empty."""
    words = tokenize(text) if words is None else words
    sentences: list[list[Word]] = []
    current: list[Word] = []
    n = len(words)
    i = 0
    while i < n:
        w = words[i]
        current.append(w)
        i += 1
        if i < n and "\n\n" in text[w.end:words[i].start].replace("\r", "").replace(" ", "").replace("\t", ""):
            sentences.append(current)
            current = []
            continue
        if w.text in _CJK_TERMINATORS or w.text in _TERMINATORS:
            # The whole run of adjacent terminators, then attached closing quotes/brackets.
            first = len(current) - 1
            while i < n and words[i].start == words[i - 1].end and (
                    words[i].text in _TERMINATORS or words[i].text in _CJK_TERMINATORS):
                current.append(words[i])
                i += 1
            run = current[first:]
            while i < n and words[i].start == words[i - 1].end and words[i].text in _CLOSERS:
                current.append(words[i])
                i += 1
            if i >= n:
                break
            if any(t.text in _CJK_TERMINATORS for t in run):
                split = True
            else:
                gap = text[current[-1].end:words[i].start]
                split = bool(gap) and gap.isspace() and _starts_sentence(words[i])
            if split:
                sentences.append(current)
                current = []
    if current:
        sentences.append(current)
    return sentences

