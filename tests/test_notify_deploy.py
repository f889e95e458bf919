"""deploy/ wiring of alert delivery: Alertmanager's config validates (amtool) and routes the system's
own alerts by severity, Prometheus sends to it, Compose runs the notifier (profile `notify`) and
Alertmanager, and the Kubernetes notifier's Secret parses into the notify settings."""

from __future__ import annotations

import json
import os
import shutil
import subprocess

import yaml

from tests.test_deploy import DEPLOY, K8S, PROM, compose_config, load_all, need

AMTOOL = shutil.which("amtool")
ALERTMANAGER = DEPLOY / "alertmanager" / "alertmanager.yml"


def amtool(*args: str) -> subprocess.CompletedProcess:
    proc = subprocess.run([need(AMTOOL, "amtool (Debian prometheus-alertmanager)"), *args],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc


def test_alertmanager_config_validates_and_pages_only_for_critical_alerts():
    amtool("check-config", str(ALERTMANAGER))
    rules = yaml.safe_load((PROM / "rules" / "fusionwatch.rules.yml").read_text())
    severities = {r["labels"]["severity"] for g in rules["groups"] for r in g["rules"] if "alert" in r}
    assert severities == {"warning", "critical"}
    route = {s: amtool("config", "routes", "test", f"--config.file={ALERTMANAGER}", f"severity={s}",
                       "alertname=FusionwatchServiceDown").stdout.split()[-1] for s in severities}
    assert route == {"critical": "pager", "warning": "ops"}


def test_prometheus_sends_alerts_to_the_compose_alertmanager():
    prom = yaml.safe_load((PROM / "prometheus.yml").read_text())
    targets = [t for am in prom["alerting"]["alertmanagers"] for sc in am["static_configs"] for t in sc["targets"]]
    assert targets == ["alertmanager:9093"]
    services = json.loads(compose_config().stdout)["services"]
    am = services["alertmanager"]
    assert am["image"].startswith("prom/alertmanager:")
    mounts = {v["target"]: v["source"] for v in am["volumes"] if v["type"] == "bind"}
    assert mounts["/etc/alertmanager/alertmanager.yml"] == str(ALERTMANAGER)
    assert "alertmanager" in services["prometheus"]["depends_on"]
    assert "notify" not in services  # off until someone configures channels


def test_compose_notifier_with_its_profile_runs_on_its_metrics_port(tmp_path):
    env_file = tmp_path / "compose.env"
    env_file.write_text((DEPLOY / "example.env").read_text() + "\nCOMPOSE_PROFILES=notify\n"
                        'NOTIFY_WEBHOOKS={"ops": {"url": "https://ops.example/hook", "secret": "0123456789abcdef0"}}\n'
                        'NOTIFY_RULES=[{"channels": ["ops"]}]\n')
    proc = compose_config(env_file)
    assert proc.returncode == 0, proc.stderr
    notify = json.loads(proc.stdout)["services"]["notify"]
    assert notify["command"] == ["notify"]
    assert "127.0.0.1:9404/readyz" in " ".join(notify["healthcheck"]["test"])
    assert notify["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
    from services.settings import Settings

    env = {k: v for k, v in notify["environment"].items() if k.startswith("FW_NOTIFY__")}
    old = {k: os.environ.get(k) for k in env}
    try:
        os.environ.update(env)
        assert Settings().notify.channels == ["ops"]
    finally:
        for k, v in old.items():
            os.environ.pop(k) if v is None else os.environ.__setitem__(k, v)


def test_k8s_notifier_secret_parses_into_channels_and_rules():
    from services.settings import NotifySettings

    docs = {d["kind"]: d for d in load_all(K8S / "notify.yaml")}
    data = docs["Secret"]["stringData"]
    notify = NotifySettings(webhooks=json.loads(data["webhooks"]), mqtt=json.loads(data["mqtt"]),
                            rules=json.loads(data["rules"]))
    assert notify.channels == ["ops", "plant"]
    env = {e["name"]: e for e in docs["Deployment"]["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert {env[k]["valueFrom"]["secretKeyRef"]["key"] for k in ("FW_NOTIFY__WEBHOOKS", "FW_NOTIFY__MQTT",
                                                                 "FW_NOTIFY__RULES")} == set(data)
    policy = docs["NetworkPolicy"]["spec"]
    assert policy["ingress"][0]["ports"] == [{"port": 9404, "protocol": "TCP"}]

