"""Data layer: tokenizer, sources, built-in corpora, shards and mixtures (DESIGN.md, issue 3).

Modules (import them directly; this package imports nothing so that ``lmforge prepare`` and
``lmforge tokenizer`` start quickly, and nothing here imports torch):

- ``tokenizer``: byte-level BPE (Hugging Face ``tokenizers``), special tokens, bytes per token;
- ``sources``: ``SourceSpec``, ``parse_source``, ``iter_documents``, ``input_fingerprint``;
- ``readers``: streaming readers for .txt, .jsonl and .parquet files, ``ReadStats``;
- ``pieces``: splitting very long documents at whitespace;
- ``builtin``: offline corpora (``builtin:pydocs``, ``builtin:markov``).
"""
