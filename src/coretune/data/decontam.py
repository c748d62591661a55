"""Decontamination: which pool rows contain text of an evaluation example.

A row overlaps an evaluation set when its prompt or target shares a word n-gram with a text
field of one of the set's examples (RTE/CB/ANLI: premise and hypothesis). Text is compared
after lower-casing and splitting into words (`\\w+`), so case, punctuation and whitespace do
not hide a copy. Long fields are matched by 13-grams (the usual choice for benchmark
decontamination); NLI hypotheses are often shorter than 13 words, so a field of 8 to 12 words
is matched by its 8-grams; a field under 8 words is too generic to match on ("A man is
sleeping.") and is left out.
"""

from __future__ import annotations

import hashlib
import io
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import numpy as np

LONG_N = 13  # n for fields of at least this many words
SHORT_N = 8  # n for fields of SHORT_N .. LONG_N - 1 words; shorter fields are not matched
_WORD = re.compile(r"\w+")


def words(text: str) -> list[str]:
    return _WORD.findall(text.lower())


def _ngrams(tokens: Sequence[str], n: int) -> Iterable[str]:
    return (" ".join(tokens[i:i + n]) for i in range(len(tokens) - n + 1))


class EvalIndex:
    """The n-grams of every evaluation example's text fields, by evaluation set."""

    def __init__(self, texts: Mapping[str, Iterable[str]]):
        self.sets = list(texts)
        self._grams: dict[int, dict[str, set[int]]] = {LONG_N: {}, SHORT_N: {}}
        for k, name in enumerate(self.sets):
            for text in texts[name]:
                tokens = words(text)
                n = LONG_N if len(tokens) >= LONG_N else SHORT_N
                if len(tokens) >= SHORT_N:
                    for g in _ngrams(tokens, n):
                        self._grams[n].setdefault(g, set()).add(k)

    @classmethod
    def of_datasets(cls, datasets: Iterable) -> EvalIndex:
        """From `coretune.data.sources.Dataset`s (shipped or a user's eval file)."""
        return cls({ds.name: [str(r[f]) for r in ds.rows() for f in ds.fields
                              if isinstance(r.get(f), str)] for ds in datasets})

    def match(self, text: str) -> set[int]:
        """Indices (into `self.sets`) of the sets `text` shares an n-gram with."""
        tokens = words(text)
        hit: set[int] = set()
        for n, grams in self._grams.items():
            for g in _ngrams(tokens, n):
                hit |= grams.get(g, set())
        return hit

    def overlaps(self, texts: Iterable[str], quiet: bool = True) -> np.ndarray:
        """bool [rows, sets]: row i shares an n-gram with set j."""
        from tqdm.auto import tqdm

        texts = list(texts)
        out = np.zeros((len(texts), len(self.sets)), dtype=bool)
        for i, text in enumerate(tqdm(texts, desc="contamination scan", unit="row",
                                      disable=quiet, mininterval=1.0)):
            out[i, list(self.match(text))] = True
        return out


def pool_overlaps(prompts: Sequence[str], targets: Sequence[str], index: EvalIndex,
                  quiet: bool = True) -> np.ndarray:
    """bool [rows, sets] for pool rows (prompt and target both count)."""
    return index.overlaps((f"{p}\n{t}" for p, t in zip(prompts, targets, strict=True)), quiet)


def summary(hits: np.ndarray, sets: Sequence[str], selected: np.ndarray | None = None) -> dict:
    """Rows overlapping each set (and any), in the pool and, given `selected` (row indices),
    in the selection: what `coretune select` prints and the quality report records."""
    out = {"n": {"long": LONG_N, "short": SHORT_N},
           "pool_rows": {s: int(hits[:, j].sum()) for j, s in enumerate(sets)}}
    out["pool_rows"]["any"] = int(hits.any(axis=1).sum())
    if selected is not None:
        sel = hits[np.asarray(selected, dtype=np.int64)]
        out["selected_rows"] = {s: int(sel[:, j].sum()) for j, s in enumerate(sets)}
        out["selected_rows"]["any"] = int(sel.any(axis=1).sum())
    return out


def pool_hits(prompts: Sequence[str], targets: Sequence[str], datasets: Sequence,
              cache: Path | None = None, quiet: bool = True) -> tuple[np.ndarray, list[str]]:
    """bool [rows, sets] of `pool_overlaps` against `datasets` (coretune.data.sources
    Datasets) and the sets' names; read from `cache` (a folder) when it holds this answer."""
    from coretune.io import sha256_file, write_bytes

    names = [ds.name for ds in datasets]
    h = hashlib.sha256(f"{LONG_N}:{SHORT_N}".encode())
    for ds in datasets:
        h.update(f"\n{ds.name}:{','.join(ds.fields)}:{sha256_file(ds.path)}".encode())
    for p, t in zip(prompts, targets, strict=True):
        h.update(b"\x1e" + p.encode("utf-8") + b"\x1f" + t.encode("utf-8"))
    path = cache / f"{h.hexdigest()[:32]}.npy" if cache is not None else None
    if path is not None and path.is_file():
        hits = np.load(path, allow_pickle=False)
        if hits.shape == (len(prompts), len(names)):
            return hits, names
    hits = pool_overlaps(prompts, targets, EvalIndex.of_datasets(datasets), quiet)
    if path is not None:
        buf = io.BytesIO()
        np.save(buf, hits, allow_pickle=False)
        write_bytes(path, buf.getvalue())
    return hits, names
