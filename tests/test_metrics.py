"""Prometheus metrics (``--metrics``): the cardinality rule by hand, then the tracker's
``/metrics`` against a workload it knows exactly, read with promtool, prometheus_client's own
parsers and a real Prometheus server."""

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

import dashboard
from support import ROOT, Background, require_tool, skip_or_fail
from programs.execve import parse_args
from programs.metrics import OTHER, NameSeries, listen_address
from pybpf import syscalls
from workload import (WORKLOAD_UID, Programs, free_port, shell_as_workload_user,
                      tracker_command, wait_for)

TEXT = "text/plain; version=0.0.4; charset=utf-8"
OPENMETRICS = "application/openmetrics-text; version=1.0.0; charset=utf-8"


# --- pure: the rule that keeps execs_total{comm} bounded and monotonic --------------------


def test_names_beyond_the_top_count_under_other():
    series = NameSeries(top=2)
    assert series.update({b"a": 5, b"b": 3, b"c": 1}, overflow=0) == {"a": 5, "b": 3, "other": 1}


def test_a_name_that_enters_the_top_starts_at_zero_and_other_keeps_what_it_had():
    series = NameSeries(top=1)
    assert series.update({b"a": 4, b"b": 3}, overflow=0) == {"a": 4, "other": 3}
    # b overtakes a: b's series starts with the execs seen from now on; a stops being shown
    assert series.update({b"a": 4, b"b": 8}, overflow=0) == {"b": 5, "other": 3}
    # a comes back on top: it resumes from its value, nothing went down anywhere
    assert series.update({b"a": 20, b"b": 9}, overflow=0) == {"a": 20, "other": 4}


def test_every_series_only_grows_and_all_sum_to_the_total():
    series = NameSeries(top=2)
    execs = b"abcabcddddcccbbbbbbbaeeeeeeeeee"  # 31 execs; the leaders change four times
    counts, values = {}, {}
    for step, name in enumerate(execs):
        counts[bytes([name])] = counts.get(bytes([name]), 0) + 1
        shown = series.update(counts, overflow=step // 7)  # and 4 names the map could not hold
        for label, value in shown.items():
            assert value >= values.get(label, 0), (step, label)
            values[label] = value
    hidden = sum(value for name, value in series.series.items() if name.decode() not in shown)
    assert sorted(shown) == ["b", "e", "other"]
    assert sum(shown.values()) + hidden == 31 + 4


def test_a_process_named_other_is_counted_under_other():
    assert NameSeries(top=5).update({b"other": 2, b"x": 1}, overflow=3) == {"x": 1, "other": 5}


def test_names_that_are_not_utf8_are_labels_that_read_back():
    assert NameSeries(top=1).update({b"bad\xff": 1}, overflow=0) == {"bad\\xff": 1, "other": 0}


@pytest.mark.parametrize("text, address", [
    ("9469", ("127.0.0.1", 9469)), ("0.0.0.0:9469", ("0.0.0.0", 9469)),
    ("[::1]:9469", ("::1", 9469)), ("localhost:0", ("localhost", 0)),
])
def test_listen_addresses(text, address):
    assert listen_address(text) == address


@pytest.mark.parametrize("text", ["", "x", "::1:9469", "1.2.3.4:", "70000", "[::1]", ":9469",
                                  "a:b:9469", "9469 "])
def test_bad_listen_addresses_are_usage_errors(text, capsys):
    with pytest.raises(SystemExit) as exc:
        parse_args(["--metrics", text])
    assert exc.value.code == 2
    assert "--metrics" in capsys.readouterr().err


def test_without_prometheus_client_one_line_says_how_to_install_it():
    code = ("import sys; sys.modules['prometheus_client'] = None\n"
            "from programs.execve import main\nsys.exit(main(['--metrics', '0']))\n")
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 1 and result.stdout == ""
    assert result.stderr.count("\n") == 1, result.stderr
    assert "pip install pybpf[metrics]" in result.stderr
    assert "apt-get install python3-prometheus-client" in result.stderr


# --- kernel: the tracker's /metrics -------------------------------------------------------


def _client():
    try:
        import prometheus_client
    except ImportError:
        skip_or_fail("prometheus_client is not installed (pip install prometheus-client)")
    return prometheus_client


class MetricsTracker(Background):
    """The tracker with ``--metrics 127.0.0.1:0`` and ``--uid WORKLOAD_UID`` in the
    background; :attr:`url` is where it serves."""

    def __init__(self, *args):
        self.proc = subprocess.Popen(
            tracker_command("--metrics", "127.0.0.1:0", "--uid", str(WORKLOAD_UID), *args),
            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        stream = self.proc.stderr if "--events" in args or "--json" in args else self.proc.stdout
        deadline = time.monotonic() + 30
        self.url = None
        seen = ""
        while self.url is None:
            line = stream.readline()
            seen += line
            found = re.search(r"Serving metrics on (http://\S+)", line)
            if found:
                self.url = found.group(1)
            elif not line or time.monotonic() > deadline:
                self.proc.kill()
                pytest.fail(f"the tracker did not serve metrics: {seen}{self.proc.stderr.read()}")

    def scrape(self, accept=None):
        """(content type, body) of one GET of /metrics."""
        request = urllib.request.Request(self.url, headers={"Accept": accept} if accept else {})
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.headers["Content-Type"], response.read().decode()

    def samples(self, accept=None):
        """{(name, labels as a sorted tuple): value} of one scrape, read with
        prometheus_client's parser of the format served."""
        content_type, body = self.scrape(accept)
        if content_type.startswith("application/openmetrics-text"):
            from prometheus_client.openmetrics.parser import text_string_to_metric_families
        else:
            from prometheus_client.parser import text_string_to_metric_families
        return {(s.name, tuple(sorted(s.labels.items()))): s.value
                for family in text_string_to_metric_families(body) for s in family.samples}

    def stop(self):
        self.proc.send_signal(signal.SIGINT)
        out, err = self.proc.communicate(timeout=30)
        assert self.proc.returncode == 0, err
        assert "Traceback" not in err
        return out, err


def _workload(programs, runs=3):
    """As the workload user: setpriv execs sh (1 exec of sh), sh runs ``mtrue`` ``runs``
    times, fails twice with ENOENT and once with EACCES (those three count for sh, the
    caller, which keeps its name). 3 + runs processes exec, plus sh itself."""
    shell_as_workload_user(
        f"for i in {' '.join(['x'] * runs)}; do {programs / 'mtrue'}; done; "
        f"{programs / 'missing'} 2>/dev/null; {programs / 'missing'} 2>/dev/null; "
        f"{programs.not_executable} 2>/dev/null; exit 0")


def _ours(samples, name):
    return {labels: value for (metric, labels), value in samples.items() if metric == name}


@pytest.mark.kernel
def test_metrics_count_a_known_workload_exactly_in_both_formats():
    _client()
    with Programs("mtrue") as programs, \
            MetricsTracker("--metrics-top", "1", "--max-pids", "64", "-interval", "3600") \
            as tracker:
        _workload(programs)
        for accept in (None, OPENMETRICS):
            samples = tracker.samples(accept)
            # the first scrape saw sh (4) on top and mtrue (3) under other
            assert _ours(samples, "execve_tracker_execs_total") == {
                (("comm", "sh"),): 4, (("comm", OTHER),): 3}
            assert _ours(samples, "execve_tracker_exec_failures_total") == {
                (("errno", "ENOENT"),): 2, (("errno", "EACCES"),): 1}
            assert samples[("execve_tracker_untracked_execs_total", ())] == 0
            assert samples[("execve_tracker_events_lost_total", ())] == 0
            # sh, three mtrue children, three children whose exec failed
            assert samples[("execve_tracker_tracked_processes", ())] == 7
            assert samples[("execve_tracker_max_processes", ())] == 64
        # mtrue (8) overtakes sh (5): its series starts with the 5 new execs, "other" keeps
        # the 3 it had and takes the new exec of sh, which left the top
        shell_as_workload_user(f"for i in 1 2 3 4 5; do {programs / 'mtrue'}; done")
        samples = tracker.samples()
        assert _ours(samples, "execve_tracker_execs_total") == {
            (("comm", "mtrue"),): 5, (("comm", OTHER),): 4}
        tracker.stop()


@pytest.mark.kernel
def test_the_content_type_follows_what_the_scraper_asks_for():
    _client()
    with Programs("mtrue") as programs, MetricsTracker() as tracker:
        _workload(programs, runs=1)
        text_type, text = tracker.scrape()
        open_type, openmetrics = tracker.scrape(OPENMETRICS)
        tracker.stop()
    assert text_type == TEXT
    # (prometheus_client before 0.20 names its OpenMetrics version 0.0.1, later ones 1.0.0)
    assert re.match(r"application/openmetrics-text; version=(1\.0\.0|0\.0\.1); charset=utf-8",
                    open_type), open_type
    assert openmetrics.endswith("# EOF\n") and "# EOF" not in text
    assert 'execve_tracker_execs_total{comm="mtrue"} 1.0' in text
    assert "# TYPE execve_tracker_execs counter" in openmetrics


@pytest.mark.kernel
def test_full_maps_count_untracked_execs_and_the_names_stay_exact():
    _client()
    with Programs("mtrue") as programs, \
            MetricsTracker("--max-pids", "2", "-interval", "3600") as tracker:
        _workload(programs)
        samples = tracker.samples()
        tracker.stop()
    assert _ours(samples, "execve_tracker_execs_total") == {
        (("comm", "sh"),): 4, (("comm", "mtrue"),): 3, (("comm", OTHER),): 0}
    assert samples[("execve_tracker_tracked_processes", ())] == 2
    assert samples[("execve_tracker_untracked_execs_total", ())] == 5  # 7 processes, 2 held


@pytest.mark.kernel
@pytest.mark.oracle
def test_promtool_finds_nothing_to_say():
    promtool = require_tool("promtool")
    _client()
    with Programs("mtrue") as programs, MetricsTracker("--events", "--json") as tracker:
        _workload(programs)
        body = tracker.scrape()[1]
        tracker.stop()
    # promtool reads the Prometheus text format (OpenMetrics is read by the real Prometheus
    # of the test below, and by prometheus_client's strict parser in the first test)
    checked = subprocess.run([promtool, "check", "metrics"], input=body, text=True,
                             capture_output=True, timeout=60)
    assert checked.returncode == 0 and checked.stdout + checked.stderr == "", \
        checked.stdout + checked.stderr
    assert "execve_tracker_execs_total" in body


@pytest.mark.kernel
@pytest.mark.oracle
def test_program_run_counts_lie_between_two_readings_of_bpftool():
    """With the kernel's BPF statistics on (BPF_ENABLE_STATS, only while our fd is open),
    each program's runs_total lies between bpftool's run_cnt before and after the scrape.
    bpf_stats_enabled shows the sysctl, which that fd does not change."""
    bpftool = require_tool("bpftool")
    _client()
    with Programs("mtrue") as programs, MetricsTracker() as tracker:
        sysctl = Path("/proc/sys/kernel/bpf_stats_enabled")
        around = [sysctl.read_text().strip()]  # (another program may turn it on meanwhile)
        before = tracker.samples()
        around.append(sysctl.read_text().strip())
        assert before[("execve_tracker_bpf_stats_enabled", ())] in {
            int(value != "0") for value in around}
        stats = syscalls.enable_stats()
        try:
            _workload(programs)
            first = _bpftool_runs(bpftool, tracker.proc.pid)
            samples = tracker.samples()
            last = _bpftool_runs(bpftool, tracker.proc.pid)
        finally:
            os.close(stats)
        tracker.stop()
    runs = _ours(samples, "execve_tracker_bpf_program_runs_total")
    # counting only (no events): the outcome programs, without the starts' enter_exec*
    assert {labels[0][1] for labels in runs} == set(first) == {
        "exec_success", "exec_failure", "execat_failure"}
    for (label,), value in runs.items():
        assert first[label[1]] <= value <= last[label[1]], label
    assert runs[(("program", "exec_failure"),)] >= 3
    assert samples[("execve_tracker_bpf_program_run_seconds_total",
                    (("program", "exec_success"),))] > 0


def _bpftool_runs(bpftool, pid):
    """run_cnt by program name of the programs process ``pid`` holds (their ids from its
    fds' /proc fdinfo), from bpftool."""
    ids = set()
    for fd in os.listdir(f"/proc/{pid}/fdinfo"):
        try:
            info = Path(f"/proc/{pid}/fdinfo/{fd}").read_text()
        except FileNotFoundError:  # closed since the listing (a scrape's socket): no program
            continue
        found = re.search(r"^prog_id:\s+(\d+)$", info, re.M)
        if found:
            ids.add(found.group(1))
    runs = {}
    for prog_id in ids:
        shown = json.loads(subprocess.run([bpftool, "-j", "prog", "show", "id", prog_id],
                                          capture_output=True, text=True, timeout=60,
                                          check=True).stdout)
        runs[shown["name"]] = shown.get("run_cnt", 0)
    return runs


PROMETHEUS_CONFIG = """
global:
  scrape_interval: 1s
  scrape_timeout: 1s
scrape_configs:
  - job_name: execve-tracker
    static_configs:
      - targets: ["{target}"]
"""


@pytest.mark.kernel
@pytest.mark.oracle
def test_a_real_prometheus_scrapes_the_series_with_their_values():
    prometheus = require_tool("prometheus")
    _client()
    with Programs("mtrue") as programs, MetricsTracker("-interval", "3600") as tracker, \
            Prometheus(prometheus, tracker.url) as server:
        server.query_until("up", lambda result: result and result[0]["value"][1] == "1")
        _workload(programs)
        execs = server.query_until(
            "execve_tracker_execs_total",
            lambda result: {r["metric"]["comm"]: r["value"][1] for r in result}
            == {"sh": "4", "mtrue": "3", "other": "0"})
        failures = server.query_until(
            "execve_tracker_exec_failures_total",
            lambda result: {r["metric"]["errno"]: r["value"][1] for r in result}
            == {"ENOENT": "2", "EACCES": "1"})
        # every query of the Grafana dashboard parses and finds its series
        board = dashboard.load()
        for query in dashboard.panel_queries(board) + dashboard.variable_queries(board):
            server.query_until(dashboard.substituted(query), bool)
        tracker.stop()
    assert all(r["metric"]["job"] == "execve-tracker" for r in execs + failures)


class Prometheus:
    """A Prometheus server on loopback, scraping ``target_url`` every second, with its data
    in a temporary directory; :meth:`query_until` asks its HTTP API."""

    def __init__(self, binary, target_url):
        target = urllib.parse.urlsplit(target_url).netloc
        self.dir = Path(tempfile.mkdtemp(prefix="pybpf-prometheus-"))
        (self.dir / "prometheus.yml").write_text(PROMETHEUS_CONFIG.format(target=target))
        self.port = free_port()
        self.log = open(self.dir / "log", "w+")
        self.proc = subprocess.Popen(
            [binary, f"--config.file={self.dir / 'prometheus.yml'}",
             f"--storage.tsdb.path={self.dir / 'data'}",
             f"--web.listen-address=127.0.0.1:{self.port}"],
            stdout=self.log, stderr=subprocess.STDOUT)

    def query(self, expression):
        """The result vector of an instant query (None while the server is not up)."""
        url = (f"http://127.0.0.1:{self.port}/api/v1/query?"
               + urllib.parse.urlencode({"query": expression}))
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                answer = json.load(response)
        except OSError:
            return None
        assert answer["status"] == "success", answer
        return answer["data"]["result"]

    def query_until(self, expression, condition, timeout=30):
        """The result of ``expression`` once ``condition(result)`` holds."""
        last = []

        def ready():
            assert self.proc.poll() is None, self._log()
            last[:] = [self.query(expression)]
            return last[0] if last[0] is not None and condition(last[0]) else None
        try:
            return wait_for(ready, timeout, f"Prometheus query {expression!r} to hold")
        except pytest.fail.Exception as exc:
            pytest.fail(f"{exc}; its last result: {last}", pytrace=False)

    def _log(self):
        self.log.seek(0)
        return self.log.read()[-3000:]

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.proc.terminate()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()
        shutil.rmtree(self.dir, ignore_errors=True)
