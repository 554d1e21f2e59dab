"""The data side of a run: tokenizer, token shards and the weighted mixture.

A run directory is self-contained: the tokenizer it trained on lives in
``RUN_DIR/tokenizer.json`` (trained there from the sources, or copied from
``data.tokenizer``), and the shards default to ``RUN_DIR/data``. Preparing shards is
idempotent, so a resumed run finds them as they were (and refuses them if the inputs
changed since).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from lmforge.data.mixture import Mixture
from lmforge.data.shards import TokenStore, open_shards, prepare
from lmforge.data.sources import SourceSpec, iter_documents, parse_source
from lmforge.data.tokenizer import Tokenizer, bytes_per_token, train_tokenizer
from lmforge.errors import UserError
from lmforge.train.config import DataConfig


@dataclass
class RunData:
    tokenizer: Tokenizer
    sources: list[SourceSpec]
    store: TokenStore
    mixture: Mixture
    bytes_per_token: float | None  # on a sample of the training text, when the tokenizer was trained here


def sample_texts(sources: list[SourceSpec], max_bytes: int) -> Iterator[str]:
    """Documents from every source in turn (round robin) until ``max_bytes`` of text."""
    iterators = [iter_documents(spec) for spec in sources]
    seen = 0
    for document in itertools.chain.from_iterable(itertools.zip_longest(*iterators)):
        if document is None:
            continue
        yield document
        seen += len(document)
        if seen >= max_bytes:
            return


def setup_tokenizer(config: DataConfig, sources: list[SourceSpec], run_dir: Path) -> tuple[Tokenizer, float | None]:
    """The run's tokenizer: RUN_DIR/tokenizer.json if present (resume), else the one
    named by ``config.tokenizer`` (copied into the run), else trained on the sources."""
    here = run_dir / "tokenizer.json"
    if here.exists():
        return Tokenizer.load(here), None
    if config.tokenizer is not None:
        tokenizer = Tokenizer.load(config.tokenizer)
        tokenizer.save(here)
        return tokenizer, None
    tokenizer = train_tokenizer(sample_texts(sources, config.tokenizer_sample_bytes), config.vocab_size)
    tokenizer.save(here)
    ratio = bytes_per_token(tokenizer, sample_texts(sources, min(config.tokenizer_sample_bytes, 2_000_000)))
    return tokenizer, ratio


def setup_data(
    config: DataConfig, run_dir: Path, *, seed: int, log: Callable[[str], None] = print
) -> RunData:
    """Tokenizer, shards (prepared if needed) and the mixture for ``config``."""
    if not config.sources:
        raise UserError("no data sources", "data.sources=[]", "pass --data.sources PATH (or name=PATH:weight)")
    sources = [parse_source(arg) for arg in config.sources]
    names = [s.name for s in sources]
    if len(set(names)) != len(names):
        raise UserError("two sources share a name", ", ".join(names), "name them: --data.sources a=PATH b=PATH")
    tokenizer, ratio = setup_tokenizer(config, sources, run_dir)
    if ratio is not None:
        log(f"tokenizer: {tokenizer.vocab_size:,} tokens, {ratio:.2f} bytes per token on the training text")
    shards = Path(config.shards) if config.shards else run_dir / "data"
    prepare(sources, tokenizer, shards, val_fraction=config.val_fraction, seed=seed)
    store = open_shards(shards, tokenizer)
    weights = {spec.name: spec.weight for spec in sources}
    mixture = Mixture(store, weights, config.seq_len, seed)
    return RunData(tokenizer, sources, store, mixture, ratio)
