"""Semantic-segmentation papers."""
