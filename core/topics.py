"""The topics a paper carries: its field, and for compression papers the kind of method.

Kept apart from the spec models so that ``papers list --topic`` can check a topic without importing
them (``papers.index``).
"""

from __future__ import annotations

TOPICS = ("classification", "detection", "segmentation", "compression")
COMPRESSION_KINDS = ("pruning", "quantization", "low-rank", "distillation", "review")
