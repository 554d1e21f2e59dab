"""Session-wide test setup: probe results go to a cache of the test session's own.

lmforge remembers its per-machine measurements (is bf16 fast here, the matmul peaks) in
``$LMFORGE_CACHE_DIR``; the tests measure afresh into a temporary one, so that neither a
user's cache nor an earlier session's decides what they see. Subprocesses (torchrun,
the CLI) inherit it. ``LMFORGE_CPU_BF16`` is left as the caller set it: CI runs the
training, generation and quantization tests again with the kernels capped to AVX2
(``.ci/run``), where the probe must find bf16 slow by itself.
"""

from __future__ import annotations

import os
import tempfile

os.environ["LMFORGE_CACHE_DIR"] = tempfile.mkdtemp(prefix="lmforge-test-cache-")
