"""Sentence and word splitting of raw text: lai_jax.text's rules against splitting libraries from PyPI.

    python -m benchmarks.splitting [--paragraph 5] [--json]

The test set is built from the bundled data's gold tokenisation: each dataset's test sentences are
detokenised (PTB escapes undone, no space before closing punctuation or after opening brackets) and joined
into paragraphs: SciERC's documents as they are (abstracts), CoNLL04's and ADE's consecutive sentences
`--paragraph` at a time. Every gold token and sentence keeps its character span, so

* sentence boundaries: precision / recall / F1 of the predicted sentence starts inside a paragraph
  (offset 0 excluded) against the gold ones;
* words: F1 of the predicted word spans against the gold token spans, each tokenizer run on each gold
  sentence's text alone (so its score does not depend on the sentence splitter).

Libraries (all run offline; those not installed are skipped): pysbd, syntok, sentencex, nltk (Punkt without
trained parameters, since its data needs a download, and the Treebank word tokenizer, which needs none).
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Callable, Iterable, Optional

from lai_jax import text as text_lib

DATA = Path(__file__).resolve().parents[1] / "data"
PTB = {"-LRB-": "(", "-RRB-": ")", "-LSB-": "[", "-RSB-": "]", "-LCB-": "{", "-RCB-": "}", "``": '"', "''": '"'}
NO_SPACE_BEFORE = {",", ".", ";", ":", "!", "?", ")", "]", "}", "%", "'s", "n't", "'re", "'ve", "'ll", "'d", "'m",
                   "''", "'"}
NO_SPACE_AFTER = {"(", "[", "{", "$", "``", "`"}

Span = tuple[int, int]


def _merge_quotes(tokens: list[str]) -> list[str]:
    """CoNLL04 writes the quotes `` and '' as two tokens each: one token, as in PTB (then shown as '"')."""
    out: list[str] = []
    for tok in tokens:
        if out and tok in "`'" and out[-1] == tok:
            out[-1] = tok * 2
        else:
            out.append(tok)
    return out


def detokenize(sentences: list[list[str]]) -> tuple[str, list[list[Span]]]:
    """Paragraph text of tokenised sentences and each token's character span in it."""
    text, spans = "", []
    prev = None
    for sent in map(_merge_quotes, sentences):
        out = []
        for raw in sent:
            tok = PTB.get(raw, raw)
            glue = prev is None or raw in NO_SPACE_BEFORE or prev in NO_SPACE_AFTER or \
                (raw == "-" or prev == "-") and text[-1:].isalnum()
            if text and not glue:
                text += " "
            out.append((len(text), len(text) + len(tok)))
            text += tok
            prev = raw
        spans.append(out)
        prev = "."  # always a space between sentences
    return text, spans


def _chunks(items: list, n: int) -> Iterable[list]:
    for i in range(0, len(items), n):
        yield items[i:i + n]


def test_set(paragraph: int) -> dict[str, list[tuple[str, list[list[Span]]]]]:
    """{dataset: [(paragraph text, gold token spans per sentence)]} from the bundled test splits."""
    out: dict[str, list] = {}
    scierc = [json.loads(line)["sentences"] for line in (DATA / "scierc" / "test.json").read_text().splitlines()
              if line.strip()]
    out["scierc"] = [detokenize(doc) for doc in scierc]
    for name, path in (("conll04", DATA / "conll04" / "conll04_test.json"),
                       ("ade", DATA / "ade" / "ade_split_0_test.json")):
        sents = [s["tokens"] for s in json.loads(path.read_text())]
        out[name] = [detokenize(chunk) for chunk in _chunks(sents, paragraph)]
    return out


# ------------------------------------------------------------------------------------------- splitters
def _lai_sentences(text: str) -> list[Span]:
    return [(s[0].start, s[-1].end) for s in text_lib.split_sentences(text)]


def _lai_words(text: str) -> list[Span]:
    return [(w.start, w.end) for w in text_lib.tokenize(text)]


def _strip(text: str, spans: Iterable[Span]) -> list[Span]:
    """Spans without their surrounding whitespace, empty ones dropped."""
    out = []
    for a, b in spans:
        while a < b and text[a].isspace():
            a += 1
        while b > a and text[b - 1].isspace():
            b -= 1
        if b > a:
            out.append((a, b))
    return out


def _by_search(text: str, pieces: Iterable[str]) -> list[Span]:
    """Spans of `pieces` found in order in `text` (for libraries that return strings, not offsets)."""
    out, pos = [], 0
    for p in pieces:
        p = p.strip()
        if not p:
            continue
        i = text.find(p, pos)
        if i < 0:
            raise ValueError(f"piece {p[:40]!r} not found in the text")
        out.append((i, i + len(p)))
        pos = i + len(p)
    return out


def sentence_splitters() -> dict[str, Callable[[str], list[Span]]]:
    out: dict[str, Callable[[str], list[Span]]] = {"lai_jax.text": _lai_sentences}
    try:
        import pysbd
        seg = pysbd.Segmenter(language="en", clean=False, char_span=True)
        out["pysbd"] = lambda t: _strip(t, [(s.start, s.end) for s in seg.segment(t)])
    except ImportError:
        pass
    try:
        from syntok import segmenter

        def _syntok(t: str) -> list[Span]:
            sents = [s for para in segmenter.analyze(t) for s in para]
            return [(s[0].offset, s[-1].offset + len(s[-1].value)) for s in sents if s]
        out["syntok"] = _syntok
    except ImportError:
        pass
    try:
        import sentencex
        out["sentencex"] = lambda t: _by_search(t, sentencex.segment("en", t))
    except ImportError:
        pass
    try:
        from nltk.tokenize.punkt import PunktSentenceTokenizer
        punkt = PunktSentenceTokenizer()
        out["nltk punkt (untrained)"] = lambda t: list(punkt.span_tokenize(t))
    except ImportError:
        pass
    return out


def word_tokenizers() -> dict[str, Callable[[str], list[Span]]]:
    out: dict[str, Callable[[str], list[Span]]] = {"lai_jax.text": _lai_words}
    try:
        from syntok.tokenizer import Tokenizer
        tok = Tokenizer()
        out["syntok"] = lambda t: [(w.offset, w.offset + len(w.value)) for w in tok.tokenize(t)]
    except ImportError:
        pass
    try:
        from nltk.tokenize import TreebankWordTokenizer
        tb = TreebankWordTokenizer()
        out["nltk treebank"] = lambda t: list(tb.span_tokenize(t))
    except ImportError:
        pass
    return out


# ---------------------------------------------------------------------------------------------- scoring
def prf(gold: set, pred: set) -> dict[str, float]:
    hit = len(gold & pred)
    p = hit / len(pred) if pred else 1.0
    r = hit / len(gold) if gold else 1.0
    return {"p": p, "r": r, "f1": 2 * p * r / (p + r) if p + r else 0.0}


def score_sentences(split: Callable[[str], list[Span]], paragraphs) -> dict[str, float]:
    gold, pred = set(), set()
    t0 = time.perf_counter()
    for k, (text, sents) in enumerate(paragraphs):
        gold |= {(k, s[0][0]) for s in sents[1:]}
        pred |= {(k, a) for a, _ in split(text)[1:]}
    return {**prf(gold, pred), "seconds": time.perf_counter() - t0}


def score_words(tokenize: Callable[[str], list[Span]], paragraphs) -> dict[str, float]:
    gold, pred = set(), set()
    t0 = time.perf_counter()
    for k, (text, sents) in enumerate(paragraphs):
        for toks in sents:
            lo, hi = toks[0][0], toks[-1][1]
            gold |= {(k, a, b) for a, b in toks}
            pred |= {(k, lo + a, lo + b) for a, b in tokenize(text[lo:hi])}
    return {**prf(gold, pred), "seconds": time.perf_counter() - t0}


def run(paragraph: int = 5) -> dict:
    """Scores of every available splitter and tokenizer on every dataset, and pooled over them ("all")."""
    sets = test_set(paragraph)
    sets["all"] = [p for name in list(sets) for p in sets[name]]
    return {"sentences": {name: {d: score_sentences(f, ps) for d, ps in sets.items()}
                          for name, f in sentence_splitters().items()},
            "words": {name: {d: score_words(f, ps) for d, ps in sets.items()}
                      for name, f in word_tokenizers().items()},
            "sizes": {d: {"paragraphs": len(ps), "sentences": sum(len(s) for _, s in ps),
                          "tokens": sum(len(t) for _, s in ps for t in s)} for d, ps in sets.items()}}


def format_table(results: dict) -> str:
    datasets = list(results["sizes"])
    lines = [f"test set: " + ", ".join(f"{d} {v['paragraphs']} paragraphs / {v['sentences']} sentences / "
                                       f"{v['tokens']} tokens" for d, v in results["sizes"].items())]
    for kind in ("sentences", "words"):
        head = f"{kind + ' F1 %':<26}" + "".join(f"{d:>10}" for d in datasets) + f"{'P all':>8}{'R all':>8}{'s':>7}"
        lines += ["", head, "-" * len(head)]
        for name, by_set in results[kind].items():
            a = by_set["all"]
            lines.append(f"{name:<26}" + "".join(f"{100 * by_set[d]['f1']:10.2f}" for d in datasets)
                         + f"{100 * a['p']:8.2f}{100 * a['r']:8.2f}{a['seconds']:7.2f}")
    return "\n".join(lines)


def main(argv: Optional[list[str]] = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--paragraph", type=int, default=5, help="CoNLL04 / ADE sentences per paragraph")
    p.add_argument("--json", action="store_true", help="print the scores as JSON instead of tables")
    args = p.parse_args(argv)
    results = run(args.paragraph)
    print(json.dumps(results, indent=2) if args.json else format_table(results))


if __name__ == "__main__":
    main()
