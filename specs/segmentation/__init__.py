"""Semantic-segmentation specs."""
