"""Plugins that try to take the process down or to smuggle an unvalidated spec past the registry."""
