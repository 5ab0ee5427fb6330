"""Assembly: the one place that turns configuration into running things — the recorder
(:mod:`.recorder`), its writers and the archiver's (:mod:`.writers`).

Plain values and settings objects go down from here; nothing below imports upward.
"""
