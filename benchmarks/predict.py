"""Prediction throughput of the Python API (`lai_jax.Extractor`) on CoNLL04 sentences, on this machine.

    python -m benchmarks.predict --ner=runs/quick/ner --re=runs/quick/re [--sentences 1000] [--batch-size N]

The sentences are the bundled CoNLL04 test, dev and train sentences in that order (the first --sentences of
them), detokenised into plain text (`benchmarks.splitting.detokenize`), one text each, so sentence splitting
and word tokenisation are timed too. The runs are restored (timed apart), one call on the first 32 texts
compiles the batch shapes (timed apart), then one call predicts all of them. Prints one JSON line.
"""
from __future__ import annotations

import argparse
import json
import time
from typing import Optional

from benchmarks.splitting import DATA, detokenize


def conll04_texts(n: int) -> list[str]:
    """The first `n` CoNLL04 sentences (test, dev, train) as plain text."""
    sents = []
    for split in ("test", "dev", "train"):
        sents += [s["tokens"] for s in json.loads((DATA / "conll04" / f"conll04_{split}.json").read_text())]
    if n > len(sents):
        raise SystemExit(f"error: --sentences={n}: CoNLL04 has {len(sents)} sentences")
    return [detokenize([tokens])[0] for tokens in sents[:n]]


def run(ner: str, re: Optional[str], n: int, batch_size: Optional[int] = None) -> dict:
    from lai_jax import Extractor, text
    texts = conll04_texts(n)
    t0 = time.perf_counter()
    ex = Extractor.load(ner=ner, re=re, batch_size=batch_size)
    t1 = time.perf_counter()
    ex.predict(texts[:32])
    t2 = time.perf_counter()
    out = ex.predict(texts)
    t3 = time.perf_counter()
    for t in texts:
        text.split_sentences(t)
    t4 = time.perf_counter()
    sentences = sum(len(o["tokens"]) for o in out)
    return {"texts": n, "sentences": sentences, "words": sum(len(s) for o in out for s in o["tokens"]),
            "entities": sum(len(o["entities"]) for o in out),
            "relations": sum(len(o.get("relations", [])) for o in out),
            "sentences_per_s": round(sentences / (t3 - t2), 2), "predict_s": round(t3 - t2, 2),
            "splitting_s": round(t4 - t3, 3), "load_s": round(t1 - t0, 2), "first_call_s": round(t2 - t1, 2),
            "batch_size": ex.ner.setup.config.per_device_eval_batch_size, "relations_from": re or None}


def main(argv: Optional[list[str]] = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ner", required=True, help="NER workdir (e.g. runs/quick/ner)")
    p.add_argument("--re", default=None, help="RE workdir (e.g. runs/quick/re); leave out for entities only")
    p.add_argument("--sentences", type=int, default=1000)
    p.add_argument("--batch-size", type=int, default=None, help="per-device batch (default: the runs' own)")
    args = p.parse_args(argv)
    from lai_jax.cli import setup_logging
    setup_logging()
    print(json.dumps(run(args.ner, args.re, args.sentences, args.batch_size)))


if __name__ == "__main__":
    main()
