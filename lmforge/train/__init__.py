"""Training: the loop, optimizer and schedule, checkpoints and resume, metrics, plots."""
