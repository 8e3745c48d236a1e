"""Externs: what an object leaves for its loader to fill in, as libbpf fills it in.

A BPF object may declare variables and functions it does not define::

    extern int LINUX_KERNEL_VERSION __kconfig;          /* .kconfig: a value the loader computes */
    extern unsigned int CONFIG_HZ __kconfig;            /* .kconfig: from the kernel's config */
    extern bool CONFIG_KPROBES __kconfig __weak;        /* __weak: 0 when the config lacks it */
    extern const struct rq runqueues __ksym;            /* .ksyms: a kernel variable, by BTF id */
    extern const void do_unlinkat __ksym;               /* .ksyms: an address from kallsyms */
    extern struct task_struct *bpf_task_acquire(struct task_struct *p) __ksym;  /* a kfunc */

clang leaves each as an undefined ELF symbol, described by a BTF ``VAR`` or ``FUNC`` with
*extern* linkage in the ``.kconfig`` or ``.ksyms`` ``DATASEC``. This module is the part of
libbpf's extern handling that needs no kernel:

- :func:`collect` finds the externs, gives each ``.kconfig`` one its place in the read-only
  ``.kconfig`` map (libbpf's order: by alignment, then size, then name) and rewrites their BTF
  as the kernel accepts it (externs become allocated variables, kfuncs global functions);
- :func:`kconfig_data` builds that map's content from the kernel's configuration
  (``CONFIG_X=y|m|n``, numbers, quoted strings) and the values libbpf computes
  (``LINUX_KERNEL_VERSION``...);
- :func:`kallsyms_addresses` finds the addresses of typeless ksyms in ``/proc/kallsyms``'s
  text.

Reading those files is :mod:`pybpf.host`'s; the kernel side (BTF ids of ksyms and kfuncs in
vmlinux or a module, and patching the instructions) is :mod:`pybpf.ksyms`. What cannot be
resolved is an :class:`ExternError` that names the extern, never a zero silently loaded in
its place (unless the extern is __weak).
"""

from __future__ import annotations

import re

from .btf import BTF_INT_BOOL, BTF_INT_SIGNED, Kind
from .errors import BTFError, ElfError, ExternError
from .spec import ExternSpec

KCONFIG, KSYMS = ".kconfig", ".ksyms"
SECTIONS = (KCONFIG, KSYMS)
VAR_ALLOCATED, VAR_EXTERN = 1, 2  # BTF_VAR_GLOBAL_ALLOCATED, BTF_VAR_GLOBAL_EXTERN
FUNC_GLOBAL, FUNC_EXTERN = 1, 2  # BTF_FUNC_GLOBAL, BTF_FUNC_EXTERN
TRI_NO, TRI_YES, TRI_MODULE = 0, 1, 2  # libbpf's enum libbpf_tristate
VIRTUAL = ("LINUX_KERNEL_VERSION", "LINUX_HAS_BPF_COOKIE", "LINUX_HAS_SYSCALL_WRAPPER")
_KIND_ORDER = {KCONFIG: 0, KSYMS: 1}  # libbpf's enum extern_type: EXT_KCFG < EXT_KSYM
_KINDS = (Kind.VAR, Kind.FUNC)  # what an extern is in BTF
_RELEASE = re.compile(r"(\d+)\.(\d+)\.(\d+)")


def collect(btf, symbols):
    """The externs of an object, by name, from its undefined symbols ``symbols`` (``(name,
    weak)`` pairs) and its BTF, which is rewritten in place for the kernel.

    ``.kconfig`` externs get their offsets in the ``.kconfig`` map; a ``.kconfig`` extern of a
    type libbpf cannot fill, or an extern in another section, is an ExternError.
    """
    if not symbols:
        return {}
    if btf is None:
        raise ElfError(f"extern {symbols[0][0]!r} needs the object's BTF to be understood: "
                       "compile with -g")
    secs = _extern_datasecs(btf)
    externs = [_extern(btf, name, weak, secs) for name, weak in symbols]
    align = {ext.name: _alignment(btf, btf.type(btf.find_all(ext.name, _KINDS)[0]).type)
             for ext in externs if ext.section == KCONFIG}
    # libbpf's cmp_externs: .kconfig first, by alignment (descending) then size, then name
    externs.sort(key=lambda e: (_KIND_ORDER[e.section], -align.get(e.name, 0), e.size,
                                e.name.encode()))
    offset = 0
    for ext in externs:
        if ext.section == KCONFIG:
            ext.offset = _round_up(offset, align[ext.name])
            offset = ext.offset + ext.size
    by_name = {ext.name: ext for ext in externs}
    for datasec, section in secs.items():
        _fix_btf(btf, datasec, section, by_name, offset)
    return by_name


def kconfig_size(externs) -> int:
    """The size of the ``.kconfig`` map: the end of its last extern (0: none)."""
    return max((e.offset + e.size for e in externs.values() if e.section == KCONFIG),
               default=0)


def _extern_datasecs(btf):
    """``{DATASEC id: section name}`` of the object's ``.kconfig`` and ``.ksyms``."""
    return {type_id: btf.name(type_id) for type_id in btf.ids((Kind.DATASEC,))
            if btf.name(type_id) in SECTIONS}


def _extern(btf, name, weak, secs):
    """The ExternSpec of the undefined symbol ``name``, from its BTF VAR or FUNC."""
    found = btf.find_all(name, _KINDS)
    if not found:
        raise BTFError(f"extern {name!r} has no BTF VAR or FUNC: is it declared __kconfig or "
                       f"__ksym (and the object built with -g)?")
    type_id = found[0]
    t = btf.type(type_id)
    if t.linkage != (VAR_EXTERN if t.kind == Kind.VAR else FUNC_EXTERN):
        raise BTFError(f"extern {name!r}: its BTF {t.kind.name} [{type_id}] is not extern")
    section = next((secs[d] for d in secs if any(v.type == type_id
                                                 for v in btf.type(d).vars)), None)
    if section is None:
        raise ExternError(f"extern {name!r} is in neither .kconfig nor .ksyms: declare it "
                          f"with __kconfig (a config value) or __ksym (a kernel symbol)", name)
    ext = ExternSpec(name=name, section=section, weak=weak, btf=btf)
    if section == KCONFIG:
        if t.kind == Kind.FUNC:
            raise ExternError(f"extern function {name!r} cannot be __kconfig: only values "
                              f"are", name)
        ext.size = btf.size_of(t.type)
        ext.kind, ext.signed = _kconfig_kind(btf, t.type)
        if not ext.kind or ext.size <= 0:
            raise ExternError(f"extern (kconfig) {name!r}: its type is not one libbpf fills "
                              f"(bool, char, an int of 1/2/4/8 bytes, enum libbpf_tristate, "
                              f"char[N])", name)
    else:
        ext.func = t.kind == Kind.FUNC
        ext.type_id = btf.skip_qualifiers(t.type)
    return ext


def _kconfig_kind(btf, type_id):
    """(kind, signed) of a .kconfig extern's type, as libbpf's find_kcfg_type; kind "" when
    libbpf cannot fill the type."""
    t = btf.type(btf.skip_qualifiers(type_id))
    if t.kind == Kind.INT:
        if t.int.encoding & BTF_INT_BOOL:
            return ("bool" if t.size == 1 else ""), False
        signed = bool(t.int.encoding & BTF_INT_SIGNED)
        if t.size == 1:
            return "char", signed
        return ("int" if t.size in (2, 4, 8) else ""), signed
    if t.kind in (Kind.ENUM, Kind.ENUM64):
        return ("tristate" if t.name == "libbpf_tristate" and t.size in (4, 8) else ""), False
    if t.kind == Kind.ARRAY and t.array.nelems:
        return ("char_array" if _kconfig_kind(btf, t.array.type)[0] == "char" else ""), False
    return "", False


def _alignment(btf, type_id):
    """The alignment of a .kconfig extern's type: an int's or enum's size (at most 8), an
    array's element's (libbpf's btf__align_of for these types)."""
    for _ in range(32):
        t = btf.type(btf.skip_qualifiers(type_id))
        if t.kind != Kind.ARRAY:
            return min(max(t.size, 1), 8)
        type_id = t.array.type
    raise BTFError(f"type [{type_id}] nests arrays too deeply")


def _round_up(value, align):
    return (value + align - 1) // align * align


def _fix_btf(btf, datasec, section, externs, kconfig_end):
    """Rewrite the extern DATASEC ``datasec`` as the kernel accepts it (libbpf's fix-ups):
    .kconfig VARs become allocated variables at their offsets in the .kconfig map; each .ksyms
    entry a 4-byte int variable (kfuncs: a global FUNC, its parameters named, and a dummy
    variable in the DATASEC)."""
    entries = []
    dummy = None
    for index, (var_type, _, var_size) in enumerate(btf.type(datasec).vars):
        name = btf.name(var_type)
        ext = externs.get(name)
        if ext is None:
            raise BTFError(f"{section} lists {name!r}, which is not an extern symbol of the "
                           f"object (no undefined ELF symbol of that name)")
        if section == KCONFIG:
            btf.set_var(var_type, VAR_ALLOCATED)
            entries.append((var_type, ext.offset, var_size))
            continue
        if btf.kind(var_type) == Kind.FUNC:
            func = btf.type(var_type)
            if dummy is None:
                dummy = btf.add_var(btf.name_offset(var_type), _int_type(btf),
                                    VAR_ALLOCATED)
            btf.name_params(func.type, btf.name_offset(dummy))
            btf.set_func_linkage(var_type, FUNC_GLOBAL)
            entries.append((dummy, 4 * index, 4))
        else:
            btf.set_var(var_type, VAR_ALLOCATED, _int_type(btf))
            entries.append((var_type, 4 * index, 4))
    size = kconfig_end if section == KCONFIG else 4 * len(entries)
    btf.set_datasec(datasec, size, entries)


def _int_type(btf):
    """The first 32-bit INT of the BTF (libbpf's find_int_btf_id), 0 if there is none."""
    return next((i for i in btf.ids((Kind.INT,)) if btf.type(i).int.bits == 32), 0)


# -- the kernel's configuration ------------------------------------------------------------

def kconfig_data(externs, config, release, virtual=None):
    """The content of the ``.kconfig`` map: each .kconfig extern's value at its offset.

    ``CONFIG_*`` values come from ``config``, the text of a kernel configuration, or a
    callable returning it (called only when a CONFIG_ extern needs it).
    ``LINUX_KERNEL_VERSION`` is computed from ``release`` (``6.18.44-xyz``), the other
    ``LINUX_*`` values are taken from ``virtual`` (a dict the loader fills from the kernel's
    features). Values are checked against the extern's type as libbpf does; a strong extern
    left without a value is an ExternError naming it, a __weak one stays 0.
    """
    kconfig = [e for e in externs.values() if e.section == KCONFIG]
    data = bytearray(kconfig_size(externs))
    found = set()
    virtual = dict(virtual or {})
    for ext in kconfig:
        if ext.name.startswith("CONFIG_"):
            continue
        if ext.name == "LINUX_KERNEL_VERSION":
            value = kernel_version(release)
        elif ext.name in virtual:
            value = int(virtual[ext.name])
        elif ext.name.startswith("LINUX_") and ext.weak:
            continue  # an unknown LINUX_ value: zero, as libbpf leaves a weak one
        else:
            raise ExternError(f"extern (kconfig) {ext.name!r}: not a value libbpf or pybpf "
                              f"knows (known: CONFIG_* from the kernel's config, "
                              f"{', '.join(VIRTUAL)})", ext.name)
        _store_number(ext, data, value)
        found.add(ext.name)
    if any(e.name.startswith("CONFIG_") for e in kconfig):
        if callable(config):
            config = config()
        by_name = {e.name: e for e in kconfig}
        for number, line in enumerate(config.splitlines(), 1):
            _config_line(line, number, by_name, data, found)
    for ext in kconfig:
        if ext.name not in found and not ext.weak:
            raise ExternError(f"extern (kconfig) {ext.name!r} has no value in the kernel's "
                              f"configuration; declare it __weak to read 0 when it is unset",
                              ext.name)
    return bytes(data)


def _config_line(line, number, externs, data, found):
    """Store the value of one ``CONFIG_NAME=value`` line for the extern of that name."""
    line = line.strip()
    if not line.startswith("CONFIG_"):
        return  # comments ("# CONFIG_X is not set") and blank lines
    name, sep, value = line.partition("=")
    if not sep or not value:
        raise ExternError(f"kernel config line {number} {line!r} has no '=' and value")
    ext = externs.get(name)
    if ext is None or name in found:
        return
    where = f"extern (kconfig) {name!r}"
    if value[0] in "ynm":
        _store_tristate(ext, data, value[0], where)
    elif value[0] == '"':
        if ext.kind != "char_array":
            raise ExternError(f"{where}: the config's value {value} is a string; declare the "
                              f"extern char[N]", name)
        if len(value) < 2 or not value.endswith('"'):
            raise ExternError(f"{where}: the config's string {value} is not quoted", name)
        text = value[1:-1].encode()[:ext.size - 1]  # libbpf truncates a long string
        data[ext.offset:ext.offset + ext.size] = text.ljust(ext.size, b"\0")
    else:
        if ext.kind not in ("int", "char"):
            raise ExternError(f"{where}: the config's value {value} is a number; declare the "
                              f"extern as an integer type", name)
        _store_number(ext, data, _config_number(value, where, name))
    found.add(name)


def _config_number(value, where, name):
    """A config line's number as C's strtoull(value, 0) reads it (0x hex, 0 octal, a minus
    sign wrapping around)."""
    text = value.strip()
    digits = text.lstrip("+-")
    try:
        if len(digits) > 1 and digits[0] == "0" and digits[1] not in "xXbBoO":
            number = int(digits, 8) * (-1 if text.startswith("-") else 1)
        else:
            number = int(text, 0)
    except ValueError:
        raise ExternError(f"{where}: the config's value {value!r} is not a number", name
                          ) from None
    return number & ((1 << 64) - 1)


def _store_tristate(ext, data, value, where):
    if ext.kind == "bool" and value != "m":
        number = int(value == "y")
    elif ext.kind == "tristate":
        number = {"y": TRI_YES, "m": TRI_MODULE, "n": TRI_NO}[value]
    elif ext.kind == "char":
        number = ord(value)
    else:
        implied = "tristate or char" if ext.kind == "bool" else "bool, tristate or char"
        raise ExternError(f"{where}: the config's value {value!r} implies a {implied} type",
                          ext.name)
    data[ext.offset:ext.offset + ext.size] = number.to_bytes(ext.size, "little")


def _store_number(ext, data, value):
    """Store ``value`` (a u64 as a config line gives it) if it fits the extern's type."""
    if ext.kind not in ("int", "char", "bool"):
        raise ExternError(f"extern (kconfig) {ext.name!r}: the value {value} needs an integer "
                          f"type", ext.name)
    if ext.kind == "bool" and value not in (0, 1):
        raise ExternError(f"extern (kconfig) {ext.name!r}: {value} is not a boolean", ext.name)
    value &= (1 << 64) - 1
    bits = ext.size * 8
    if bits < 64:
        signed_value = value - (1 << 64) if value >> 63 else value
        fits = (-(1 << (bits - 1)) <= signed_value < 1 << (bits - 1)) if ext.signed \
            else value >> bits == 0
        if not fits:
            raise ExternError(f"extern (kconfig) {ext.name!r}: {value} does not fit in "
                              f"{ext.size} bytes", ext.name)
        value &= (1 << bits) - 1
    data[ext.offset:ext.offset + ext.size] = value.to_bytes(ext.size, "little")


def kernel_version(release) -> int:
    """``KERNEL_VERSION(a, b, c)`` of a release string such as ``6.18.44-fc-v857`` (the
    sublevel capped at 255), as libbpf computes LINUX_KERNEL_VERSION."""
    found = _RELEASE.match(release)
    if found is None:
        raise ExternError(f"cannot read a kernel version (a.b.c) from the release "
                          f"{release!r}", "LINUX_KERNEL_VERSION")
    major, minor, patch = (int(n) for n in found.groups())
    return (major << 16) + (minor << 8) + min(patch, 255)


# -- kallsyms -------------------------------------------------------------------------------

def kallsyms_addresses(names, text):
    """``{name: address}`` for the ``names`` found in ``text``, as ``/proc/kallsyms`` lists
    them (``address type name``, then a tab and ``[module]`` for a module's): the addresses of
    typeless ksyms. A name listed twice at different addresses (two static functions of one
    name) is an ExternError, as for libbpf. Each name is searched for (str.find, at C speed:
    the file has some 120,000 lines), not every line split."""
    found = {}
    for name in sorted(set(names)):
        for end in ("\n", "\t"):
            needle = f" {name}{end}"
            at = text.find(needle)
            while at >= 0:
                fields = text[text.rfind("\n", 0, at) + 1:at].split()
                at = text.find(needle, at + 1)
                try:
                    address = int(fields[0], 16) if len(fields) == 2 else None
                except ValueError:
                    address = None
                if address is None:
                    continue
                if name in found and found[name] != address:
                    raise ExternError(f"extern (ksym) {name!r} is ambiguous: /proc/kallsyms "
                                      f"lists it at {found[name]:#x} and {address:#x}", name)
                found[name] = address
    return found
