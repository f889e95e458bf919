"""The monitor: a consumer group over fw.frames/fw.audio/fw.logs that validates, aligns, batches,
scores and records anomaly events exactly once (consume → align → score → sink → commit)."""
