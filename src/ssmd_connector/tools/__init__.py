"""The ``ssmd`` command: tools around the recorder (demo, simulator, ...)."""
