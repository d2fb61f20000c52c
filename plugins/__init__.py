"""The built-in paper plugins, one module per paper, registered through the `papers` entry points."""
