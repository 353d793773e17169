"""Print the end-to-end scores of a NER -> RE chain (`launch/ner_re.sh`): python -m lai_jax.summary runs/quick"""
from __future__ import annotations

import json
import sys
from pathlib import Path


def summarize(out: str | Path) -> str:
    """One line per split: NER from the NER run, RE and RE+ (end to end) from the RE run, micro and macro F1."""
    out = Path(out)
    ner = json.loads((out / "ner" / "results.json").read_text())
    rel = json.loads((out / "re" / "results.json").read_text())
    wall = ner.get("wall_s", 0) + rel.get("wall_s", 0)
    lines = [f"{ner['dataset']} end to end ({out}): F1 % micro (macro); training + evaluation {wall / 60:.1f} min"]
    for split in ("dev", "test"):
        cells = [f"{name} {100 * r[t]['micro']['f1']:.2f} ({100 * r[t]['macro']['f1']:.2f})"
                 for name, r, t in (("NER", ner[split], "ner"), ("RE", rel[split], "re"), ("RE+", rel[split], "re+"))]
        lines.append(f"  {split:<5} " + "   ".join(cells))
    return "\n".join(lines)


def main(argv: list[str]) -> None:
    if len(argv) != 2 or argv[1] in ("-h", "--help"):
        print(__doc__)
        raise SystemExit(0 if len(argv) == 2 else 2)
    print(summarize(argv[1]))


if __name__ == "__main__":
    main(sys.argv)
