"""``python -m pybpf``: assemble, disassemble and test-run eBPF snippets.

    python -m pybpf asm [FILE] [-o OUT]        text -> one line per instruction (or raw bytes)
    python -m pybpf disasm FILE                raw instruction bytes (or FILE.o) -> listing
    python -m pybpf load FILE.o [--set NAME=VALUE]... [--interval N] [--event-type T]
                                load, attach, print events and maps (pybpf.runner)
    python -m pybpf run FILE.s [--data HEX] [--repeat N] [--type socket_filter]
                                [--verifier-log | --explain-verifier]
    python -m pybpf explain 'r1 = *(u32 *)(r6 + 8)' | 61 61 08 00 00 00 00 00 | FILE

Each subcommand is one function taking the parsed arguments; add one by writing the
function and registering its parser in :func:`build_parser`. Errors print as
``pybpf: <message>`` on stderr with exit status 1 (2 for usage errors), never a traceback;
a verifier rejection adds the verifier's log after that line. ``load`` runs until Ctrl+C or
SIGTERM and exits 0; Ctrl+C during any other command exits 130.
"""

from __future__ import annotations

import argparse
import os
import re
import sys

from pybpf.abi import ProgType
from pybpf.argtypes import name_value, positive_int, positive_seconds
from pybpf.asm import parse
from pybpf.asm.link import resolve
from pybpf.asm.text import format_insn
from pybpf.disasm import disassemble
from pybpf.errors import (
    AssemblerError, BPFError, DecodeError, ElfError, UsageError, VerifierError,
)
from pybpf.limits import (
    MAX_INSN_BYTES, MAX_INSNS, MAX_OBJECT_SIZE, MAX_SOURCE_SIZE, read_file, read_limited,
)
from pybpf.runner import DEFAULT_FREQUENCY


def _read_text(path):
    """Assembly source from a file or standard input (``-``): UTF-8, at most
    MAX_SOURCE_SIZE bytes (a bounded read: ``/dev/zero`` cannot exhaust memory)."""
    if path is None or path == "-":
        path = "standard input"
        data = read_limited(sys.stdin.buffer, MAX_SOURCE_SIZE, path, "assembly source",
                            AssemblerError)
    else:
        data = read_file(path, MAX_SOURCE_SIZE, "assembly source", AssemblerError)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise AssemblerError(f"{path} is not UTF-8 text (byte {exc.start})") from None


def cmd_asm(args):
    """Assemble a text file; print ``<hex bytes>  <text>`` per instruction, or write -o."""
    insns = resolve(parse(_read_text(args.file)))
    if args.output:
        with open(args.output, "wb") as out:
            out.write(b"".join(insn.encode() for insn in insns))
        return
    for insn in insns:
        print(f"{insn.encode().hex():<32}  {format_insn(insn)}")


def cmd_disasm(args):
    """Disassemble a file of raw instruction bytes, or an ELF object (``.o``), read once
    with a bounded read (the limit depends on which of the two the first bytes say)."""
    with open(args.file, "rb") as source:
        head = source.read(4)
        if head == b"\x7fELF":
            from pybpf.objdump import disassemble as objdump

            data = read_limited(source, MAX_OBJECT_SIZE, args.file, "an ELF object", ElfError,
                                head)
            sys.stdout.write(objdump(data, name=args.file))
            return
        what = (f"the instructions of one program (the kernel takes at most {MAX_INSNS:,}: "
                "BPF_COMPLEXITY_LIMIT_INSNS)")
        data = read_limited(source, MAX_INSN_BYTES, args.file, what, DecodeError, head)
    sys.stdout.write(disassemble(data, annotate=not args.no_annotate))


def cmd_load(args):
    """Load an ELF object, attach its programs, print its events and maps until Ctrl+C
    (:mod:`pybpf.runner`)."""
    from pybpf.runner import Options, run_object

    run_object(args.file, Options(
        knobs=args.set, event_type=args.event_type, interval=args.interval, pin=args.pin,
        cgroup=args.cgroup, interface=args.interface, frequency=args.frequency,
        attach=args.attach, per_cpu=args.per_cpu))


def cmd_run(args):
    """Load a text snippet as a program and run it once (or N times) with BPF_PROG_TEST_RUN.

    ``--verifier-log`` prints the verifier's log first, ``--explain-verifier`` the program
    with the verifier's state after each instruction (:func:`pybpf.verifier.interleave`).
    """
    from pybpf.program import Program  # the loader needs bpf(); imported only to run

    insns = parse(_read_text(args.file))
    prog_type = ProgType[args.type.upper()]
    log_level = 2 if args.verifier_log or args.explain_verifier else 0
    with Program.from_instructions(insns, prog_type, log_level=log_level) as prog:
        if args.verifier_log:
            print(prog.verifier_log.rstrip("\n"))
        elif args.explain_verifier:
            from pybpf.verifier import interleave

            sys.stdout.write(interleave(insns, prog.verifier_log))
        result = prog.test_run(data=args.data, repeat=args.repeat)
    print(f"r0 = {result.retval:#x} ({result.retval})")
    runs = "1 run" if args.repeat == 1 else f"mean of {args.repeat} runs"
    print(f"duration = {result.duration_ns} ns ({runs})")


def cmd_explain(args):
    """Explain one instruction (text or hex bytes) or annotate a whole program (a file)."""
    from pybpf import explain

    words = args.what
    if len(words) == 1 and (os.path.exists(words[0]) or re.search(r"[./]", words[0])
                            and " " not in words[0]):
        sys.stdout.write(_explain_file(words[0]))  # a word like a path: a file, or no such
    elif explain.is_hex(words):
        sys.stdout.write(_explain_decoded(explain.decode(bytes.fromhex("".join(words)))))
    else:
        sys.stdout.write(_explain_insns(parse("\n".join(words))))


def _explain_file(path):
    """The annotated programs of a file: an ELF object, raw instruction bytes (they hold
    NUL bytes, text does not), or assembly text (a listing, the tracker's ``--dump``)."""
    from pybpf import explain

    data = read_file(path, MAX_OBJECT_SIZE, "a file to explain", UsageError)
    if data.startswith(b"\x7fELF"):
        from pybpf.elf import load_spec

        programs = [(f"{name} ({spec.section})", spec.insns)
                    for name, spec in load_spec(data).programs.items()]
    elif b"\0" in data:
        return _explain_decoded(explain.decode(data))
    else:
        programs = [(name, parse(text)) for name, text in
                    explain.split_programs(data.decode("utf-8", "replace"))]
    if len(programs) == 1 and programs[0][0] is None:
        return _explain_insns(programs[0][1])
    return "\n".join(f"{name}:\n{_explain_insns(insns)}" for name, insns in programs)


def _explain_insns(insns):
    """One instruction's full explanation, or a program's annotated listing."""
    from pybpf import explain

    if len(insns) == 1 and insns[0].ref is None:
        return explain.explain(insns[0])
    return explain.annotate(insns)


def _explain_decoded(decoded):
    """Instructions read from bytes: one explained in full, a valid program annotated, and a
    program holding bytes the kernel would refuse explained one instruction at a time."""
    from pybpf import explain
    from pybpf.asm.insn import check

    length = sum(d.insn.slots for d in decoded)
    if len(decoded) == 1:
        return explain.explain(decoded[0].insn, raw=decoded[0].raw)
    if all(check(d.insn) is None and not any(d.raw[8:12]) for d in decoded):
        return explain.annotate([d.insn for d in decoded])
    out, slot = [], 0
    for insn, raw in decoded:
        out.append(f"slot {slot}: " + explain.explain(insn, slot, length, raw))
        slot += insn.slots
    return "\n".join(out)


def build_parser():
    parser = argparse.ArgumentParser(prog="python -m pybpf", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)

    asm = commands.add_parser("asm", help="assemble llvm-objdump style text")
    asm.add_argument("file", nargs="?", help="source file (default: stdin)")
    asm.add_argument("-o", "--output", help="write the raw instruction bytes to this file")
    asm.set_defaults(func=cmd_asm)

    dis = commands.add_parser("disasm", help="disassemble raw instruction bytes")
    dis.add_argument("file")
    dis.add_argument("--no-annotate", action="store_true", help="no helper names after calls")
    dis.set_defaults(func=cmd_disasm)

    load = commands.add_parser(
        "load", help="load, attach and watch a clang-built object",
        description="Load a BPF object as a libbpf-based tool would: set its knobs, attach "
        "every program by its section name, print the events of its ring and perf buffers "
        "as they come (decoded with the object's BTF), and its maps (non-zero entries, log2 "
        "histograms as bar charts) every --interval seconds and on exit. Ctrl+C detaches "
        "and exits.")
    load.add_argument("file", help="BPF ELF object (clang -O2 -g -target bpf -c)")
    load.add_argument("--set", action="append", default=[], type=name_value,
                      metavar="NAME=VALUE", help="set global variable NAME (a const volatile "
                      "knob, or a .data/.bss variable) before loading; repeatable")
    load.add_argument("--event-type", metavar="'struct NAME'", help="the type of the event "
                      "records (MAP='struct NAME' for one map); default: the one struct of "
                      "the size the programs output")
    load.add_argument("--interval", type=positive_seconds, metavar="N",
                      help="print the maps every N seconds (default: only on exit)")
    load.add_argument("--per-cpu", action="store_true",
                      help="show per-CPU maps' values CPU by CPU besides their sum")
    load.add_argument("--attach", action="append", default=[], type=name_value,
                      metavar="PROG=SECTION", help="attach program PROG as if its section "
                      "were SECTION (e.g. probe=uprobe//usr/bin/bash:readline); repeatable")
    load.add_argument("--cgroup", metavar="DIR", help="attach the cgroup programs to this "
                      "cgroup v2 directory")
    load.add_argument("--interface", metavar="IFACE", help="attach the XDP and tcx programs "
                      "to this network interface")
    load.add_argument("--frequency", type=positive_int, default=DEFAULT_FREQUENCY,
                      metavar="HZ", help="perf_event programs sample every CPU's clock this "
                      f"many times a second (default {DEFAULT_FREQUENCY})")
    load.add_argument("--pin", metavar="DIR", help="pin maps, programs and links under DIR "
                      "(on a bpf file system) and leave them after exit")
    load.set_defaults(func=cmd_load)

    run = commands.add_parser("run", help="load a snippet and run it with BPF_PROG_TEST_RUN")
    run.add_argument("file", help="assembly source (- for stdin)")
    run.add_argument("--data", type=bytes.fromhex, default=bytes(64), metavar="HEX",
                     help="packet bytes in hex, from the Ethernet header on (default 64 "
                     "zeros); a socket filter sees them from byte 14")
    run.add_argument("--repeat", type=positive_int, default=1)
    run.add_argument("--type", default="socket_filter",
                     choices=[t.name.lower() for t in ProgType if t != ProgType.UNSPEC])
    shown = run.add_mutually_exclusive_group()
    shown.add_argument("--verifier-log", action="store_true",
                       help="print the verifier's log (log_level 2) before running")
    shown.add_argument("--explain-verifier", action="store_true",
                       help="print the program with what the verifier knew after each "
                       "instruction, on each path it followed, before running")
    run.set_defaults(func=cmd_run)

    explain = commands.add_parser(
        "explain", help="explain an instruction: its bits, meaning and verifier checks",
        description="Explain one instruction, given as text ('r1 = *(u32 *)(r6 + 8)') or "
        "as hex bytes (61 61 08 00 00 00 00 00): its encoding field by field, its meaning "
        "(RFC 9669) and what the verifier checks. Given a file (assembly text, a listing, "
        "the tracker's --dump, raw bytes or a clang object), annotate every instruction.")
    explain.add_argument("what", nargs="+", metavar="INSN|HEX|FILE")
    explain.set_defaults(func=cmd_explain)
    return parser


def main(argv=None):
    """Run the command line; returns the exit status."""
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except KeyboardInterrupt:  # Ctrl+C outside load's loop: 128 + SIGINT, as shells say
        return 130
    except (BPFError, OSError, ValueError) as exc:
        explaining = getattr(args, "explain_verifier", False) and getattr(exc, "insns", None)
        if isinstance(exc, VerifierError) and exc.log:
            exc.log_hint = "rerun with --verifier-log" if explaining else "below"
        print(f"pybpf: {exc}", file=sys.stderr)
        if isinstance(exc, VerifierError) and exc.log:
            if explaining:
                from pybpf.verifier import interleave

                sys.stderr.write(interleave(exc.insns, exc.log, exc.summary))
            else:
                print(exc.log.rstrip("\n"), file=sys.stderr)
        return 1
    return 0
