"""Scaling laws from your own runs: the sweep's points, the fits (Approaches 2 and 3), plots."""
