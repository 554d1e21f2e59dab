"""Pretraining objectives as batch builders on top of the shards (issue 4), pure numpy, no torch.

- ``masking``: masked LM (BERT; Devlin et al. 2019, Sec. 3.1), whole-word masking optional;
- ``spans``: span corruption (T5; Raffel et al. 2020, Sec. 3.1.4);
- ``infilling``: text infilling (BART; Lewis et al. 2020, Sec. 2.2);
- ``build``: ``build_objective_batch(name, tokens, rng, tokenizer, **options)`` for the loop;
- ``batch``: ``ObjectiveBatch`` and the padding the builders share.

Every builder is deterministic given the ``np.random.Generator`` passed in; each has a
``reconstruct_*`` helper that recovers the original rows from a batch (tests).
"""

from lmforge.data.objectives.batch import IGNORE, ObjectiveBatch
from lmforge.data.objectives.build import OBJECTIVES, build_objective_batch, special_token_ids
from lmforge.data.objectives.infilling import (
    infilling_alignment,
    infilling_spans,
    reconstruct_infilling,
    text_infilling,
)
from lmforge.data.objectives.masking import mask_tokens, reconstruct_masked
from lmforge.data.objectives.spans import (
    random_spans_noise_mask,
    reconstruct_span_corruption,
    span_corruption,
    span_corruption_lengths,
    span_counts,
)

__all__ = [
    "IGNORE",
    "OBJECTIVES",
    "ObjectiveBatch",
    "build_objective_batch",
    "infilling_alignment",
    "infilling_spans",
    "mask_tokens",
    "random_spans_noise_mask",
    "reconstruct_infilling",
    "reconstruct_masked",
    "reconstruct_span_corruption",
    "span_corruption",
    "span_corruption_lengths",
    "span_counts",
    "special_token_ids",
    "text_infilling",
]
