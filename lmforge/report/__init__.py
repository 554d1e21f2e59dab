"""``lmforge report``: a run's predictions beside its measurements, and runs side by side.

Reads only what a run directory holds as text (``plan.json``, ``report.json``,
``metrics.jsonl``, the JSON header of ``model.safetensors``): no torch, no numpy.
matplotlib (and the numpy it brings) is imported only to draw the overlay of several
runs' loss curves.

- `run`: a run directory as one `RunRecord` (finished, still running, or stopped
  before its end), and the refusals of what is not a trained run;
- `compare`: the predicted-vs-measured rows of one run, with the error of each;
- `side_by_side`: the final numbers of several runs, one row each;
- `overlay`: their loss curves on one figure, against tokens and against time.
"""
