"""lmforge: plan, pretrain, evaluate, quantize and sample language models.

Importing ``lmforge`` is cheap: the planner (``lmforge.plan``) is pure Python and
never imports torch or numpy.
"""

__version__ = "0.1.0"
