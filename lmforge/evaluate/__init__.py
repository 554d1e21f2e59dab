"""Evaluation: loss, perplexity and bits per byte on held-out text, per source."""
