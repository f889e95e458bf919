"""`fusionwatch scheduler`: the periodic jobs beside the data path (APScheduler 3.x).

    shift boundary (cron) ─► digest: top events of the shift → one narrated MP4 + a Markdown report
    daily (cron)         ─► retention: media files and rows past their age
    daily (cron)         ─► recalibration: services/api/recalibration.py adjusts per-asset thresholds

Jobs live in a persistent SQLAlchemy job store in the project database. Several scheduler
processes may run (a restart overlap, a second box): each firing of a job is claimed by inserting a
`job_runs` row keyed by (job, scheduled time), and digests also by `digests.shift_start`, so a
firing runs once whichever process sees it first.
"""
