"""Shared plumbing: the settings schema and its loading, paths, errors, atomic files, the process
environment, fingerprints. Imports nothing else of pipelines/."""
