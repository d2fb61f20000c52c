"""The built-in papers' spec files, shipped as package data (one YAML file per paper)."""
