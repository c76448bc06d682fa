"""Env specs as data: the registered ids and their presets (see specs.json)."""
