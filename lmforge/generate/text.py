"""Text above the token-only decoding loop: incremental detokenization, stop strings on a
rolling tail, and streaming.

The decoding loops of `lmforge.generate.engine` draw token ids and hand each to its
output's `TextOutput`, which turns ids into text as they come. The work per token is
bounded by the few tokens decoded and the longest stop string, never by the length of
the output: decoding the whole output again at every token (what the engine once did)
costs O(n^2) over n new tokens.

Incremental detokenization (`IncrementalDecoder`) is the two-offset scheme of Hugging Face
text-generation-inference and vLLM (``detokenize_incrementally``): the text of
``ids[:read]`` is committed; each new id decodes the short window ``ids[prefix:]`` and
drops the text of ``ids[prefix:read]`` from its front, so a decoder that treats a
sequence's first token specially (SentencePiece's leading space) sees the same context
both times. The new text is committed when it does not end in U+FFFD: a character whose
UTF-8 bytes are split across tokens waits for its last byte. Committed text plus the
pending tail equals ``tokenizer.decode(ids)`` at every step for byte-level vocabularies
(lmforge's, GPT-2's) and Metaspace ones (tests/generate/test_text.py, on every prefix of
multi-byte text and of random ids). A byte-fallback decoder (Llama's SentencePiece) turns
an unfinished run of byte tokens into one U+FFFD per byte when it decodes it whole, so
there the two agree once the character is complete.

Stop strings: an output stops at the first occurrence of any stop string in its text;
``text`` ends right before it and ``ids``/``logprobs`` keep the tokens whose text lies
wholly before it. Only the committed text's last ``longest stop - 1`` characters and the
text new at this token are searched: an occurrence that ended earlier was found earlier.
Streaming sends the text once it is safe: not a trailing incomplete character, and not a
suffix that may yet grow into a stop string.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

REPLACEMENT = "\ufffd"  # what a decoder writes for bytes that are not (yet) a whole UTF-8 character

OnToken = Callable[[int, str], None]  # (row, new text piece); row = prompt index * num_samples + sample index


@dataclass
class GenerationResult:
    """One output: ``prompt`` and its ``prompt_ids``; the new ``ids``, their ``text`` and
    per-token ``logprobs`` (under the filtered distribution); ``finish_reason`` "length",
    "context" (the model's context filled first), "eos" or "stop"; ``sample`` k (drawn with seed + k,
    or the k-th best beam); ``score`` the beam's length-normalized log-probability (None when sampled)."""

    prompt: str
    prompt_ids: list[int]
    ids: list[int] = field(default_factory=list)
    text: str = ""
    logprobs: list[float] = field(default_factory=list)
    finish_reason: str = "length"
    sample: int = 0
    score: float | None = None

    def to_dict(self) -> dict:
        return {"prompt": self.prompt, "sample": self.sample, "ids": self.ids, "text": self.text,
                "logprobs": self.logprobs, "finish_reason": self.finish_reason, "score": self.score}


class IncrementalDecoder:
    """Token ids in, text out, one id at a time (see the module docstring).

    ``push(id)`` returns the text that id commits ("" while a character is incomplete);
    ``pending`` is the decoded text not committed yet (it may end in U+FFFD);
    ``"".join(all pushes) + pending == tokenizer.decode(ids)``.
    """

    def __init__(self, decode: Callable[[list[int]], str]):
        self.decode = decode
        self.ids: list[int] = []
        self.prefix = self.read = 0  # ids[prefix:read]: context decoded again with each new id
        self.prefix_text = ""  # decode(ids[prefix:read])
        self.pending = ""

    def push(self, token: int) -> str:
        self.ids.append(token)
        new = self.decode(self.ids[self.prefix:])[len(self.prefix_text):]
        if not new or new.endswith(REPLACEMENT):
            self.pending = new
            return ""
        self.prefix, self.read = self.read, len(self.ids)
        self.prefix_text = self.decode(self.ids[self.prefix:self.read])
        self.pending = ""
        return new


class TextOutput:
    """The text state of one output: its decoder, stop-string search and streamed prefix.
    The decoding loops call `add` with each drawn token and read `done`."""

    def __init__(self, result: GenerationResult, row: int, tokenizer, stop: list[str], on_token: OnToken | None):
        self.result, self.row, self.tokenizer, self.stop, self.on_token = result, row, tokenizer, stop, on_token
        self.decoder = IncrementalDecoder(tokenizer.decode)
        self.keep = max((len(s) for s in stop), default=1) - 1  # committed characters a stop string can reach back
        self.pieces: list[str] = []  # committed text, in pieces
        self.committed = 0  # its length in characters
        self.recent = ""  # its last `keep` characters
        self.window_start = 0  # where `window` starts in the output's text
        self.window = ""  # recent + the text new at this token + pending
        self.emitted = 0  # characters of the text already streamed
        self.done = False

    def add(self, token: int, logprob: float, eos_id: int | None, last: bool, last_reason: str = "length") -> None:
        """Append one drawn token; finish on eos, a stop string, or when it was the ``last``
        allowed (with ``last_reason``: "length" for max_new_tokens, "context" for a full context)."""
        res = self.result
        if eos_id is not None and token == eos_id:
            self.finish("eos")
            return
        res.ids.append(token)
        res.logprobs.append(logprob)
        piece = self.decoder.push(token)
        self.window_start = self.committed - len(self.recent)
        self.window = self.recent + piece + self.decoder.pending
        if piece:
            self.pieces.append(piece)
            self.committed += len(piece)
            self.recent = (self.recent + piece)[-self.keep:] if self.keep else ""
        cut = min((i for i in (self.window.find(s) for s in self.stop) if i >= 0), default=-1)
        if cut >= 0:
            self._cut_before(self.window_start + cut)
            self.finish("stop")
        elif last:
            self.finish(last_reason)
        else:
            self._stream(self._safe_end())

    def text(self) -> str:
        """The output's whole text so far: ``tokenizer.decode(ids)``."""
        return "".join(self.pieces) + self.decoder.pending

    def _cut_before(self, cut: int) -> None:
        """``text`` ends at ``cut``; keep the longest run of tokens whose text lies wholly
        before it (decoded once per output, at its stop)."""
        res = self.result
        res.text = self.text()[:cut]
        n = len(res.ids)
        while n and not res.text.startswith(self.tokenizer.decode(res.ids[:n])):
            n -= 1
        del res.ids[n:], res.logprobs[n:]

    def _safe_end(self) -> int:
        """How much of the text can be streamed now: not a trailing incomplete character
        (decoded as U+FFFD) nor a suffix that may be the start of a stop string."""
        text = self.window.rstrip(REPLACEMENT)
        hold = 0
        for s in self.stop:
            for k in range(min(len(s) - 1, len(text)), hold, -1):
                if text.endswith(s[:k]):
                    hold = k
                    break
        return self.window_start + len(text) - hold

    def _stream(self, end: int) -> None:
        """Send the text from what was streamed up to ``end`` (the window holds that span)."""
        if self.on_token is not None and end > self.emitted:
            self.on_token(self.row, self.window[self.emitted - self.window_start:end - self.window_start])
        self.emitted = max(self.emitted, end)

    def finish(self, reason: str) -> None:
        res = self.result
        if reason != "stop":
            res.text = self.text()
        res.finish_reason = reason
        self.done = True
        self.window_start, self.window = 0, res.text  # the rest, at the end: the whole text
        self._stream(len(res.text))
