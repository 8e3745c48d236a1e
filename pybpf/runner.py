"""``python -m pybpf load``: run a BPF object the way a libbpf-based tool would, with no tool.

A tool built on libbpf (execsnoop, runqlat, profile...) is a BPF object plus a few hundred
lines of C that load it, set its knobs, attach its programs, then print what it reports. The
runner does that part for any object:

- **load** it (:mod:`pybpf.elf`, :class:`~pybpf.collection.Collection`), after setting the
  ``const volatile`` knobs and other globals given as ``--set NAME=VALUE``;
- **attach** every program by its section name (:mod:`pybpf.attach`); programs that attach
  to a target get it from an option (``--cgroup``, ``--interface``), perf_event programs
  sample the CPU clocks (``--frequency``), and ``--attach NAME=SECTION`` attaches a program
  as if its section were another (``uprobe`` sections name no binary);
- **print events** as they arrive from every ring buffer and perf buffer, decoded with the
  record's type from the object's BTF (``--event-type 'struct event'``; by default the one
  struct type of the size the programs output, when there is exactly one);
- **print the maps** every ``--interval`` seconds and at the end, compactly: the non-zero
  entries only, per-CPU values summed (``--per-cpu`` shows each CPU's), log2 histograms as
  the bar charts libbpf-tools print, the largest entries and a total for big maps; and the
  text iterators (``iter/...``) write;
- **stop** on Ctrl+C or SIGTERM: detach everything and exit 0.

Every failure is one line on stderr and exit status 1 (:func:`pybpf.cli.main`).
"""

from __future__ import annotations

import os
import re
import sys
from dataclasses import dataclass, field
from typing import List, Optional

from .abi import PSEUDO_MAP_FD, MapType, ProgType
from .asm import opcodes as oc
from .btf import BTF, Kind
from .btf.types import QUALIFIERS
from .errors import AttachError, BPFError, UsageError
from .helpers import HELPERS

DEFAULT_FREQUENCY = 49  # samples per second per CPU: libbpf-tools profile's default
MAX_SHOWN = 20  # entries printed per map; the rest are counted and totalled
EVENT_MAPS = (MapType.RINGBUF, MapType.PERF_EVENT_ARRAY)
_COUNT_ONLY = {  # map types whose values are fds, ids or stacks: listed by count
    MapType.PROG_ARRAY: "programs", MapType.ARRAY_OF_MAPS: "maps", MapType.HASH_OF_MAPS: "maps",
    MapType.CGROUP_ARRAY: "cgroups", MapType.STACK_TRACE: "stacks",
    MapType.DEVMAP: "devices", MapType.DEVMAP_HASH: "devices", MapType.CPUMAP: "CPUs",
    MapType.XSKMAP: "sockets", MapType.SOCKMAP: "sockets", MapType.SOCKHASH: "sockets"}
_NO_KEYS = (MapType.QUEUE, MapType.STACK, MapType.BLOOM_FILTER)
_HISTOGRAM_NAME = re.compile(r"hist|slot|dist|lat", re.I)
# helper: (argument register of the map, of the record's size)
_OUTPUT_HELPERS = {HELPERS["ringbuf_output"]: (1, 3), HELPERS["ringbuf_reserve"]: (1, 2),
                   HELPERS["perf_event_output"]: (2, 5)}
_CALL = oc.JMP | 0x80
_MOV_IMM = (oc.ALU64 | 0xB0 | oc.K, oc.ALU | 0xB0 | oc.K)


@dataclass
class Options:
    """What ``pybpf load`` was asked to do (see :func:`pybpf.cli.build_parser`)."""

    knobs: List[tuple] = field(default_factory=list)  # (name, text) of --set
    event_type: Optional[str] = None  # "struct event", or "map=struct event"
    interval: Optional[float] = None
    pin: Optional[str] = None
    cgroup: Optional[str] = None
    interface: Optional[str] = None
    frequency: int = DEFAULT_FREQUENCY
    attach: List[tuple] = field(default_factory=list)  # (program, section) of --attach
    per_cpu: bool = False


def run_object(source, options: Optional[Options] = None, out=None) -> int:
    """Load, attach and watch the object at ``source`` until Ctrl+C or SIGTERM; 0.

    A signal during loading or attaching ends the run once that step is done, cleanly.
    """
    from .collection import Collection
    from .elf import load_spec
    from .signals import StopSignal

    options = options or Options()
    out = out or sys.stdout
    spec = load_spec(source)
    for name, text in options.knobs:
        spec.set_variable(name, text)
    btf = BTF.parse(spec.btf) if spec.btf else None
    record_types = event_record_types(spec, btf, options.event_type)
    with StopSignal() as stop, Collection(spec) as coll, \
            _EventReaders(coll, record_types, out) as readers:
        links, iterators = [], {}  # (the readers are ready first: no early event is lost)
        try:
            if not stop.requested:
                _attach_everything(coll, options, links, iterators, out)
            if options.pin and not stop.requested:
                _pin_all(options.pin, coll, links, out)
            out.flush()
            _watch(stop, readers, options.interval, out,
                   lambda: _report(coll, iterators, options, out))
            _report(coll, iterators, options, out)
        finally:
            for link in links:
                link.close()
    return 0


# -- attaching ------------------------------------------------------------------------------

def _attach_everything(coll, options, links, iterators, out):
    """Attach each program as its section (or ``--attach``) says; one line per program, the
    ones that cannot be attached with the reason. AttachError when none could be."""
    from .attach import IterLink, attach, attach_cgroup, attach_tcx, attach_xdp
    from .probes import attach_perf_event

    overrides = dict(options.attach)
    unknown = sorted(set(overrides) - set(coll.programs))
    if unknown:
        raise UsageError(f"--attach names no program of the object: {', '.join(unknown)} "
                         f"(programs: {', '.join(coll.programs)})")
    failed = []
    for name, prog in coll.programs.items():
        section = overrides.get(name, prog.spec.section)
        try:
            if prog.type == ProgType.PERF_EVENT:
                made = attach_perf_event(prog, options.frequency)
                how = f"CPU clock at {options.frequency} Hz on {len(made)} CPUs"
            elif prog.type == ProgType.XDP and options.interface:
                made, how = [attach_xdp(prog, options.interface)], f"xdp on {options.interface}"
            elif prog.type == ProgType.SCHED_CLS and options.interface:
                link = attach_tcx(prog, options.interface)
                made, how = [link], link.description
            elif options.cgroup and _is_cgroup_program(prog):
                link = attach_cgroup(prog, options.cgroup)
                made, how = [link], link.description
            else:
                made, how = [attach(prog, section)], section
        except BPFError as exc:  # not attachable (here, or without a target): say why
            print(f"loaded {name} but did not attach it: {exc}", file=out)
            failed.append(name)
            continue
        links.extend(made)
        if isinstance(made[0], IterLink):
            iterators[name] = made[0]
        print(f"attached {name} ({how})", file=out)
    if failed and not links:
        raise AttachError(f"none of the programs could be attached ({', '.join(failed)}: "
                          f"the reasons are above)")
    print(f"running {len(coll.programs) - len(failed)} of {len(coll.programs)} programs; "
          f"Ctrl+C stops", file=out)


def _is_cgroup_program(prog):
    return prog.type in (ProgType.CGROUP_SKB, ProgType.CGROUP_SOCK, ProgType.CGROUP_SOCK_ADDR,
                         ProgType.CGROUP_DEVICE, ProgType.CGROUP_SYSCTL,
                         ProgType.CGROUP_SOCKOPT, ProgType.SOCK_OPS) or (
        prog.type == ProgType.LSM and prog.spec.section.startswith("lsm_cgroup"))


def _pin_all(directory, coll, links, out):
    os.makedirs(directory, exist_ok=True)
    for name, m in coll.maps.items():
        m.pin(os.path.join(directory, name))
    for name, program in coll.programs.items():
        program.pin(os.path.join(directory, name))
    for link in links:
        if link.id is not None:
            link.pin(os.path.join(directory, f"link_{link.id}"))
    print(f"pinned maps, programs and links under {directory}", file=out)


# -- the event records' type ----------------------------------------------------------------

def event_record_types(spec, btf, chosen=None):
    """``{event map name: BTF type id or None}``: how each ring/perf buffer's records are
    decoded. ``chosen`` (``"struct event"``, or ``"events=struct event"`` for one map) names
    the type; else it is guessed: the struct types of the object's BTF whose size is the
    size the programs output to that map (ringbuf_reserve/output, perf_event_output with a
    constant size), leaving out the kernel's types (CO-RE, program contexts). One candidate
    is used; none prints records as hex; several are a UsageError naming them."""
    event_maps = [name for name, m in spec.maps.items() if m.type in EVENT_MAPS]
    if not event_maps:
        if chosen:
            raise UsageError("--event-type: the object has no ring buffer or perf buffer")
        return {}
    wanted = {}
    if chosen:
        target, _, type_name = chosen.rpartition("=")
        if target and target not in event_maps:
            raise UsageError(f"--event-type {chosen!r}: {target!r} is not one of the object's "
                             f"event maps ({', '.join(event_maps)})")
        type_id = _named_type(btf, type_name.strip())
        wanted = {name: type_id for name in event_maps if not target or name == target}
    sizes = _output_sizes(spec)
    excluded = _kernel_types(spec, btf) if btf is not None else set()
    for name in event_maps:
        if name in wanted:
            continue
        candidates = _structs_sized(btf, sizes.get(name), excluded)
        if len(candidates) > 1:
            names = ", ".join(f"'struct {btf.name(c)}'" for c in candidates[:8])
            raise UsageError(f"the records of {name!r} could be any of {names}: choose with "
                             f"--event-type 'struct NAME' (or {name}=...)")
        wanted[name] = candidates[0] if candidates else None
    return wanted


def _named_type(btf, text):
    """The type id of ``struct NAME``, ``union NAME`` or ``NAME`` (a typedef or struct)."""
    if btf is None:
        raise UsageError("--event-type: the object has no BTF (build it with clang -g)")
    kind_word, _, name = text.partition(" ")
    kinds = {"struct": (Kind.STRUCT,), "union": (Kind.UNION,)}.get(kind_word)
    if kinds is None:
        name, kinds = text, (Kind.TYPEDEF, Kind.STRUCT, Kind.UNION)
    found = btf.find_all(name.strip(), kinds) if name.strip() else []
    if not found:
        known = sorted({btf.name(t) for t in btf.ids((Kind.STRUCT,)) if btf.name(t)})
        raise UsageError(f"--event-type {text!r}: no such type in the object's BTF; its "
                         f"structs: {', '.join(known[:12]) or 'none'} (a type the programs "
                         f"only use locally is not in BTF: declare a global pointer to it)")
    return found[0]


def _output_sizes(spec):
    """``{map name: {record sizes}}`` of the outputs the programs make with a constant size."""
    sizes = {}
    for prog in spec.programs.values():
        insns = prog.insns
        for index, insn in enumerate(insns):
            if insn.opcode == _CALL and insn.src == oc.CALL_HELPER and \
                    insn.imm in _OUTPUT_HELPERS:
                map_reg, size_reg = _OUTPUT_HELPERS[insn.imm]
                target = _last_value(insns, index, map_reg, "map")
                size = _last_value(insns, index, size_reg, "imm")
                if target is not None:
                    sizes.setdefault(target, set()).update([size] if size else [])
    return sizes


def _last_value(insns, index, reg, kind):
    """The map loaded into (``"map"``), or the constant moved into (``"imm"``), register
    ``reg`` (one of r1-r5) by the closest instruction before ``index`` that writes it;
    None when another instruction writes it, or a call before clobbers it."""
    for insn in reversed(insns[:index]):
        if insn.opcode == _CALL:
            return None
        if insn.dst != reg or insn.opcode & 0x07 in (oc.ST, oc.STX, oc.JMP, oc.JMP32):
            continue  # does not write the register
        if kind == "map" and insn.opcode == oc.LD_IMM64 and insn.src == PSEUDO_MAP_FD:
            return insn.ref
        if kind == "imm" and insn.opcode in _MOV_IMM:
            return insn.imm
        return None
    return None


def _kernel_types(spec, btf):
    """The ids of the kernel's types an object's BTF holds, which are never its records:
    the types its programs read with CO-RE relocations, the types their contexts point to,
    and every type reachable from those (members, pointers, arrays, typedefs)."""
    roots = [insn.core.type_id for prog in spec.programs.values() for insn in prog.insns
             if insn.core is not None]
    for func in btf.ids((Kind.FUNC_PROTO,)):
        roots.extend(param.type for param in btf.type(func).params)
    seen, todo = set(), [root for root in roots if root]
    while todo:
        type_id = todo.pop()
        if not type_id or type_id in seen:
            continue
        seen.add(type_id)
        t = btf.type(type_id)
        if t.kind in (Kind.STRUCT, Kind.UNION):
            todo.extend(member.type for member in t.members)
        elif t.kind == Kind.ARRAY:
            todo.append(t.array.type)
        elif t.kind == Kind.FUNC_PROTO:
            todo.extend(param.type for param in t.params)
            todo.append(t.type)
        elif t.kind == Kind.PTR or t.kind in QUALIFIERS:
            todo.append(t.type)
    return seen


def _structs_sized(btf, sizes, excluded):
    """Named structs of one of ``sizes`` (any size when unknown), not ``excluded``."""
    if btf is None:
        return []
    return [t for t in btf.ids((Kind.STRUCT,)) if btf.name(t) and t not in excluded
            and (not sizes or btf.size_of(t) in sizes)]


# -- events ---------------------------------------------------------------------------------

class _EventReaders:
    """A reader per event map (RingBuffer or PerfBuffer) printing each record as a line."""

    def __init__(self, coll, record_types, out):
        from .btf.values import construct_for
        from .perfbuf import PerfBuffer
        from .ringbuf import RingBuffer

        self.buffers = []
        self.out = out
        btf = BTF.parse(coll.spec.btf) if record_types and coll.spec.btf else None
        try:
            for name, type_id in record_types.items():
                m = coll.maps[name]
                decode = construct_for(btf, type_id) if type_id else None
                if decode is None:
                    print(f"{name}: records shown in hex: the object's BTF has no struct of "
                          f"their size (a type the programs only use locally is not in BTF: "
                          f"declare a global pointer to it)", file=out)
                reader = RingBuffer if m.type == MapType.RINGBUF else PerfBuffer
                buffer = reader(m)
                self.buffers.append((buffer, self._printer(name, decode, btf, type_id)))
        except BaseException:
            self.close()
            raise

    def _printer(self, name, decode, btf, type_id):
        out = self.out
        what = f"struct {btf.name(type_id)}" if type_id else None

        def show(record):
            if decode is None:
                print(f"{name}: {bytes(record).hex()}", file=out)
                return
            try:
                value = decode.parse(bytes(record))
            except Exception as exc:  # construct's errors: a record of another layout
                print(f"{name}: {bytes(record).hex()} (not a {what}: {exc})", file=out)
                return
            print(f"{name}: {format_fields(value)}", file=out)

        return show

    def close(self):
        for buffer, _ in self.buffers:
            buffer.close()
        self.buffers = []

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _watch(stop, readers, interval, out, report):
    """Print events as they come and call ``report`` every ``interval`` seconds, until a
    stop signal; ``out`` is flushed after each batch (a pipe would hold them back)."""
    import time

    from .events import Poller

    with Poller() as poller:
        poller.add(stop, lambda source: source.drain())
        for buffer, show in readers.buffers:
            poller.add(buffer, show)
        next_report = time.monotonic() + interval if interval else None
        while not stop.requested:
            timeout = None if next_report is None else max(0.0, next_report - time.monotonic())
            poller.poll(timeout)
            out.flush()
            if next_report is not None and time.monotonic() >= next_report \
                    and not stop.requested:
                report()
                next_report += interval
        for buffer, show in readers.buffers:  # what arrived before the signal, shown too
            buffer.consume(show)


# -- maps -----------------------------------------------------------------------------------

def _report(coll, iterators, options, out):
    """The maps, then the text of each iterator."""
    print_maps(coll.maps, out, per_cpu=options.per_cpu)
    for name, link in iterators.items():
        text = link.read_text()
        print(f"{name} ({link.description}):", file=out)
        for line in text.splitlines():
            print(f"  {terminal_safe(line)}", file=out)
    out.flush()


def print_maps(maps, out, per_cpu=False, limit=MAX_SHOWN):
    """Every map, compactly: non-zero entries, per-CPU values summed, log2 histograms as
    bar charts, at most ``limit`` entries (the largest) and a total."""
    for name, m in maps.items():
        if m.type in EVENT_MAPS:
            continue
        try:
            _print_map(name, m, out, per_cpu, limit)
        except BPFError as exc:  # a map user space cannot list (storage maps, queues...)
            print(f"{name} ({m.type_name}): cannot list ({exc})", file=out)


def _print_map(name, m, out, per_cpu, limit):
    if m.type in _NO_KEYS:
        print(f"{name} ({m.type_name}): no keys to list (its values are read by popping "
              f"or testing them)", file=out)
        return
    if m.type in _COUNT_ONLY:
        print(f"{name} ({m.type_name}): {len(m)} {_COUNT_ONLY[m.type]}", file=out)
        return
    items = list(m.items())
    percpu = m.type in (MapType.PERCPU_ARRAY, MapType.PERCPU_HASH, MapType.LRU_PERCPU_HASH)
    shown = [(key, _summed(value) if percpu else value, value) for key, value in items]
    nonzero = [entry for entry in shown if not _is_zero(entry[1])]
    header = f"{name} ({m.type_name}, {len(items)} entries, {len(nonzero)} non-zero)"
    if _is_log2_histogram(name, m, shown):
        print(header + ":", file=out)
        for line in log2_histogram([value for _, value, _ in shown], name):
            print(line, file=out)
        return
    if not nonzero:
        print(f"{header}", file=out)
        return
    print(header + ":", file=out)
    numbers = all(isinstance(value, int) for _, value, _ in nonzero)
    if len(nonzero) > limit and numbers:  # the largest first
        nonzero.sort(key=lambda entry: entry[1], reverse=True)
    for key, value, raw in nonzero[:limit]:
        slots = _slots_member(value)
        if slots is not None:
            print(f"  {format_value(key)}:", file=out)
            for line in log2_histogram(slots[1], slots[0]):
                print("  " + line, file=out)
            continue
        detail = f" (per CPU: {format_value(raw)})" if percpu and per_cpu else ""
        print(f"  {format_value(key)}: {format_value(value)}{detail}", file=out)
    if len(nonzero) > limit:
        rest = nonzero[limit:]
        total = f" (their values total {sum(value for _, value, _ in rest)})" if numbers else ""
        print(f"  ... {len(rest)} more non-zero entries{total}", file=out)


def _summed(values):
    """Per-CPU values added up: numbers, and structs member by member; else the list."""
    if all(isinstance(v, int) for v in values):
        return sum(values)
    if values and all(isinstance(v, dict) for v in values):
        keys = [k for k in values[0] if k != "_io"]
        if all(all(isinstance(v[k], int) for v in values) for k in keys):
            return {k: sum(v[k] for v in values) for k in keys}
    return values


def _is_zero(value):
    if isinstance(value, bool) or isinstance(value, int):
        return value == 0
    if isinstance(value, (bytes, bytearray)):
        return not any(value)
    if isinstance(value, str):
        return value == ""
    if isinstance(value, dict):
        return all(_is_zero(v) for k, v in value.items() if k != "_io")
    if isinstance(value, (list, tuple)):
        return all(_is_zero(v) for v in value)
    return False


def _is_log2_histogram(name, m, shown):
    """An array of counters named like a histogram (``hist``, ``slots``, ``latency``...):
    libbpf-tools keep log2 histograms so, one slot per power of two."""
    return (m.type in (MapType.ARRAY, MapType.PERCPU_ARRAY) and 8 <= len(shown) <= 64
            and bool(_HISTOGRAM_NAME.search(name))
            and all(isinstance(value, int) and not isinstance(value, bool)
                    for _, value, _ in shown))


def _slots_member(value):
    """``(name, counts)`` of a struct value holding a log2 histogram (libbpf-tools'
    ``struct hist { __u32 slots[N]; ... }``), else None."""
    if not isinstance(value, dict):
        return None
    for key, member in value.items():
        if key in ("slots", "hist", "buckets") and isinstance(member, list) and \
                len(member) >= 8 and all(isinstance(v, int) for v in member):
            return key, member
    return None


def log2_histogram(counts, label):
    """The lines of a log2 histogram as libbpf-tools' ``print_log2_hist()`` prints them:
    slot i counts values from 2**i to 2**(i+1)-1 (slot 0: 0 and 1), up to the last non-zero
    slot, each with a bar of up to 40 stars (20 past slot 32). Nothing for no counts."""
    last = max((i for i, count in enumerate(counts) if count > 0), default=-1)
    if last < 0:
        return []
    wide = last > 32
    most = max(counts)
    stars, width = (20, 20) if wide else (40, 10)
    lines = [" " * (15 if wide else 5) + label.ljust(29 if wide else 19)
             + " : count    distribution"]
    for i in range(last + 1):
        low, high = (1 << (i + 1)) >> 1, (1 << (i + 1)) - 1
        if low == high:
            low -= 1
        bar = "*" * (min(counts[i], most) * stars // most)
        lines.append(f"{low:>{width}} -> {high:<{width}} : {counts[i]:<8} |"
                     f"{bar.ljust(stars)}|")
    return lines


# -- values as text -------------------------------------------------------------------------

def format_fields(value):
    """A decoded record as ``name=value`` pairs (a struct), or its value."""
    if isinstance(value, dict):
        return " ".join(f"{k}={format_value(v)}" for k, v in value.items() if k != "_io")
    return format_value(value)


def format_value(value):
    """A key or value as text: structs as ``{a=1 b=2}``, lists in brackets, bytes in hex,
    strings quoted and escaped (a program fills them: nothing may reach the terminal as a
    control sequence)."""
    if isinstance(value, dict):
        return "{" + format_fields(value) + "}"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(format_value(v) for v in value) + "]"
    if isinstance(value, (bytes, bytearray)):
        return value.hex()
    if isinstance(value, str):
        return repr(value)
    return str(value)


def terminal_safe(text):
    """``text`` with control characters (but tabs) shown as escapes, for a terminal."""
    return "".join(c if c == "\t" or c.isprintable() else repr(c)[1:-1] for c in text)
