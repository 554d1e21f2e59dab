"""The tokenizer files of a Hugging Face directory, and lmforge's tokenizer from one.

``tokenizer.json`` is lmforge's own file (the ``tokenizers`` library wrote it; transformers'
``PreTrainedTokenizerFast`` reads it unchanged); ``tokenizer_config.json`` names the class
and the special tokens (bos, eos, pad, mask: those lmforge's tokenizer has) and the
longest input (``model_max_length`` = the model's context); ``special_tokens_map.json``
repeats the special tokens for older transformers.
"""

from __future__ import annotations

from lmforge.data.tokenizer import Tokenizer


def special_tokens(tokenizer: Tokenizer) -> dict[str, str]:
    """role -> token text, for the roles lmforge's tokenizer fills."""
    roles = {"bos_token": tokenizer.bos_id, "eos_token": tokenizer.eos_id, "pad_token": tokenizer.pad_id,
             "mask_token": tokenizer.mask_id}
    return {role: tokenizer.id_to_token(tid) for role, tid in roles.items() if tid is not None}


def tokenizer_config(tokenizer: Tokenizer, context: int) -> dict:
    return {
        "tokenizer_class": "PreTrainedTokenizerFast",
        **special_tokens(tokenizer),
        "model_max_length": context,
        "clean_up_tokenization_spaces": False,
        "add_bos_token": False,
        "add_eos_token": False,
    }
