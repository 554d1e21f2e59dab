"""The planner: pure Python (no torch, no numpy) answers before any training.

shapes and parameter counts (specs, presets), FLOPs, memory, scaling laws and
compute-optimal allocation, hardware and cost, and model-family advice.
"""
