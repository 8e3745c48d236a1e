"""``python -m pybpf``: assemble, disassemble and test-run eBPF snippets.

    python -m pybpf asm [FILE] [-o OUT]        text -> one line per instruction (or raw bytes)
    python -m pybpf disasm FILE                raw instruction bytes (or FILE.o) -> listing
    python -m pybpf load FILE.o [--pin DIR] [--interval N]   load, attach, print maps
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
from pybpf.argtypes import positive_int, positive_seconds
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
    """Load an ELF object's maps and programs, attach them, print the maps until Ctrl+C."""
    run_object(args.file, pin=args.pin, interval=args.interval)


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


# -- python -m pybpf load -------------------------------------------------------------------

def run_object(source, *, pin=None, interval=None, out=None):
    """Load every map and program of an object, attach each by its section name, print the
    maps every ``interval`` seconds and on exit; run until Ctrl+C or SIGTERM.

    Programs that cannot be attached from their section name alone (xdp, socket...) are
    loaded and reported. With ``pin`` (a directory on a bpf file system) the maps, programs
    and links are pinned there and stay after exit; otherwise everything is detached.
    A signal during loading or attaching ends the run once that step is done, cleanly.
    """
    from pybpf.attach import attach_all
    from pybpf.collection import Collection
    from pybpf.elf import load_spec
    from pybpf.signals import StopSignal

    out = out or sys.stdout
    with StopSignal() as stop, Collection(load_spec(source)) as coll:
        failures = []
        links = [] if stop.requested else attach_all(coll.programs, failures)
        try:
            failed = dict(failures)
            for name, program in coll.programs.items():
                if not links and not failures:
                    break  # stopped before attaching
                if name in failed:
                    print(f"loaded {name} but did not attach it: {failed[name]}", file=out)
                else:
                    print(f"attached {name} ({program.spec.section})", file=out)
            if pin and not stop.requested:
                _pin_all(pin, coll, links, out)
            while not stop.requested:
                stop.sleep(interval)
                if interval and not stop.requested:
                    print_maps(coll.maps, out)
            print_maps(coll.maps, out)
        finally:
            for link in links:
                link.close()
    return 0


def _pin_all(directory, coll, links, out):
    os.makedirs(directory, exist_ok=True)
    for name, m in coll.maps.items():
        m.pin(os.path.join(directory, name))
    for name, program in coll.programs.items():
        program.pin(os.path.join(directory, name))
    for link in links:
        link.pin(os.path.join(directory, f"link_{link.id}"))
    print(f"pinned maps, programs and links under {directory}", file=out)


def print_maps(maps, out):
    """Every entry of every map, decoded with the map's key/value types (BTF) where known."""
    for name, m in maps.items():
        try:
            items = list(m.items())
        except BPFError as exc:  # a map without keys (ring buffer...)
            print(f"{name}: cannot list ({exc})", file=out)
            continue
        print(f"{name} ({m.type_name}, {len(items)} entries)", file=out)
        for key, value in items:
            print(f"  {_shown(key)} -> {_shown(value)}", file=out)


def _shown(value):
    """How a key or value prints: strings quoted and escaped (a char array filled by a
    program is untrusted: an escape sequence in it must not reach the terminal)."""
    value = _plain(value)
    return repr(value) if isinstance(value, str) else value


def _plain(value):
    """construct Containers and lists as plain dicts and lists, bytes as hex, for printing.

    construct keeps the stream a value was parsed from under the key ``_io``; that one is
    dropped, while struct members and globals whose names start with ``_`` are kept.
    """
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items() if k != "_io"}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, (bytes, bytearray)):
        return value.hex()
    return value


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

    load = commands.add_parser("load", help="load, attach and watch a clang-built object")
    load.add_argument("file", help="BPF ELF object (clang -O2 -g -target bpf -c)")
    load.add_argument("--pin", metavar="DIR", help="pin maps, programs and links under DIR "
                      "(on a bpf file system) and leave them after exit")
    load.add_argument("--interval", type=positive_seconds, metavar="N",
                      help="print the maps every N seconds (default: only on exit)")
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
