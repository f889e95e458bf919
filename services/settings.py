"""One typed settings object for every service.

Read from `FW_*` environment variables (nested groups with `__`, e.g. `FW_KAFKA__BOOTSTRAP`;
the common ones also have short aliases such as `FW_KAFKA_BOOTSTRAP` and `FW_DATABASE_URL`) and
from an optional TOML file named by `FW_CONFIG` or `--config`. Environment beats file beats defaults.
"""

from __future__ import annotations

import difflib
import os
import tomllib
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal, Mapping, get_args

from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from schemas.errors import ConfigError
from streamlogic.event_lifecycle import CLOSE_AFTER, OPEN_AFTER


class KafkaSettings(BaseModel):
    # None means: start the embedded Tansu broker (the laptop default).
    bootstrap: str | None = None
    topic_prefix: str = "fw."
    partitions: int = Field(8, ge=1, description="partitions of every input topic (co-partitioned)")
    replication_factor: int = Field(1, ge=1)
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = None
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None
    ssl_cafile: Path | None = None
    ssl_certfile: Path | None = None
    ssl_keyfile: Path | None = None
    # how long a service waits at start for a bootstrap server to accept a connection before it
    # says so and exits (a container orchestrator restarts it; a person fixes the address)
    connect_timeout_s: float = Field(15.0, ge=0)
    # kafka-python 3 defaults to a 45 s session; groups then take ~23 s to form on Tansu.
    session_timeout_ms: int = 6000
    heartbeat_interval_ms: int = 1000
    max_poll_records: int = 2000

    @model_validator(mode="after")
    def _check_security(self) -> "KafkaSettings":
        if self.security_protocol.startswith("SASL") and not (self.sasl_mechanism and self.sasl_username):
            raise ValueError("SASL needs kafka.sasl_mechanism and kafka.sasl_username (and FW_KAFKA__SASL_PASSWORD)")
        return self

    def topic(self, name: str) -> str:
        return f"{self.topic_prefix}{name}"


class BrokerSettings(BaseModel):
    """The embedded Tansu broker (memory storage; see README 'Embedded broker limits')."""

    host: str = "127.0.0.1"
    port: int = 19092
    startup_timeout_s: float = 20.0
    # Tansu keeps every record in memory and ignores retention; past this resident size the
    # supervisor restarts it with fresh topics (the embedded default is for demos, not durability).
    max_rss_mb: int = 2048


class DatabaseSettings(BaseModel):
    url: str = "sqlite:///./var/fusionwatch.db"
    connect_timeout_s: float = 30.0
    retention_days: int = 90


class MonitorSettings(BaseModel):
    group_id: str = "fw-monitor"
    window_s: float = Field(2.0, gt=0)
    hop_s: float = Field(1.0, gt=0)
    allowed_lateness_s: float = Field(2.0, ge=0)
    # a modality silent this long past the window end is masked, not waited for
    modality_timeout_s: float = Field(1.0, ge=0)
    # an asset that sends nothing at all for this long (with nothing of it left to read) has
    # stopped — a station switched off, a call ended: an event it has open closes then, at its
    # last window over the threshold, instead of staying open until it sends again
    stream_stopped_s: float = Field(30.0, gt=0)
    max_batch: int = Field(64, ge=1)
    max_wait_ms: int = Field(50, ge=0)
    max_pending_windows: int = Field(512, ge=1, description="backpressure: pause partitions above this")
    # the checkpoint's threshold is calibrated for these (its calibration.json records which)
    open_after: int = Field(OPEN_AFTER, ge=1, description="windows over threshold before an event opens")
    close_after: int = Field(CLOSE_AFTER, ge=1, description="windows under threshold before it closes")
    device: Literal["auto", "cpu", "cuda"] = "auto"
    # per asset and input topic, per second of event time (a backlog read fast is not a flood)
    per_asset_max_records_per_s: float = 200.0
    # a record stamped more than this ahead of the monitor's clock is dead-lettered as time_in_future
    # (records are stamped at capture, so only clock skew puts them ahead); none moves a watermark
    max_future_skew_s: float = Field(10.0, ge=0)
    # /readyz turns unready once SQL commits have kept failing this long (an outage, a refused batch)
    commit_failing_unready_s: float = Field(5.0, ge=0)
    # False: the consume thread waits for each batch's score + SQL commit before reading on (the
    # naive baseline of `fusionwatch bench pipeline`); True overlaps consumption with scoring
    overlap: bool = True
    # torch intra-op threads of the score stage; None = every core but one, which the consume
    # thread (Kafka, JPEG/WAV decode) needs: torch's default (all cores) spin-waits against it
    torch_threads: int | None = Field(None, ge=1)
    # call-centre profile: an escalation opens when frustration (0..1) stays at or above this
    escalation_threshold: float = Field(0.6, gt=0, le=1)
    # ... for escalation_open_after windows, and closes only after escalation_close_after windows
    # below escalation_close_threshold: one event per angry episode (streamlogic/escalation.py)
    escalation_close_threshold: float = Field(0.4, ge=0, le=1)
    escalation_open_after: int = Field(3, ge=1)
    escalation_close_after: int = Field(8, ge=1)
    # ... counting only windows that hear this much of the customer's voice on a stereo call (a
    # mono call's every window counts): the agent's turns carry no estimate of their frustration
    escalation_min_customer_speech_s: float = Field(0.5, ge=0)
    # ... for up to this many windows in a row; a longer silence of the customer counts as calm
    escalation_silence_after: int = Field(30, ge=0)
    # ... whose voice is on channel 0 and 1 of a stereo call's audio records (a call folder's
    # labels.json "channels" offline): the model hears each apart (docs/callcenter.md)
    call_channels: tuple[Literal["agent", "customer"], Literal["agent", "customer"]] = ("agent", "customer")

    @model_validator(mode="after")
    def _one_speaker_per_channel(self) -> "MonitorSettings":
        if self.call_channels[0] == self.call_channels[1]:
            raise ValueError(f"monitor.call_channels names {self.call_channels[0]!r} twice; "
                             "give channel 0 and 1 one speaker each, e.g. [\"agent\", \"customer\"]")
        return self


class ApiSettings(BaseModel):
    host: str = "127.0.0.1"
    port: int = 8080
    token: SecretStr | None = None
    # request bodies above this are refused (413) before authentication or parsing
    max_body_bytes: int = Field(1 << 20, ge=1024)
    # a manual threshold must lie within these factors of the asset's calibrated threshold
    threshold_min_factor: float = Field(0.5, gt=0, le=1)
    threshold_max_factor: float = Field(4.0, ge=1)


class RecalibrationSettings(BaseModel):
    """Feedback loop (services/api/recalibration.py): false-alarm verdicts raise per-asset thresholds."""

    # the false-alarm budget the model was calibrated for: false events per asset per shift
    false_alarms_per_shift: float = Field(1.0, ge=0)
    shift_hours: float = Field(8.0, gt=0)
    lookback_days: float = Field(7.0, gt=0, description="verdicts older than this are not counted")
    max_step: float = Field(1.5, gt=1.0, description="at most this factor over the threshold in force, per run")
    max_total: float = Field(3.0, gt=1.0, description="never above this factor of the calibrated threshold")
    # relative margin: above a false event's peak, below the score that opens a confirmed real event
    margin: float = Field(0.01, gt=0, lt=0.5)


class MetricsSettings(BaseModel):
    host: str = "127.0.0.1"
    # bearer token /metrics requires when bound off loopback (default: FW_API_TOKEN)
    token: SecretStr | None = None
    # each service adds its own offset so several can run on one box
    base_port: int = 9400
    # this process's port, overriding base_port + offset (e.g. a second monitor on the same box)
    port: int | None = None
    # distinct asset label values per metric before the rest are labelled "other"
    max_asset_labels: int = Field(256, ge=1)
    # how often readiness checks (broker, database) run in the background; probes read the result
    readiness_interval_s: float = Field(2.0, gt=0)


class SummarizerSettings(BaseModel):
    """Narrated video summaries of closed events (services/summarizer, docs/summaries.md)."""

    group_id: str = "fw-summarizer"
    width: int = Field(640, ge=320, le=1920, description="video width in px (even)")
    height: int = Field(360, ge=240, le=1080, description="video height in px (even)")
    # None: the source camera's rate (median frame spacing), capped at max_fps
    fps: float | None = Field(None, gt=0, le=60)
    max_fps: float = Field(15.0, gt=0, le=60)
    context_before_s: float = Field(3.0, ge=0, le=30, description="seconds shown before the event starts")
    context_after_s: float = Field(3.0, ge=0, le=30, description="seconds shown after the event ends")
    max_event_s: float = Field(60.0, gt=0, description="longer events show their first and peak part only")
    voice: str = "en-us"  # an espeak-ng voice name
    speech_wpm: int = Field(185, ge=80, le=400)
    # loudness of the sensor's own sound relative to the narrating voice (RMS ratio; ducked further
    # while the voice speaks); 0 leaves it out
    sensor_audio_gain: float = Field(0.3, ge=0, le=1)
    crf: int = Field(26, ge=0, le=51, description="x264 quality (lower = better, larger)")
    x264_preset: str = "superfast"  # measured: ~20 % faster than veryfast at 360p, similar size
    read_timeout_s: float = Field(5.0, gt=0, description="how long to wait for evidence records from Kafka")
    # also summarize events still open after this many seconds (None: closed events only)
    open_after_s: float | None = Field(None, gt=0)
    # optional local text-generation model directory (transformers) that rephrases the narration;
    # None keeps the deterministic template
    rephrase_model: Path | None = None


class SchedulerSettings(BaseModel):
    """`fusionwatch scheduler`: shift digests, retention, recalibration (services/scheduler)."""

    # shift start times, local to `timezone` ("HH:MM" or "HH:MM:SS"); a digest runs as each shift ends
    shifts: list[str] = Field(default_factory=lambda: ["06:00", "14:00", "22:00"])
    timezone: str = "UTC"
    digest_top_events: int = Field(5, ge=1, le=50)
    retention_cron: str = "30 3 * * *"  # crontab: minute hour day month day-of-week
    recalibration_cron: str = "45 5 * * *"
    media_retention_days: float = Field(30.0, gt=0, description="summary/digest files older than this are deleted")
    # a scheduler that was down runs a missed job late if it comes back within this many seconds
    misfire_grace_s: int = Field(3600, ge=1)


Transition = Literal["opened", "escalated", "closed"]
SEVERITY_ORDER = ("low", "medium", "high", "critical")
# lower case: FW_NOTIFY__WEBHOOKS__<NAME>__<FIELD> names a channel and the environment is case-blind
CHANNEL_NAME = r"^[a-z0-9][a-z0-9_-]{0,63}$"


class _Strict(BaseModel):
    # a misspelt key inside a channel or rule is an error, not a silently ignored line
    model_config = ConfigDict(extra="forbid")


class MqttChannelSettings(_Strict):
    """One MQTT broker to publish to (services/notify/mqtt.py; docs/production.md "Delivering alerts")."""

    host: str
    port: int = Field(1883, ge=1, le=65535)
    username: str | None = None
    password: SecretStr | None = None
    tls: bool = False
    ca_file: Path | None = None  # None with tls: the system's CAs
    client_id: str | None = None  # None: fusionwatch-notify-<channel>-<pid>
    topic_prefix: str = Field("fusionwatch", pattern=r"^[^#+]+$")
    site: str | None = Field(None, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")  # topic level between prefix and asset
    qos: Literal[1, 2] = 1
    # retained <prefix>/<site>/<asset>/state (open | clear) and .../attributes (the last payload)
    retain_state: bool = True
    homeassistant_discovery: bool = False
    discovery_prefix: str = "homeassistant"
    keepalive_s: int = Field(30, ge=5)
    timeout_s: float = Field(10.0, gt=0, description="connect and acknowledgement wait per attempt")


class WebhookChannelSettings(_Strict):
    """One HTTP endpoint that receives signed JSON (services/notify/webhook.py)."""

    url: str = Field(pattern=r"^https?://")
    # HMAC-SHA256 key; the receiver verifies X-Fusionwatch-Signature with it
    secret: SecretStr = Field(min_length=16)
    timeout_s: float = Field(10.0, gt=0)
    headers: dict[str, SecretStr] = Field(default_factory=dict)  # e.g. an Authorization header the receiver wants (masked in `config`)


class NotifyRule(_Strict):
    """Which notifications go to which channels. Every rule that matches adds its channels."""

    name: str | None = None
    assets: list[str] = Field(default_factory=lambda: ["*"], min_length=1)  # shell globs (fnmatch), e.g. "L1-*"
    kinds: list[str] = Field(default_factory=lambda: ["*"], min_length=1)  # globs over the event kind
    min_severity: Literal["low", "medium", "high", "critical"] = "low"
    transitions: list[Transition] = Field(default_factory=lambda: list(get_args(Transition)), min_length=1)
    channels: list[str] = Field(min_length=1)


class NotifyRetrySettings(_Strict):
    """Per notification and channel: exponential backoff with jitter until delivered, or dead-lettered
    once either limit is reached. While one channel retries, later records of the same partition wait
    (per-asset order is kept), so the limits also bound how long a dead receiver holds the others up."""

    max_attempts: int = Field(12, ge=1)
    max_age_s: float = Field(900.0, gt=0, description="give up this long after the first attempt")
    initial_delay_s: float = Field(1.0, gt=0)
    max_delay_s: float = Field(60.0, gt=0)


class NotifySettings(_Strict):
    """`fusionwatch notify`: opened / escalated / closed events to MQTT and signed webhooks."""

    group_id: str = "fw-notifier"
    # where people reach the review page and API; links in every notification start with it
    base_url: str = Field("http://127.0.0.1:8080", pattern=r"^https?://")
    # a new consumer group starts at the end of fw.events: a first deployment does not replay 30 days
    # of history to the receivers (a group that exists resumes at its committed offset either way)
    new_group_start: Literal["latest", "earliest"] = "latest"
    mqtt: dict[str, MqttChannelSettings] = Field(default_factory=dict)
    webhooks: dict[str, WebhookChannelSettings] = Field(default_factory=dict)
    rules: list[NotifyRule] = Field(default_factory=list)
    retry: NotifyRetrySettings = NotifyRetrySettings()
    ledger_retention_days: float = Field(30.0, gt=0, description="delivery ledger rows older than this are pruned")

    @model_validator(mode="after")
    def _check_channels(self) -> "NotifySettings":
        import re

        both = set(self.mqtt) & set(self.webhooks)
        if both:
            raise ValueError(f"channel name(s) {sorted(both)} used for both an MQTT and a webhook channel")
        for name in self.channels:
            if not re.match(CHANNEL_NAME, name):
                raise ValueError(f"channel name {name!r}: use lower-case letters, digits, '_' and '-' (e.g. ops_pager)")
        for i, rule in enumerate(self.rules):
            unknown = [c for c in rule.channels if c not in self.channels]
            if unknown:
                raise ValueError(f"notify rule {rule.name or i} names unknown channel(s) {unknown}; "
                                 f"configured: {sorted(self.channels) or 'none'}")
        return self

    @property
    def channels(self) -> list[str]:
        return sorted([*self.mqtt, *self.webhooks])


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="FW_", env_nested_delimiter="__", extra="ignore")

    profile: Literal["factory", "callcenter"] = "factory"
    var_dir: Path = Path("./var")
    media_root: Path | None = None  # default: <var_dir>/media
    model_dir: Path | None = None  # default: <var_dir>/model
    log_level: str = "INFO"
    kafka: KafkaSettings = KafkaSettings()
    broker: BrokerSettings = BrokerSettings()
    database: DatabaseSettings = DatabaseSettings()
    monitor: MonitorSettings = MonitorSettings()
    api: ApiSettings = ApiSettings()
    metrics: MetricsSettings = MetricsSettings()
    recalibration: RecalibrationSettings = RecalibrationSettings()
    summarizer: SummarizerSettings = SummarizerSettings()
    scheduler: SchedulerSettings = SchedulerSettings()
    notify: NotifySettings = NotifySettings()

    @property
    def media_dir(self) -> Path:
        return self.media_root or self.var_dir / "media"

    @property
    def checkpoint_dir(self) -> Path:
        return self.model_dir or self.var_dir / "model"

    @classmethod
    def settings_customise_sources(cls, settings_cls, init_settings, env_settings, dotenv_settings, file_secret_settings):
        return (init_settings, _ShortAliases(settings_cls), env_settings, _TomlFile(settings_cls), file_secret_settings)


# Short, memorable names for the settings people change most.
_ALIASES = {
    "FW_KAFKA_BOOTSTRAP": ("kafka", "bootstrap"),
    "FW_DATABASE_URL": ("database", "url"),
    "FW_API_TOKEN": ("api", "token"),
}


class _ShortAliases(PydanticBaseSettingsSource):
    def get_field_value(self, field, field_name):  # pragma: no cover - unused by __call__
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for env, (group, key) in _ALIASES.items():
            if env in os.environ:
                out.setdefault(group, {})[key] = os.environ[env]
        return out


class _TomlFile(PydanticBaseSettingsSource):
    def get_field_value(self, field, field_name):  # pragma: no cover
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        path = os.environ.get("FW_CONFIG")
        if not path:
            return {}
        try:
            data = tomllib.loads(Path(path).read_text())
        except FileNotFoundError:
            raise ConfigError(f"FW_CONFIG={path} does not exist; unset it or point it at a TOML file") from None
        except tomllib.TOMLDecodeError as e:
            raise ConfigError(f"{path} is not valid TOML: {e}") from None
        _check_toml_keys(data, path)
        return data


# FW_* variables that are not settings: the config file, the fault-injection hook
# (services/monitor/faultpoints.py), the benchmark's keep flag, and the test suite's own knobs.
_OTHER_VARIABLES = {"FW_CONFIG", "FW_FAULT_POINTS", "FW_BENCH_KEEP", "FW_SOAK_MINUTES", "FW_UPDATE_SCREENSHOT"}
_OTHER_PREFIXES = ("FW_TEST_", "FW_FUZZ_")
# channels are named by the operator, so their variables go one level deeper than setting_names();
# pydantic still refuses an unknown field under them (extra="forbid")
_CHANNEL_PREFIXES = ("FW_NOTIFY__MQTT__", "FW_NOTIFY__WEBHOOKS__")


def setting_names() -> dict[str, tuple[str, ...]]:
    """Every settings environment variable → its path in Settings (groups themselves take JSON)."""
    names: dict[str, tuple[str, ...]] = {}
    for name, info in Settings.model_fields.items():
        names[f"FW_{name.upper()}"] = (name,)
        group = info.annotation
        if isinstance(group, type) and issubclass(group, BaseModel):
            for sub in group.model_fields:
                names[f"FW_{name.upper()}__{sub.upper()}"] = (name, sub)
    for alias, path in _ALIASES.items():
        names[alias] = path
    return names


def _unknown(name: str, valid: list[str], where: str) -> ConfigError:
    close = difflib.get_close_matches(name, valid, n=1, cutoff=0.6)
    hint = f"did you mean {close[0]}?" if close else "`fusionwatch config` lists every setting with its variable"
    return ConfigError(f"{name} ({where}) is not a fusionwatch setting; {hint} Fix or remove it.")


def check_environment(environ: Mapping[str, str] | None = None) -> None:
    """Refuse FW_* variables that set nothing: a misspelt one would otherwise be silently ignored."""
    environ = os.environ if environ is None else environ
    valid = setting_names()
    for key in sorted(environ):
        name = key.upper()
        if (not name.startswith("FW_") or name in valid or name in _OTHER_VARIABLES
                or name.startswith(_OTHER_PREFIXES + _CHANNEL_PREFIXES)):
            continue
        raise _unknown(name, sorted(valid), "environment variable")


def _check_toml_keys(data: dict[str, Any], path: str) -> None:
    valid = set(setting_names().values())
    groups = {p[0] for p in valid if len(p) == 2}
    dotted = sorted(".".join(p) for p in valid)
    for key, value in data.items():
        paths = [(key, sub) for sub in value] if key in groups and isinstance(value, dict) else [(key,)]
        for p in paths:
            if p not in valid:
                raise _unknown(".".join(p), dotted, f"in {path}")


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    check_environment()
    try:
        return Settings()
    except ConfigError:
        raise
    except Exception as e:  # pydantic ValidationError: re-raise as our own with the full story
        raise ConfigError(f"invalid configuration:\n{e}") from None


def masked_dump(settings: Settings) -> dict[str, Any]:
    """Effective settings as plain data, secrets shown as '**********'."""
    data = settings.model_dump(mode="json")  # SecretStr serialises masked in json mode
    # a database URL may carry a password (postgresql://user:pw@host/db): mask it too
    data["database"]["url"] = _mask_url_password(data["database"]["url"])
    return data


def _mask_url_password(url: str) -> str:
    from services.db import safe_url

    return safe_url(url)
