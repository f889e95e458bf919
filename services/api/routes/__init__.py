"""HTTP routes of the review API, one module per concern (events, media, statistics/thresholds)."""
