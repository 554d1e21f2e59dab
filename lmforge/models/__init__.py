"""Torch modules built from a `ModelSpec` (DESIGN.md: models sit just above plan).

``build_model(spec)`` returns a module with exactly ``param_counts(spec).total``
parameters; decoders now, encoders and encoder-decoders in the next issue.
"""

from lmforge.models.build import build_model, check_buildable
from lmforge.models.decoder import DecoderLM

__all__ = ["DecoderLM", "build_model", "check_buildable"]
