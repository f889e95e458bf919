"""Every Prometheus metric fusionwatch exports, defined once, on one registry.

Where it sits: beside the data path, not in it. Each hop (consume/validate → align/batch → score →
sink → commit, then the summarizer and the scheduler) updates the metrics below; each service's
`MetricsServer` (services/observability/server.py) exposes this registry on `/metrics`.
Prometheus then scrapes every service, `deploy/prometheus/rules/fusionwatch.rules.yml` alerts on
them and `deploy/grafana/` draws them.

Conventions (https://prometheus.io/docs/practices/naming/): the `fusionwatch_` prefix, base units in
the name (`_seconds`, `_records`, `_ratio`), `_total` on counters, `_info` gauges for versions.
Label values are bounded: assets through `AssetLabels` (known ids up to a cap, then "other"), event
kinds, DLQ reasons and job names through `BoundedLabel`. Nothing from a message body ever becomes a
label value, because one bad producer must not be able to blow up Prometheus' memory.

Import the objects and use them directly (`metrics.RECORDS_CONSUMED.labels(topic=t).inc()`); the few
helpers below cover the cases where the bounding or the arithmetic is easy to get wrong.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterable

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    GCCollector,
    Histogram,
    Info,
    PlatformCollector,
    ProcessCollector,
    disable_created_metrics,
)

# `_created` series double the series count and no dashboard or rule here reads them.
disable_created_metrics()

REGISTRY = CollectorRegistry(auto_describe=True)
# process_* (RSS, CPU, open fds) and python_* come for free and answer "is it leaking?".
ProcessCollector(registry=REGISTRY)
PlatformCollector(registry=REGISTRY)
GCCollector(registry=REGISTRY)

OTHER = "other"
DEFAULT_ASSET_CAP = 256
_ASSET_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")  # the wire contract's key format

# Histogram buckets, chosen for what each measures.
LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 3.0, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0)  # window end → commit
FAST_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)  # inference, SQL
RENDER_BUCKETS = (0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0)  # summary MP4 render
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)
# Scores are unbounded positive numbers whose scale depends on the model; log-spaced buckets keep
# the histogram useful whatever the calibration, and the drift alert compares means, not buckets.
SCORE_BUCKETS = (0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 1000.0)

# --- build / model versions -----------------------------------------------------------------------
BUILD_INFO = Info("fusionwatch_build", "fusionwatch version and service of this process (value is always 1).",
                  registry=REGISTRY)
MODEL_INFO = Info("fusionwatch_model", "Model checkpoint version in use by this monitor process (value is always 1).",
                  registry=REGISTRY)

# --- consume / validate ----------------------------------------------------------------------------
RECORDS_CONSUMED = Counter("fusionwatch_records_consumed_total", "Records fetched from Kafka, by topic.",
                           ["topic"], registry=REGISTRY)
RECORDS_REJECTED = Counter("fusionwatch_records_rejected_total",
                           "Records that broke the wire contract (sent to the DLQ), by topic and reason.",
                           ["topic", "reason"], registry=REGISTRY)
DLQ_WRITES = Counter("fusionwatch_dlq_writes_total", "Records written to the dead-letter topic, by original topic and reason.",
                     ["topic", "reason"], registry=REGISTRY)
DLQ_FAILURES = Counter("fusionwatch_dlq_send_failures_total",
                       "Dead-letter copies that could not be written after retries (the record is still skipped), "
                       "by original topic.", ["topic"], registry=REGISTRY)
DLQ_TRUNCATED = Counter("fusionwatch_dlq_truncated_total",
                        "Dead-letter copies cut to fit the producer's max request size (header fw_original_size).",
                        ["topic"], registry=REGISTRY)
CORRUPT_RECORDS = Counter("fusionwatch_corrupt_records_total",
                          "Records the Kafka client could not parse (CorruptRecordError), skipped by offset.",
                          ["topic"], registry=REGISTRY)
LATE_RECORDS = Counter("fusionwatch_late_records_total",
                       "Records older than the watermark minus allowed lateness (dropped to the DLQ as late).",
                       ["topic"], registry=REGISTRY)
RATE_LIMITED_RECORDS = Counter("fusionwatch_rate_limited_records_total",
                               "Records dropped by the per-asset rate limit, by asset (bounded label).",
                               ["asset"], registry=REGISTRY)
CONSUMER_LAG = Gauge("fusionwatch_consumer_lag_records",
                     "Records between this consumer's position and the fetch high watermark, per partition.",
                     ["topic", "partition"], registry=REGISTRY)
PAUSED_PARTITIONS = Gauge("fusionwatch_paused_partitions", "Partitions paused for backpressure right now.",
                          registry=REGISTRY)
ASSET_RECORDS = Counter("fusionwatch_asset_records_total", "Valid records consumed per asset and modality (bounded asset label).",
                        ["asset", "modality"], registry=REGISTRY)
ASSET_LAST_RECORD = Gauge("fusionwatch_asset_last_record_timestamp_seconds",
                          "Unix time at which this process last consumed a valid record of the asset (for the no-data alert).",
                          ["asset"], registry=REGISTRY)

# --- align / batch / score -------------------------------------------------------------------------
WINDOW_DECISION_LATENCY = Histogram("fusionwatch_window_decision_latency_seconds",
                                    "Wall time from a window's end (event time) to its decision being committed.",
                                    buckets=LATENCY_BUCKETS, registry=REGISTRY)
MODEL_BATCH_SIZE = Histogram("fusionwatch_model_batch_size", "Windows per model forward pass (dynamic batching).",
                             buckets=BATCH_BUCKETS, registry=REGISTRY)
MODEL_INFERENCE = Histogram("fusionwatch_model_inference_seconds", "Wall time of one batched model forward pass.",
                            buckets=FAST_BUCKETS, registry=REGISTRY)
WINDOWS_SCORED = Counter("fusionwatch_windows_scored_total", "Windows scored by the model.", registry=REGISTRY)
WINDOWS_MODALITY_PRESENT = Counter("fusionwatch_windows_modality_present_total",
                                   "Scored windows in which the modality had data (the rest were masked).",
                                   ["modality"], registry=REGISTRY)
MODALITY_AVAILABLE = Gauge("fusionwatch_modality_available_ratio",
                           "Fraction of the most recent batch's windows in which the modality had data (0..1).",
                           ["modality"], registry=REGISTRY)
ANOMALY_SCORE = Histogram("fusionwatch_anomaly_score", "Anomaly score of every scored window (model units).",
                          buckets=SCORE_BUCKETS, registry=REGISTRY)
ASSET_THRESHOLD = Gauge("fusionwatch_asset_threshold", "Anomaly-score threshold in force per asset (model units).",
                        ["asset"], registry=REGISTRY)
ASSET_ADAPTATION = Gauge(
    "fusionwatch_asset_adaptation_nats",
    "Surprise the model's adaptation takes off each score component of an asset (models/adaptation.py): "
    "the station sits off the calibration stations' normal there; a value that keeps rising is a slow change.",
    ["asset", "component"], registry=REGISTRY)
ASSET_LEARNING = Gauge(
    "fusionwatch_asset_learning",
    "1 while an asset's baseline is learned from its own first windows (only the guard threshold opens an "
    "event), 0 once it is watching (models/adaptation.py).", ["asset"], registry=REGISTRY)
ASSET_BASELINE_WINDOWS = Gauge(
    "fusionwatch_asset_baseline_windows",
    "Windows of the asset seen since its baseline was (re)started: its learning progress.", ["asset"], registry=REGISTRY)

# --- sink: events, SQL ------------------------------------------------------------------------------
EVENTS_OPENED = Counter("fusionwatch_events_opened_total", "Anomaly events opened, by severity and kind.",
                        ["severity", "kind"], registry=REGISTRY)
EVENTS_CLOSED = Counter("fusionwatch_events_closed_total", "Anomaly events closed, by severity and kind.",
                        ["severity", "kind"], registry=REGISTRY)
SQL_WRITE = Histogram("fusionwatch_sql_write_seconds", "Wall time of one SQL write transaction (events + offsets).",
                      buckets=FAST_BUCKETS, registry=REGISTRY)
SQL_WRITE_FAILURES = Counter("fusionwatch_sql_write_failures_total", "SQL write transactions that failed (and were retried or stopped).",
                             registry=REGISTRY)
NONFINITE_DROPPED = Counter("fusionwatch_nonfinite_dropped_total",
                            "Scored windows (what=window) or per-asset model states (what=state) holding NaN or "
                            "infinity, dropped before the lifecycle and SQL; the state is rolled back to its last "
                            "committed value.", ["what"], registry=REGISTRY)
STREAMS_STOPPED = Counter("fusionwatch_streams_stopped_total",
                          "Assets that sent nothing for monitor.stream_stopped_s with nothing of theirs left to "
                          "read (a station switched off, a call ended); closed=true when that closed an open event "
                          "(at its last window over the threshold).", ["closed"], registry=REGISTRY)
OUTBOX_PENDING = Gauge("fusionwatch_outbox_pending", "Outbox rows not yet published to the events topic.",
                       registry=REGISTRY)

# --- summarizer -------------------------------------------------------------------------------------
SUMMARIES_RENDERED = Counter("fusionwatch_summaries_rendered_total", "Narrated summaries attempted, by status (ok, failed, skipped).",
                             ["status"], registry=REGISTRY)
SUMMARY_RENDER = Histogram("fusionwatch_summarizer_render_seconds", "Wall time to render one narrated MP4 summary.",
                           buckets=RENDER_BUCKETS, registry=REGISTRY)
SUMMARIZER_LAG = Gauge("fusionwatch_summarizer_lag_events", "Events waiting for a summary (consumer lag on the events topic).",
                       registry=REGISTRY)

# --- scheduler --------------------------------------------------------------------------------------
# The job's name is the `task` label: a `job` label would clash with Prometheus' own target label.
JOB_OUTCOMES = ("ok", "failed", "missed", "skipped")
SCHEDULER_JOB_RUNS = Counter("fusionwatch_scheduler_job_runs_total",
                             "Scheduled job runs, by task and outcome (ok, failed, missed, skipped = claimed by another replica).",
                             ["task", "outcome"], registry=REGISTRY)
SCHEDULER_JOB_LAST_SUCCESS = Gauge("fusionwatch_scheduler_job_last_success_timestamp_seconds",
                                   "Unix time of the job's last successful run.", ["task"], registry=REGISTRY)


# --- notifier (services/notify) ---------------------------------------------------------------------
# `channel` is a configured channel name (bounded by `notify_channel_label`); `transition` is one of
# opened, escalated, closed, test.
NOTIFY_LATENCY_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 900.0, 3600.0)
NOTIFICATIONS_DELIVERED = Counter("fusionwatch_notifications_delivered_total",
                                  "Notifications a channel's receiver acknowledged, by channel and transition.",
                                  ["channel", "transition"], registry=REGISTRY)
NOTIFICATION_ATTEMPTS_FAILED = Counter("fusionwatch_notification_attempts_failed_total",
                                       "Delivery attempts that failed (each retry counts), by channel.",
                                       ["channel"], registry=REGISTRY)
NOTIFICATIONS_DEAD_LETTERED = Counter("fusionwatch_notifications_dead_lettered_total",
                                      "Notifications given up on after the attempt or age limit (or refused "
                                      "by the receiver), stored in notify_dead_letters, by channel.",
                                      ["channel"], registry=REGISTRY)
NOTIFICATIONS_SKIPPED = Counter("fusionwatch_notifications_skipped_total",
                                "fw.events records or channels not sent: already_delivered (the ledger has the "
                                "revision, a replay) or invalid (not an anomaly CloudEvent).",
                                ["reason"], registry=REGISTRY)
NOTIFICATION_LATENCY = Histogram("fusionwatch_notification_delivery_seconds",
                                 "From the monitor's commit of the event change to the receiver's "
                                 "acknowledgement, by channel (retries included).",
                                 ["channel"], buckets=NOTIFY_LATENCY_BUCKETS, registry=REGISTRY)

# --- ingest of live inputs (services/ingest/live.py) ------------------------------------------------
# `input` is the stream's scheme://host[:port] (never its path or credentials); `asset` is bounded.
INGEST_CONNECTED = Gauge("fusionwatch_ingest_connected",
                         "1 while a live input delivers media, 0 while it is being reconnected.",
                         ["asset", "input"], registry=REGISTRY)
INGEST_RECONNECTS = Counter("fusionwatch_ingest_reconnect_attempts_total",
                            "Reconnection attempts of live inputs (a refused, silent or ended stream), by input.",
                            ["asset", "input"], registry=REGISTRY)


def ingest_state(asset: str, input_label: str, connected: bool, reconnecting: bool = False) -> None:
    labels = {"asset": asset_labels(asset), "input": input_label}
    INGEST_CONNECTED.labels(**labels).set(1 if connected else 0)
    if reconnecting:
        INGEST_RECONNECTS.labels(**labels).inc()


# --- every service ---------------------------------------------------------------------------------
READINESS_CHECK_OK = Gauge("fusionwatch_readiness_check_ok",
                           "1 when the named readiness check (broker, database, ...) passed at its last run, else 0.",
                           ["check"], registry=REGISTRY)


class BoundedLabel:
    """Map values to themselves while there is room, then to "other".

    `allowed` values always pass; other values pass first-come up to `cap` distinct ones (set
    `cap=0` to pass only the allowed set). Values that are not short identifiers never pass.
    Thread-safe: the consume thread and the sink thread may both label.
    """

    def __init__(self, allowed: Iterable[str] = (), cap: int = 32, pattern: re.Pattern[str] = _ASSET_RE):
        self._allowed = set(allowed)
        self._seen: set[str] = set()
        self._cap = cap
        self._pattern = pattern
        self._lock = threading.Lock()

    def set_cap(self, cap: int) -> None:
        """Change the cap, keeping the known set and the labels already handed out."""
        with self._lock:
            self._cap = cap if self._cap else 0
            self._total_cap = cap

    def __call__(self, value: str | None) -> str:
        if value in self._allowed:
            return value
        if not value or not self._pattern.match(value):
            return OTHER
        with self._lock:
            if value in self._seen:
                return value
            if len(self._seen) < self._cap:
                self._seen.add(value)
                return value
        return OTHER

    def allow(self, values: Iterable[str]) -> None:
        """Add values that must always keep their own label (e.g. configured ids)."""
        with self._lock:
            self._allowed.update(v for v in values if v and self._pattern.match(v))

    @property
    def values(self) -> frozenset[str]:
        with self._lock:
            return frozenset(self._allowed | self._seen)


class AssetLabels(BoundedLabel):
    """Asset ids as label values: known (configured / registered in SQL) ids always; unknown ids
    first-come while fewer than `cap` distinct assets are labelled; everything else is "other".

    The cap counts known and discovered assets together, so a plant of 300 stations configured up
    front keeps 300 labels, while a misbehaving producer inventing keys cannot add more than the cap.
    `admit_unknown=False` labels only the known set.
    """

    def __init__(self, known: Iterable[str] = (), cap: int = DEFAULT_ASSET_CAP, admit_unknown: bool = True):
        super().__init__(cap=cap)
        self.configure(known, cap, admit_unknown)

    def configure(self, known: Iterable[str], cap: int = DEFAULT_ASSET_CAP, admit_unknown: bool = True) -> None:
        """Reset in place (so every module holding this object sees the new configuration)."""
        with self._lock:
            self._allowed = {a for a in known if a and self._pattern.match(a)}
            self._seen = set()
            self._total_cap = cap
            self._cap = cap if admit_unknown else 0

    def set_cap(self, cap: int) -> None:
        """Change the cap, keeping the known set and the labels already handed out."""
        with self._lock:
            self._cap = cap if self._cap else 0
            self._total_cap = cap

    def __call__(self, value: str | None) -> str:
        if value in self._allowed:
            return value
        if not value or not self._pattern.match(value):
            return OTHER
        with self._lock:
            if value in self._seen:
                return value
            if self._cap and len(self._allowed) + len(self._seen) < self._total_cap:
                self._seen.add(value)
                return value
        return OTHER


# Severity is a closed set in the event schema; kinds and reasons are short identifiers with a cap.
SEVERITIES = ("low", "medium", "high", "critical")
severity_label = BoundedLabel(allowed=SEVERITIES, cap=0)
kind_label = BoundedLabel(allowed=("anomaly", "escalation"), cap=32)
notify_channel_label = BoundedLabel(cap=0)  # configured notifier channels (services/notify allows them)
reason_label = BoundedLabel(cap=64, pattern=re.compile(r"^[a-z][a-z0-9_.-]{0,63}$"))
job_label = BoundedLabel(cap=32)

asset_labels = AssetLabels()  # the process-wide default; services call configure_assets() at start


def configure_assets(known: Iterable[str], cap: int = DEFAULT_ASSET_CAP, admit_unknown: bool = True) -> AssetLabels:
    """Replace the process-wide asset labeller (call once at service start with the known assets)
    and create the known assets' series at zero, so the no-data alert sees an asset that never sent."""
    asset_labels.configure(known, cap=cap, admit_unknown=admit_unknown)
    for asset in asset_labels.values:
        ASSET_RECORDS.labels(asset=asset, modality="frames")
        RATE_LIMITED_RECORDS.labels(asset=asset)
    return asset_labels


def set_build_info(service: str, version: str | None = None) -> None:
    """Record the package version and which service this process is (call once at start)."""
    if version is None:
        from importlib.metadata import PackageNotFoundError
        from importlib.metadata import version as pkg_version

        try:
            version = pkg_version("fusionwatch")
        except PackageNotFoundError:
            version = "unknown"
    BUILD_INFO.info({"version": version, "service": service})


def set_model_info(version: str, device: str = "cpu") -> None:
    MODEL_INFO.info({"version": version, "device": device})


def observe_record(asset: str, modality: str, now_s: float) -> None:
    """A valid record of `asset` was consumed (counts per asset, feeds the no-data alert)."""
    label = asset_labels(asset)
    ASSET_RECORDS.labels(asset=label, modality=modality).inc()
    ASSET_LAST_RECORD.labels(asset=label).set(now_s)


def observe_rejected(topic: str, reason: str, to_dlq: bool = True) -> None:
    """A record broke the contract: count it, and its DLQ write, under a bounded reason."""
    reason = reason_label(reason)
    RECORDS_REJECTED.labels(topic=topic, reason=reason).inc()
    if to_dlq:
        DLQ_WRITES.labels(topic=topic, reason=reason).inc()


def observe_batch(present: dict[str, int], windows: int, scores: Iterable[float], inference_s: float) -> None:
    """One model forward pass: `present` = windows per modality that had data, out of `windows`."""
    MODEL_BATCH_SIZE.observe(windows)
    MODEL_INFERENCE.observe(inference_s)
    WINDOWS_SCORED.inc(windows)
    for modality, n in present.items():
        WINDOWS_MODALITY_PRESENT.labels(modality=modality).inc(n)
        MODALITY_AVAILABLE.labels(modality=modality).set(n / windows if windows else 0.0)
    for score in scores:
        ANOMALY_SCORE.observe(score)


def set_threshold(asset: str, threshold: float) -> None:
    ASSET_THRESHOLD.labels(asset=asset_labels(asset)).set(threshold)


def set_adaptation(asset: str, offsets: dict[str, float]) -> None:
    label = asset_labels(asset)
    for component, nats in offsets.items():  # components: the model's fixed set of ten
        ASSET_ADAPTATION.labels(asset=label, component=component).set(nats)


def set_baseline(asset: str, learning: bool, windows: int) -> None:
    label = asset_labels(asset)
    ASSET_LEARNING.labels(asset=label).set(1 if learning else 0)
    ASSET_BASELINE_WINDOWS.labels(asset=label).set(windows)


def event_opened(severity: str, kind: str) -> None:
    EVENTS_OPENED.labels(severity=severity_label(severity), kind=kind_label(kind)).inc()


def event_closed(severity: str, kind: str) -> None:
    EVENTS_CLOSED.labels(severity=severity_label(severity), kind=kind_label(kind)).inc()


def set_lag(topic: str, partition: int, highwater: int | None, position: int | None) -> None:
    """Lag from the fetch high watermark (ListOffsets is wrong on the embedded broker, README.md);
    skipped until the first fetch has told us a high watermark."""
    if highwater is None or position is None:
        return
    CONSUMER_LAG.labels(topic=topic, partition=str(partition)).set(max(0, highwater - position))


def forget_partitions(partitions: Iterable[tuple[str, int]]) -> None:
    """Drop the lag series of revoked partitions, so a rebalance leaves no stale lag behind."""
    for topic, partition in partitions:
        try:
            CONSUMER_LAG.remove(topic, str(partition))
        except KeyError:
            pass


def job_run(job: str, outcome: str, now_s: float | None = None) -> None:
    """A scheduler job finished with `outcome`: "ok", "failed", "missed", or "skipped" (another
    scheduler replica had claimed this firing)."""
    import time

    task = job_label(job)
    SCHEDULER_JOB_RUNS.labels(task=task, outcome=outcome if outcome in JOB_OUTCOMES else OTHER).inc()
    if outcome == "ok":
        SCHEDULER_JOB_LAST_SUCCESS.labels(task=task).set(time.time() if now_s is None else now_s)
