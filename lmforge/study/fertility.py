"""The three tokenizers of a domain study and how many bytes each makes per token.

BloombergGPT (Wu et al. 2023, Sec. 2.3) trained one tokenizer on its mixed corpus for
both halves. A domain study trains three, on the general text, on the domain text and
on their mix (half from each), all with the same vocabulary size, and measures each on
held-out text of both kinds: more bytes per token is a more compressive vocabulary for
that text (the "fertility" of Rust et al. 2021 inverted). The arms use one of them
(``--tokenizer``, default the mix's).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable
from pathlib import Path

from lmforge.data.sources import SourceSpec
from lmforge.data.tokenizer import Tokenizer, bytes_per_token, train_tokenizer
from lmforge.train.data_setup import sample_texts

TOKENIZERS = ("general", "domain", "mix")
SAMPLE_BYTES = 20_000_000  # text each tokenizer is trained on, at most


def training_texts(kind: str, domain: SourceSpec, general: SourceSpec, max_bytes: int = SAMPLE_BYTES) -> Iterable[str]:
    if kind == "general":
        return sample_texts([general], max_bytes)
    if kind == "domain":
        return sample_texts([domain], max_bytes)
    return itertools.chain(sample_texts([domain], max_bytes // 2), sample_texts([general], max_bytes // 2))


def study_tokenizers(directory: Path, domain: SourceSpec, general: SourceSpec, vocab_size: int,
                     log: Callable[[str], None]) -> dict[str, Tokenizer]:
    """kind -> tokenizer, each trained once into ``directory/KIND.json`` (read back after)."""
    directory.mkdir(parents=True, exist_ok=True)
    out = {}
    for kind in TOKENIZERS:
        path = directory / f"{kind}.json"
        if path.is_file():
            out[kind] = Tokenizer.load(path)
            continue
        tokenizer = train_tokenizer(training_texts(kind, domain, general), vocab_size)
        tokenizer.save(path)
        log(f"tokenizer {kind}: {tokenizer.vocab_size:,} tokens")
        out[kind] = tokenizer
    return out


def fertility(tokenizers: dict[str, Tokenizer], texts: dict[str, list[str]]) -> dict[str, dict[str, float]]:
    """tokenizer kind -> {text name -> UTF-8 bytes per token}."""
    return {kind: {name: bytes_per_token(tok, docs) for name, docs in texts.items()}
            for kind, tok in tokenizers.items()}
