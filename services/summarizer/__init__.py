"""Narrated video summaries: the hop after `fw.events`.

    fw.events (closed event) ─► facts ─► evidence (re-read from fw.frames/audio/logs by offset)
        ─► narrator (grounded template) ─► TTS (espeak-ng) ─► renderer (PyAV: H.264 + AAC + mov_text)
        ─► media root (MP4, WebVTT, thumbnail; atomic) + `summaries` row in SQL

`pipeline.summarize_event` is the whole hop for one event; `service.SummarizerService` runs it as a
consumer group on `fw.events`; `fusionwatch summarize` is the command.
"""
