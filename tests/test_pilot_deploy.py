"""Ingest in the deployments: Compose's ingest services per modality and Kafka's advertised
listener as a setting (docs/production.md, "Remote gateways"), the Kubernetes ingest Deployments,
and the `fusionwatch ingest sources` command they run, against the real broker."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import yaml

from schemas.envelope import wav_bytes
from tests.test_deploy import DEPLOY, K8S, compose_config, docker_compose, load_all

ROOT = Path(__file__).resolve().parents[1]


def _compose(**env: str) -> dict:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("POSTGRES_", "GRAFANA_", "FW_", "KAFKA_"))}
    proc = subprocess.run([docker_compose(), "-f", str(DEPLOY / "compose.yaml"), "--env-file",
                           str(DEPLOY / "example.env"), "config", "--format", "json"],
                          capture_output=True, text=True, timeout=60, env={**base, **env})
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)["services"]


def test_compose_runs_one_ingest_per_modality_from_a_mounted_sources_file_when_asked():
    assert not [s for s in json.loads(compose_config().stdout)["services"] if s.startswith("ingest")]  # off by default
    services = _compose(COMPOSE_PROFILES="ingest", SOURCES_FILE="/srv/pilot/sources.toml")
    for kind in ("cameras", "microphones", "logs"):
        svc = services[f"ingest-{kind}"]
        assert svc["command"] == ["ingest", "sources", "/etc/fusionwatch/sources.toml", "--kind", kind]
        mounts = {v["target"]: v for v in svc["volumes"]}
        assert mounts["/etc/fusionwatch/sources.toml"]["source"] == "/srv/pilot/sources.toml"
        assert mounts["/etc/fusionwatch/sources.toml"]["read_only"] is True
        assert set(svc["depends_on"]) == {"kafka-init"}  # a producer: no database, no migration to wait for
        assert svc["environment"]["FW_KAFKA_BOOTSTRAP"] == "kafka:9092" and svc["restart"] == "unless-stopped"
    logs = {v["target"]: v for v in services["ingest-logs"]["volumes"]}
    assert logs["/var/lib/fusionwatch"]["source"] == "fw-var"  # the follow positions outlive the container
    assert logs["/var/log/plc"]["read_only"] is True


def test_compose_advertises_kafka_where_remote_gateways_can_reach_it():
    kafka = _compose()["kafka"]
    assert kafka["environment"]["KAFKA_ADVERTISED_LISTENERS"].endswith(",EXTERNAL://127.0.0.1:29092")
    assert [(p["host_ip"], p["published"], p["target"]) for p in kafka["ports"]] == [("127.0.0.1", "29092", 29092)]
    kafka = _compose(KAFKA_ADVERTISED_HOST="fusionwatch-l3.plant.local", KAFKA_EXTERNAL_BIND="10.20.0.5",
                     KAFKA_EXTERNAL_PORT="39092")["kafka"]
    listeners = dict(x.split("://") for x in kafka["environment"]["KAFKA_ADVERTISED_LISTENERS"].split(","))
    assert listeners == {"INTERNAL": "kafka:9092", "EXTERNAL": "fusionwatch-l3.plant.local:39092"}
    assert [(p["host_ip"], p["published"], p["target"]) for p in kafka["ports"]] == [("10.20.0.5", "39092", 29092)]
    assert kafka["environment"]["KAFKA_LISTENERS"].endswith("EXTERNAL://:29092")  # inside, the port stays


def test_k8s_ingest_deployments_read_their_sources_from_the_configmap(monkeypatch):
    from services.stack.sources import SOURCE_KINDS, load_sources

    docs = {(d["kind"], d["metadata"]["name"]): d for d in load_all(K8S / "ingest.yaml")}
    cm = docs[("ConfigMap", "fusionwatch-sources")]
    secrets = {d["metadata"]["name"]: d for d in load_all(K8S / "secret.yaml")}
    for kind in ("cameras", "microphones"):
        d = docs[("Deployment", f"fusionwatch-ingest-{kind}")]
        assert d["spec"]["replicas"] == 1 and d["spec"]["strategy"]["type"] == "Recreate"  # never two readers
        pod = d["spec"]["template"]["spec"]
        c = pod["containers"][0]
        args = c["args"]
        assert args[:2] == ["ingest", "sources"] and args[args.index("--kind") + 1] == kind and kind in SOURCE_KINDS
        mount = next(m for m in c["volumeMounts"] if args[2].startswith(m["mountPath"] + "/"))
        volume = next(v for v in pod["volumes"] if v["name"] == mount["name"])
        assert volume["configMap"]["name"] == "fusionwatch-sources" and Path(args[2]).name in cm["data"]
        refs = [e.get("configMapRef", e.get("secretRef")) for e in c["envFrom"]]
        assert {"name": "fusionwatch-config"} in refs
        assert {"name": "fusionwatch-camera-credentials", "optional": True} in refs
        for e in c["env"]:
            ref = e["valueFrom"]["secretKeyRef"]
            assert ref["key"] in secrets[ref["name"]]["stringData"]
        assert pod["securityContext"]["runAsNonRoot"] and c["securityContext"]["readOnlyRootFilesystem"]
        assert {m["mountPath"] for m in c["volumeMounts"]} >= {"/var/lib/fusionwatch", "/tmp"}
    kust = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    assert "ingest.yaml" in kust["resources"]
    # the shipped sources.toml is a valid one
    monkeypatch.setenv("CAM_L1S1_PASSWORD", "x")
    path = Path(os.environ.get("TMPDIR", "/tmp")) / f"fw-k8s-sources-{os.getpid()}.toml"
    path.write_text(cm["data"]["sources.toml"])
    try:
        assert load_sources(path).count() == 2
    finally:
        path.unlink()


def test_ingest_sources_runs_one_kind_of_a_sources_file_until_its_recordings_end(broker, make_topics, tmp_path):
    from tests.test_simulator import read_topics

    ks, topics = make_topics(partitions=2)
    t = np.arange(16000 * 3) / 16000
    (tmp_path / "mic.wav").write_bytes(wav_bytes(0.2 * np.sin(2 * np.pi * 220 * t), 16000))
    (tmp_path / "plc.log").write_text("INFO cycle done\n")
    (tmp_path / "sources.toml").write_text('replay_speed = 4\n[assets.P2-S1]\n[[assets.P2-S1.microphones]]\n'
                                           'url = "mic.wav"\n[[assets.P2-S1.logs]]\npath = "plc.log"\n')
    env = {**os.environ, "COLUMNS": "200", "FW_KAFKA__TOPIC_PREFIX": ks.topic_prefix,
           "FW_KAFKA__PARTITIONS": str(ks.partitions), "FW_VAR_DIR": str(tmp_path / "var")}

    def ingest(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "services.cli", "ingest", "sources", str(tmp_path / "sources.toml"),
                               *args, "--bootstrap", broker.bootstrap], cwd=ROOT, env=env, capture_output=True,
                              text=True, timeout=120)

    done = ingest("--kind", "microphones")  # the log is not followed: only the recording runs, and ends
    assert done.returncode == 0, done.stderr[-3000:]
    assert "ingesting 1 sources: P2-S1-microphone0" in done.stderr
    got = read_topics(broker.bootstrap, ks, topics, 6, timeout_s=30)
    assert sorted({m.topic for m in got}) == [topics.audio] and len(got) == 6  # 3 s in 0.5 s chunks
    bad = ingest("--kind", "videos")
    assert bad.returncode == 2 and "error: --kind 'videos': use cameras, microphones, logs" in bad.stderr, bad.stderr
    assert "Traceback" not in bad.stderr

