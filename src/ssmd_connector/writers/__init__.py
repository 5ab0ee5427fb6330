"""Destinations for messages: the JSONL archive (``jsonl``), its compression and sealed segments.

``build.build_writers`` makes the writers an environment's ``storage`` block asks for.
"""
