"""Prometheus metrics of the tracker: ``--metrics [ADDR:]PORT`` serves ``/metrics``.

The metrics are read from the BPF maps when Prometheus scrapes (a custom collector, as
ebpf_exporter does), never on a timer, so a scrape sees the kernel's counts of that moment.
``prometheus_client`` (an optional extra: ``pip install pybpf[metrics]``) writes the text
format, or OpenMetrics when the scraper's ``Accept`` header asks for it.

The per-name and per-errno counts come from the kernel's ``comm_execs`` and ``exec_errnos``
maps (:mod:`programs.events_bpf`), which only grow: forgetting exited processes does not touch
them. A label per process name would let any user create series at will, so only the
``--metrics-top N`` busiest names get their own series and the rest are counted under
``comm="other"`` (:class:`NameSeries` keeps every series monotonic).
"""

import errno
import os
import platform
import socket
import threading
from typing import Dict, Optional, Tuple

from pybpf import __version__
from pybpf.errors import DependencyError, UsageError

from . import events_bpf
from .output import json_text

PREFIX = "execve_tracker_"
OTHER = "other"
DEFAULT_TOP = 20
BPF_STATS_SYSCTL = "/proc/sys/kernel/bpf_stats_enabled"

EXECS_HELP = (
    "Executions (execve and execveat, successful or not) by process name: the new program's "
    "after a success, the caller's after a failure. Only the --metrics-top busiest names (by "
    "executions since start) have a series; each execution is added to its name's series if "
    "the name is among them when a scrape first sees it, else to the series of comm other. Every "
    "series only grows and together they sum to all executions: a name that enters the top "
    "starts at 0 (its earlier executions stay in other); a name that leaves it stops "
    "being exported and resumes from its value if it comes back.")
RUN_HELP_OFF = (" Counted only while the kernel's BPF statistics are on: sysctl "
                "kernel.bpf_stats_enabled=1 (execve_tracker_bpf_stats_enabled), or while a "
                "process holds a BPF_ENABLE_STATS fd (bpftool prog profile...).")


def listen_address(text) -> Tuple[str, int]:
    """``PORT`` (on 127.0.0.1), ``ADDR:PORT`` or ``[IPv6]:PORT`` as (host, port); port 0
    asks the kernel for a free one."""
    import argparse
    import re

    found = re.fullmatch(r"(?:\[([0-9A-Fa-f:.]+)\]:|([^:\[\]]+):)?(\d{1,5})", text)
    if found is None or int(found.group(3)) > 65535:
        raise argparse.ArgumentTypeError(
            f"{text!r}: give PORT, ADDR:PORT or [IPv6]:PORT (e.g. 9469, 0.0.0.0:9469, "
            f"[::1]:9469)")
    host = found.group(1) or found.group(2) or "127.0.0.1"
    return host, int(found.group(3))


def require_client():
    """The ``prometheus_client`` module, or a DependencyError saying how to install it."""
    try:
        import prometheus_client
    except ImportError:
        raise DependencyError(
            "--metrics needs the prometheus_client package: pip install pybpf[metrics] "
            "(or pip install prometheus-client; on Debian: apt-get install "
            "python3-prometheus-client)") from None
    return prometheus_client


class NameSeries:
    """The bounded-cardinality rule of ``execs_total{comm}``, on the kernel's counts by name.

    At each scrape the ``top`` names with the most executions since start are the ones
    exported. The executions a scrape sees for the first time (the growth of a name's count
    since the scrape before) go to the name's own series if it is among the top, else to
    ``other``. So each series only grows, ``other`` too, and all of them sum to the total:
    nothing moves between series, whatever enters or leaves the top. A process really named
    ``other`` is counted under ``other``.
    """

    def __init__(self, top):
        self.top = top
        self.seen: Dict[bytes, int] = {}  # the kernel's count of each name at the last scrape
        self.series: Dict[bytes, int] = {}  # what each name's own series holds
        self.other = 0
        self.overflow_seen = 0

    def update(self, counts: Dict[bytes, int], overflow: int) -> Dict[str, int]:
        """The series after a scrape: ``counts`` are the kernel's executions by name,
        ``overflow`` those of names its full map could not hold. Label value -> value."""
        ranked = sorted((name for name in counts if name != OTHER.encode()),
                        key=lambda name: (-counts[name], name))
        top = set(ranked[:self.top])
        for name, count in counts.items():
            growth = count - self.seen.get(name, 0)
            self.seen[name] = count
            if name in top:
                self.series[name] = self.series.get(name, 0) + growth
            else:
                self.other += growth
        self.other += overflow - self.overflow_seen
        self.overflow_seen = overflow
        shown = {json_text(name): self.series[name] for name in top}
        shown[OTHER] = self.other
        return shown


def errno_name(number):
    """``ENOENT`` for 2; ``E<n>`` for a number this system has no name for."""
    return errno.errorcode.get(number, f"E{number}")


def bpf_stats_enabled() -> Optional[bool]:
    """Whether sysctl ``kernel.bpf_stats_enabled`` is on (None when it cannot be read). The
    tracker never turns it on itself. (A process holding a BPF_ENABLE_STATS fd turns the
    counting on too, which the sysctl does not show.)"""
    try:
        with open(BPF_STATS_SYSCTL) as f:
            return f.read().strip() != "0"
    except OSError:
        return None


class TrackerCollector:
    """A prometheus_client collector that reads the tracker's maps at each scrape.

    ``tracker`` is a loaded :class:`programs.execve.Tracker` built with the metrics maps
    (``events_bpf.Options(metrics=True)``); ``top`` is ``--metrics-top``.
    """

    def __init__(self, tracker, top=DEFAULT_TOP):
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        self.counter, self.gauge = CounterMetricFamily, GaugeMetricFamily
        self.tracker = tracker
        self.maps = tracker.collection.maps
        self.names = NameSeries(top)
        self.lock = threading.Lock()  # one scrape at a time: NameSeries has state

    def collect(self):
        with self.lock:
            return list(self._families())

    def _families(self):
        counter, gauge = self.counter, self.gauge
        stats = dict(self.maps["stats"].lookup_batch())
        stat = {name: sum(stats.get(index, [0])) for index, name in enumerate(events_bpf.STATS)}
        counts = {bytes(key).rstrip(b"\0"): value
                  for key, value in self.maps["comm_execs"].lookup_batch()}
        execs = counter(PREFIX + "execs", EXECS_HELP, labels=["comm"])
        for name, value in sorted(self.names.update(counts, stat["names_full"]).items()):
            execs.add_metric([name], value)
        yield execs
        failures = counter(PREFIX + "exec_failures", "Failed executions by errno "
                           "(the name of -ret: ENOENT, EACCES...).", labels=["errno"])
        for number, value in self.maps["exec_errnos"].lookup_batch():
            if value:
                failures.add_metric([errno_name(number)], value)
        yield failures
        yield counter(PREFIX + "events_lost", "Exec events the full ring buffer could not "
                      "take (--events; the counts stay exact).", value=stat["events_lost"])
        yield counter(PREFIX + "untracked_execs", "Executions of processes the full "
                      "per-process maps could not hold (--max-pids); they are still counted "
                      "by name and errno.", value=sum(self.maps["dropped_execs"][0]))
        yield gauge(PREFIX + "tracked_processes", "Processes in the per-process maps now.",
                    value=len(self.maps["exec_count"].lookup_batch()))
        yield gauge(PREFIX + "max_processes", "Processes the per-process maps can hold "
                    "(--max-pids).", value=self.tracker.max_pids)
        yield from self._program_stats()
        yield self._build_info()

    def _program_stats(self):
        enabled = bpf_stats_enabled()
        note = "" if enabled else RUN_HELP_OFF
        seconds = self.counter(PREFIX + "bpf_program_run_seconds", "Time the kernel spent "
                               "running each of the tracker's BPF programs (bpf_prog_info "
                               "run_time_ns)." + note, labels=["program"])
        runs = self.counter(PREFIX + "bpf_program_runs", "Runs of each of the tracker's BPF "
                            "programs (bpf_prog_info run_cnt)." + note, labels=["program"])
        for name, program in sorted(self.tracker.collection.programs.items()):
            info = program.info()
            seconds.add_metric([name], info["run_time_ns"] / 1e9)
            runs.add_metric([name], info["run_cnt"])
        yield seconds
        yield runs
        if enabled is not None:
            yield self.gauge(PREFIX + "bpf_stats_enabled", "1 when sysctl "
                             "kernel.bpf_stats_enabled is on: the kernel counts BPF programs' "
                             "runs and run time (at some cost per run; the tracker never turns "
                             "it on). A process holding BPF_ENABLE_STATS turns the counting on "
                             "too without changing this.", value=int(enabled))

    def _build_info(self):
        info = self.gauge(PREFIX + "build_info", "Always 1: the tracker's version, Python and "
                          "kernel as labels.", labels=["version", "python", "kernel"])
        info.add_metric([__version__, platform.python_version(), os.uname().release], 1)
        return info


class MetricsServer:
    """``/metrics`` over HTTP in a background thread (one thread per request), for a
    collector; a context manager that stops the server when left."""

    def __init__(self, collector, address):
        client = require_client()
        from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server
        from socketserver import ThreadingMixIn

        registry = client.CollectorRegistry(auto_describe=False)
        registry.register(collector)
        client.ProcessCollector(registry=registry)  # process_*: the tracker's own CPU, memory
        app = client.make_wsgi_app(registry)
        host, port = address

        class Server(ThreadingMixIn, WSGIServer):
            daemon_threads = True
            address_family = socket.AF_INET6 if ":" in host else socket.AF_INET

        class Quiet(WSGIRequestHandler):
            def log_message(self, *args):
                pass  # no line on stderr per scrape

        try:
            self.httpd = make_server(host, port, app, Server, handler_class=Quiet)
        except OSError as exc:
            raise UsageError(f"--metrics {format_address(host, port)}: cannot listen there: "
                             f"{exc.strerror or exc}; choose another address or port") from None
        self.thread = threading.Thread(target=self.httpd.serve_forever, name="metrics",
                                       daemon=True)
        self.thread.start()

    @property
    def url(self):
        host, port = self.httpd.server_address[:2]
        return f"http://{format_address(host, port)}/metrics"

    def close(self):
        """Stop serving (waits for the serving thread) and close the socket."""
        if self.httpd is not None:
            self.httpd.shutdown()
            self.httpd.server_close()
            self.thread.join()
            self.httpd = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def format_address(host, port):
    """``host:port``, with an IPv6 host in brackets."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
