"""syscalls: attr layouts, errno -> exception mapping (fake syscall), and the real commands."""

import contextlib
import errno
import os
import re
import subprocess
import sys

import pytest
from construct import Bytes, StringEncoded, Struct

from pybpf import attrs, errnos, features, host, layouts, libc, perf, spec, syscalls, verifier
from pybpf.abi import Cmd, MapType, ProgType, UpdateFlags
from pybpf.errors import (
    BPFPermissionError,
    KeyExistsError,
    MapError,
    MapFullError,
    MapKeyError,
    SyscallError,
    UsageError,
    VerifierError,
)
from support import ROOT, import_tool, require_file, require_tool

RET7 = bytes.fromhex("b700000007000000" "9500000000000000")  # r0 = 7; exit
READ_R2 = bytes.fromhex("bf20000000000000" "9500000000000000")  # r0 = r2; exit (uninit)

gen_layouts = import_tool("gen_layouts")


# --- layouts ----------------------------------------------------------------------------------

KERNEL_SIZES = {
    # offsetofend(union bpf_attr, <last field used>) from include/uapi/linux/bpf.h
    "MapCreateAttr": 72, "MapElemAttr": 32, "BatchAttr": 56, "ProgLoadAttr": 144,
    "TestAttr": 72, "ObjAttr": 16, "GetIdAttr": 12, "InfoAttr": 16, "RawTracepointAttr": 12,
    "BtfLoadAttr": 32, "LinkCreateAttr": 24, "LinkCreateIterAttr": 28,
    "LinkCreateTracingAttr": 32, "IterCreateAttr": 8, "IterLinkInfoMap": 4,
    "IterLinkInfoTask": 12, "EnableStatsAttr": 4,
    # sizeof(struct ...) up to the last field declared
    "PerfEventAttr": 72, "bpf_prog_info": 232, "bpf_map_info": 88, "bpf_link_info": 64,
    "bpf_btf_info": 32,
    "perf_event_mmap_page": 1056,
}
DECLARED = sorted(name for name, value in vars(attrs).items() if isinstance(value, Struct))


def test_every_declaration_has_a_kernel_size_and_a_layout():
    assert sorted(KERNEL_SIZES) == DECLARED
    assert sorted(name for name, value in vars(layouts).items()
                  if isinstance(value, layouts.Layout)) == DECLARED


@pytest.mark.parametrize("name", DECLARED)
def test_attr_sizes_match_the_kernel(name):
    assert getattr(attrs, name).sizeof() == getattr(layouts, name).size == KERNEL_SIZES[name]


def test_layouts_are_what_the_generator_prints():
    assert gen_layouts.render() == (ROOT / "pybpf" / "layouts.py").read_text(), \
        "pybpf/layouts.py is stale: python tools/gen_layouts.py > pybpf/layouts.py"


def _sample(declaration):
    """Distinct non-zero values for every field of a construct Struct, by name."""
    values = {}
    for number, sub in enumerate(declaration.subcons, start=1):
        if sub.name is None:
            continue
        size = sub.sizeof()
        if isinstance(sub.subcon, StringEncoded):
            values[sub.name] = "name_" + str(number)
        elif isinstance(sub.subcon, Bytes):
            values[sub.name] = bytes(range(number, number + size))
        else:  # an integer: a value that fills its bytes, so misplaced bytes show
            values[sub.name] = int.from_bytes(bytes(range(number, number + size)), "little")
    return values


@pytest.mark.parametrize("name", DECLARED)
def test_layouts_pack_and_unpack_like_the_construct_declarations(name):
    declaration, layout = getattr(attrs, name), getattr(layouts, name)
    values = _sample(declaration)
    built = declaration.build(values)
    as_bytes = {k: v.encode() if isinstance(v, str) else v for k, v in values.items()}
    assert layout.pack(**as_bytes) == built
    assert layout.struct.pack(*as_bytes.values()) == built  # the hot paths' positional form
    parsed = {k: v for k, v in declaration.parse(built).items() if not k.startswith("_")}
    unpacked = layout.unpack(built)
    strings = [k for k, v in parsed.items() if isinstance(v, str)]  # char arrays: raw bytes
    assert {k: unpacked[k].rstrip(b"\0").decode() for k in strings} == \
        {k: parsed[k] for k in strings}
    assert unpacked == {**parsed, **{k: unpacked[k] for k in strings}}
    assert layout.pack() == bytes(layout.size)  # fields not given are zero


def _btf_members():
    """``{struct name or "bpf_attr.<member>": {field: {byte offsets}}}`` from the running
    kernel's BTF, for ``union bpf_attr``'s members and the info/perf structs. Members of
    nested structs and unions (anonymous or not) are listed by their own names too."""
    bpftool = require_tool("bpftool")
    require_file("/sys/kernel/btf/vmlinux", "the kernel has no BTF: CONFIG_DEBUG_INFO_BTF")
    raw = subprocess.run([bpftool, "btf", "dump", "file", "/sys/kernel/btf/vmlinux", "format",
                          "raw"], check=True, capture_output=True, text=True).stdout
    header = re.compile(r"^\[(\d+)\] (\w+) '([^']*)'")
    member = re.compile(r"^\t'([^']*)' type_id=(\d+) bits_offset=(\d+)")
    kinds, names, members, current = {}, {}, {}, None
    for line in raw.splitlines():
        found = header.match(line)
        if found:
            current = int(found.group(1))
            kinds[current], names[current] = found.group(2), found.group(3)
            members[current] = []
        elif current is not None and kinds[current] in ("STRUCT", "UNION"):
            found = member.match(line)
            members[current].append((found.group(1), int(found.group(2)), int(found.group(3))))

    def flatten(type_id, base, into):
        for name, sub, bits in members[type_id]:
            into.setdefault(name, set()).add((base + bits) // 8)
            if kinds[sub] in ("STRUCT", "UNION"):
                flatten(sub, base + bits, into)
        return into

    by_name = {names[t]: t for t in kinds if kinds[t] in ("STRUCT", "UNION")}
    structs = {name: flatten(by_name[name], 0, {}) for name in
               ("perf_event_attr", "bpf_prog_info", "bpf_map_info", "bpf_link_info",
                "bpf_btf_info", "perf_event_mmap_page", "bpf_iter_link_info")}
    for index, (name, sub, _) in enumerate(members[by_name["bpf_attr"]]):
        structs[f"bpf_attr.{name}#{index}"] = flatten(sub, 0, {})
    return structs


#: layout fields with no kernel name: the bitfield word of perf_event_attr starts with
#: ``disabled``; bpf_link_info's per-type union starts with ``raw_tracepoint``.
ALIASES = {("PerfEventAttr", "flags"): "disabled", ("bpf_link_info", "details"): "raw_tracepoint"}


def _offsets(name):
    """``{field: byte offset}`` of a construct declaration in pybpf.attrs."""
    offsets, at = {}, 0
    for sub in getattr(attrs, name).subcons:
        if sub.name is not None:
            offsets[ALIASES.get((name, sub.name), sub.name)] = at
        at += sub.sizeof()
    return offsets


def test_every_field_offset_matches_the_kernels_btf():
    """Each layout against its kernel struct: the info structs and perf_event_attr by name,
    the bpf_attr layouts against the member of ``union bpf_attr`` that has all their field
    names (the one with the fewest others), so a swap of two u32 fields is caught."""
    kernel = _btf_members()
    named = {"PerfEventAttr": "perf_event_attr", "bpf_prog_info": "bpf_prog_info",
             "bpf_map_info": "bpf_map_info", "bpf_link_info": "bpf_link_info",
             "bpf_btf_info": "bpf_btf_info", "perf_event_mmap_page": "perf_event_mmap_page",
             "IterLinkInfoMap": "bpf_iter_link_info", "IterLinkInfoTask": "bpf_iter_link_info"}
    for name in DECLARED:
        ours = _offsets(name)
        if name in named:
            theirs = kernel[named[name]]
        else:
            fits = [fields for key, fields in kernel.items()
                    if key.startswith("bpf_attr.") and set(ours) <= set(fields)]
            assert fits, f"no member of union bpf_attr has all the fields of {name}"
            theirs = min(fits, key=len)
        wrong = {field: (at, sorted(theirs.get(field, ()))) for field, at in ours.items()
                 if at not in theirs.get(field, ())}
        assert not wrong, f"{name}: field: (our offset, the kernel's): {wrong}"


@pytest.mark.parametrize("name", DECLARED)
def test_layout_offsets_are_the_declarations(name):
    offsets, at = {}, 0
    for sub in getattr(attrs, name).subcons:
        if sub.name is not None:
            offsets[sub.name] = at
        at += sub.sizeof()
    assert getattr(layouts, name).offsets == offsets


def test_layout_pack_refuses_unknown_fields():
    with pytest.raises(TypeError, match="GetIdAttr has no field nxt_id"):
        layouts.GetIdAttr.pack(nxt_id=1)


def test_batch_count_offset():
    built = attrs.BatchAttr.build(dict(in_batch=1, out_batch=2, keys=3, values=4, count=5,
                                       map_fd=6, elem_flags=7, flags=8))
    assert syscalls._batch_count(built) == 5


def test_object_names_are_sanitized():
    assert spec.object_name("exec count!") == "exec_count_"
    assert spec.object_name("a" * 20) == "a" * 15
    assert spec.object_name("ok_name.v2") == "ok_name.v2"


def test_parse_cpu_list():
    assert host.parse_cpu_list("0\n") == 1
    assert host.parse_cpu_list("0-3\n") == 4
    assert host.parse_cpu_list("0-3,8-11") == 12


def test_log_summary_drops_statistics_and_finds_the_slot():
    log = ("func#0 @0\n0: R1=ctx() R10=fp0\n0: (b7) r0 = 1\n1: (0f) r0 += r2\nR2 !read_ok\n"
           "processed 2 insns (limit 1000000) max_states_per_insn 0 total_states 0\n")
    assert verifier.summary(log) == "R2 !read_ok"
    assert verifier.failing_slot(log) == 1
    assert verifier.summary("a\n\tindented detail\n") == "a: indented detail"
    assert verifier.failing_slot("no instructions") is None


def test_unknown_architecture_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(libc, "_MACHINE", "sparc64")
    monkeypatch.setattr(libc, "_numbers", [])
    with pytest.raises(SyscallError, match="sparc64.*x86_64, aarch64"):
        libc.sys_bpf(Cmd.MAP_CREATE, b"")


# --- errno mapping with a fake syscall --------------------------------------------------------

@pytest.fixture
def fake_errno(monkeypatch):
    """Make every bpf()/perf_event_open()/ioctl fail with the errno the test sets."""
    state = {"errno": errno.EINVAL, "calls": []}

    def fake(*args):
        state["calls"].append(args)
        return -state["errno"]

    monkeypatch.setattr(libc, "sys_bpf", fake)
    monkeypatch.setattr(libc, "sys_perf_event_open", fake)
    monkeypatch.setattr(libc, "sys_ioctl", fake)
    monkeypatch.setattr(features, "_memlock_checked", [True])
    monkeypatch.setattr(host, "filesystem_type", lambda path: "bpf")
    return state


def _raises(state, err, call, cls, *words):
    state["errno"] = err
    with pytest.raises(cls) as info:
        call()
    for word in words:
        assert word in str(info.value)
    assert info.value.errno == err
    return info.value


def test_permission_errors_name_the_capability(fake_errno, monkeypatch):
    monkeypatch.setattr(host, "effective_capabilities", lambda: 0)
    _raises(fake_errno, errno.EPERM, lambda: syscalls.map_create(MapType.ARRAY, 4, 4, 1),
            BPFPermissionError, "CAP_BPF", "sudo", "BPF_MAP_CREATE")
    _raises(fake_errno, errno.EPERM, lambda: syscalls.prog_load(ProgType.TRACEPOINT, RET7),
            BPFPermissionError, "CAP_PERFMON", "sudo")
    _raises(fake_errno, errno.EACCES, lambda: syscalls.prog_get_fd_by_id(1),
            BPFPermissionError, "CAP_SYS_ADMIN")
    _raises(fake_errno, errno.EACCES, lambda: perf.perf_event_open(2, 1),
            BPFPermissionError, "CAP_PERFMON", "perf_event_open")
    _raises(fake_errno, errno.EPERM, lambda: syscalls.map_update_elem(3, b"k", b"v"),
            BPFPermissionError, "frozen")


ALL_CAPABILITIES = (1 << 41) - 1


def test_a_verifier_rejection_is_not_a_missing_capability(fake_errno, monkeypatch):
    monkeypatch.setattr(host, "effective_capabilities", lambda: ALL_CAPABILITIES)
    for err in (errno.EACCES, errno.EINVAL):
        rejected = _raises(fake_errno, err, lambda: syscalls.prog_load(1, READ_R2),
                           SyscallError, "rejected by the verifier", "log_level")
        assert not isinstance(rejected, BPFPermissionError) and "sudo" not in str(rejected)
    # EPERM with every capability: a security policy (lockdown, an LSM), not a capability
    denied = _raises(fake_errno, errno.EPERM, lambda: syscalls.prog_load(1, READ_R2),
                     BPFPermissionError, "although this process has CAP_BPF", "lockdown",
                     "fentry/fexit")
    assert "sudo" not in str(denied)


@pytest.mark.parametrize("have, blamed", [
    (0, "CAP_PERFMON (and CAP_BPF)"),
    (1 << 39, "CAP_PERFMON"),  # CAP_BPF only: a tracing program also needs CAP_PERFMON
])
def test_eacces_blames_a_capability_only_when_it_is_missing(fake_errno, monkeypatch, have,
                                                             blamed):
    monkeypatch.setattr(host, "effective_capabilities", lambda: have)
    err = _raises(fake_errno, errno.EACCES,
                  lambda: syscalls.prog_load(ProgType.TRACEPOINT, READ_R2),
                  BPFPermissionError, blamed, "sudo")
    assert err.capability == "CAP_PERFMON (and CAP_BPF)"


def test_capabilities_come_from_capeff(monkeypatch):
    assert host.effective_capabilities() == int(
        [line for line in open("/proc/self/status") if line.startswith("CapEff:")][0].split()[1],
        16)
    monkeypatch.setattr(host, "effective_capabilities", lambda: 1 << 21)  # CAP_SYS_ADMIN
    assert host.missing_capabilities("CAP_PERFMON (and CAP_BPF)") == []
    monkeypatch.setattr(host, "effective_capabilities", lambda: 1 << 38)
    assert host.missing_capabilities("CAP_PERFMON (and CAP_BPF)") == ["CAP_BPF"]


def test_obj_get_eacces_is_the_files_permissions(fake_errno):
    err = _raises(fake_errno, errno.EACCES, lambda: syscalls.obj_get("/sys/fs/bpf/x"),
                  BPFPermissionError, "pinned file's permissions", "ls -l")
    assert err.capability is None and "CAP_" not in str(err)


def test_pinning_outside_bpffs_says_how_to_mount(tmp_path):
    with pytest.raises(UsageError, match="not on a bpf file system.*mount -t bpf bpf"):
        syscalls.obj_pin(3, str(tmp_path / "x"))


def test_failed_batches_carry_the_kernels_count(fake_errno, monkeypatch):
    def two_then_enoent(cmd, attr):
        attr[32:36] = (2).to_bytes(4, "little")  # the kernel writes back how far it got
        return -errno.ENOENT
    monkeypatch.setattr(libc, "sys_bpf", two_then_enoent)
    with pytest.raises(MapError) as update:
        syscalls.map_update_batch(3, bytes(12), bytes(12), 3)
    with pytest.raises(MapError) as delete:
        syscalls.map_delete_batch(3, bytes(12), 3)
    assert update.value.count == delete.value.count == 2


def test_map_errors_are_typed(fake_errno):
    err = _raises(fake_errno, errno.ENOENT, lambda: syscalls.map_lookup_elem(3, b"k", 4),
                  MapKeyError, "not in the map")
    assert isinstance(err, KeyError)
    _raises(fake_errno, errno.ENOENT, lambda: syscalls.map_delete_elem(3, b"k"), MapKeyError)
    _raises(fake_errno, errno.ENOENT,
            lambda: syscalls.map_lookup_and_delete_elem(3, b"k", 4), MapKeyError)
    _raises(fake_errno, errno.E2BIG, lambda: syscalls.map_update_elem(3, b"k", b"v"),
            MapFullError, "max_entries")
    _raises(fake_errno, errno.EEXIST,
            lambda: syscalls.map_update_elem(3, b"k", b"v", UpdateFlags.NOEXIST),
            KeyExistsError, "NOEXIST")
    _raises(fake_errno, errno.EINVAL, lambda: syscalls.map_create(MapType.ARRAY, 3, 4, 1),
            MapError, "key_size", "max_entries")
    _raises(fake_errno, errnos.ENOTSUPP, lambda: syscalls.map_freeze(3), MapError,
            "ENOTSUPP", "524")
    _raises(fake_errno, errno.ENOSPC,
            lambda: syscalls.map_lookup_batch(3, None, 4, 4, 1), MapError, "larger count")


def test_einval_names_the_fields_of_each_command(fake_errno):
    _raises(fake_errno, errno.EINVAL, lambda: syscalls.prog_test_run(3, b"x"), SyscallError,
            "data_size_in", "14 bytes")
    _raises(fake_errno, errno.EINVAL, lambda: syscalls.link_create(3, 4, 41), SyscallError,
            "attach_type")
    _raises(fake_errno, errno.EINVAL, lambda: syscalls.prog_load(1, RET7), SyscallError,
            "rejected by the verifier", "prog_type", "expected_attach_type")
    _raises(fake_errno, errno.ENOENT, lambda: syscalls.obj_get("/sys/fs/bpf/x"),
            SyscallError, "nothing is pinned")
    _raises(fake_errno, errno.EEXIST, lambda: syscalls.obj_pin(3, "/sys/fs/bpf/x"),
            SyscallError, "unpin")


def test_end_of_iteration_is_not_an_error(fake_errno, monkeypatch):
    fake_errno["errno"] = errno.ENOENT
    assert syscalls.map_get_next_key(3, None, 4) is None
    assert syscalls.prog_get_next_id(0) is None

    def empty_batch(cmd, attr):  # the kernel writes count = 0 and fails with ENOENT
        attr[32:36] = bytes(4)
        return -errno.ENOENT
    monkeypatch.setattr(libc, "sys_bpf", empty_batch)
    keys, values, n, _, done = syscalls.map_lookup_batch(3, None, 4, 4, 8)
    assert (keys, values, n, done) == (b"", b"", 0, True)


def test_prog_load_failure_carries_the_log(fake_errno):
    err = _raises(fake_errno, errno.EINVAL, lambda: syscalls.prog_load(1, RET7, log_size=64,
                                                                       log_level=1),
                  SyscallError)
    assert err.log == "" and err.log_true_size == 0


def test_each_command_passes_its_own_size(fake_errno):
    fake_errno["errno"] = errno.EBADF
    with pytest.raises(SyscallError, match="not an open bpf object"):
        syscalls.map_lookup_elem(3, b"k", 4)
    with pytest.raises(SyscallError):
        syscalls.prog_load(1, RET7)
    sizes = {Cmd(cmd): len(attr) for cmd, attr in fake_errno["calls"]}
    assert sizes == {Cmd.MAP_LOOKUP_ELEM: 32, Cmd.PROG_LOAD: 144}


# --- the real kernel --------------------------------------------------------------------------

@pytest.fixture
def hash_map():
    fd = syscalls.map_create(MapType.HASH, 4, 8, 4, name="test_hash")
    yield fd
    os.close(fd)


def k(i):
    return i.to_bytes(4, "little")


@pytest.mark.kernel
def test_map_element_commands(hash_map):
    syscalls.map_update_elem(hash_map, k(1), b"A" * 8)
    assert syscalls.map_lookup_elem(hash_map, k(1), 8) == b"A" * 8
    with pytest.raises(KeyExistsError):
        syscalls.map_update_elem(hash_map, k(1), b"B" * 8, UpdateFlags.NOEXIST)
    with pytest.raises(MapKeyError):
        syscalls.map_update_elem(hash_map, k(2), b"B" * 8, UpdateFlags.EXIST)
    assert syscalls.map_get_next_key(hash_map, None, 4) == k(1)
    assert syscalls.map_get_next_key(hash_map, k(1), 4) is None
    assert syscalls.map_lookup_and_delete_elem(hash_map, k(1), 8) == b"A" * 8
    with pytest.raises(MapKeyError):
        syscalls.map_lookup_elem(hash_map, k(1), 8)
    with pytest.raises(MapKeyError):
        syscalls.map_delete_elem(hash_map, k(1))


@pytest.mark.kernel
def test_map_full_and_info(hash_map):
    for i in range(4):
        syscalls.map_update_elem(hash_map, k(i), bytearray(8))
    with pytest.raises(MapFullError):
        syscalls.map_update_elem(hash_map, k(9), bytes(8))
    info = syscalls.obj_get_info_by_fd(hash_map, "map")
    assert (info["type"], info["key_size"], info["value_size"], info["max_entries"],
            info["name"]) == (MapType.HASH, 4, 8, 4, "test_hash")


@pytest.mark.kernel
def test_map_batch_commands(hash_map):
    keys = b"".join(k(i) for i in range(4))
    assert syscalls.map_update_batch(hash_map, keys, bytes(range(32)), 4) == 4
    got, cursor, done, calls = {}, None, False, 0
    while not done:
        calls += 1
        assert calls <= 4, "4 elements, up to 4 per call: the lookup should have ended"
        ks, vs, n, cursor, done = syscalls.map_lookup_batch(hash_map, cursor, 4, 8, 4)
        got.update((ks[i * 4:i * 4 + 4], vs[i * 8:i * 8 + 8]) for i in range(n))
    assert got == {k(i): bytes(range(i * 8, i * 8 + 8)) for i in range(4)}
    assert syscalls.map_delete_batch(hash_map, keys[:8], 2) == 2
    ks, vs, n, _, done = syscalls.map_lookup_and_delete_batch(hash_map, None, 4, 8, 4)
    assert n == 2 and done
    assert syscalls.map_get_next_key(hash_map, None, 4) is None


@pytest.mark.kernel
def test_batch_support_probe(hash_map):
    batch = [Cmd.MAP_LOOKUP_BATCH, Cmd.MAP_LOOKUP_AND_DELETE_BATCH, Cmd.MAP_UPDATE_BATCH,
             Cmd.MAP_DELETE_BATCH]
    probe = features._REGISTRY["batch"].probe  # the probe itself, not its cached answer
    assert [probe(cmd, MapType.HASH, hash_map) for cmd in batch] == [True] * 4
    array = syscalls.map_create(MapType.ARRAY, 4, 4, 1)
    devmap = syscalls.map_create(MapType.DEVMAP, 4, 4, 1)
    try:  # arrays cannot delete; device maps have no batch operations
        assert [probe(cmd, MapType.ARRAY, array) for cmd in batch] == \
            [True, False, True, False]
        assert not probe(Cmd.MAP_LOOKUP_BATCH, MapType.DEVMAP, devmap)
    finally:
        os.close(array)
        os.close(devmap)
    with pytest.raises(SyscallError, match="EBADF"):
        probe(Cmd.MAP_LOOKUP_BATCH, MapType.HASH, 9999)


@pytest.mark.kernel
def test_map_create_options_and_freeze():
    fd = syscalls.map_create(MapType.ARRAY, 4, 4, 1, name="frozen", numa_node=0)
    try:
        syscalls.map_freeze(fd)
        with pytest.raises(BPFPermissionError, match="frozen"):
            syscalls.map_update_elem(fd, k(0), k(1))
    finally:
        os.close(fd)
    with pytest.raises(MapError, match="key_size"):
        syscalls.map_create(MapType.ARRAY, 3, 4, 1)


@pytest.mark.kernel
def test_prog_load_test_run_info_and_ids():
    fd, log = syscalls.prog_load(ProgType.SOCKET_FILTER, RET7, name="ret7", log_level=1,
                                 log_size=4096)
    try:
        assert "processed 2 insns" in log
        with syscalls_stats():
            retval, duration, data, ctx = syscalls.prog_test_run(fd, bytes(14), 14, repeat=3)
        assert (retval, data, ctx) == (7, bytes(14), b"")
        info = syscalls.obj_get_info_by_fd(fd, "prog")
        assert info["name"] == "ret7" and info["run_cnt"] == 3 and len(info["tag"]) == 16
        assert syscalls.prog_get_next_id(info["id"] - 1) == info["id"]
        other = syscalls.prog_get_fd_by_id(info["id"])
        assert syscalls.obj_get_info_by_fd(other, "prog")["id"] == info["id"]
        os.close(other)
    finally:
        os.close(fd)


@contextlib.contextmanager
def syscalls_stats():
    """BPF_ENABLE_STATS on for the duration of the block."""
    fd = syscalls.enable_stats()
    try:
        yield
    finally:
        os.close(fd)


@pytest.mark.kernel
def test_prog_load_rejection_without_a_log_is_not_a_permission_problem():
    with pytest.raises(SyscallError, match="rejected by the verifier; load with log_level") \
            as info:
        syscalls.prog_load(ProgType.SOCKET_FILTER, READ_R2)
    assert info.value.errno == errno.EACCES
    assert not isinstance(info.value, BPFPermissionError) and "sudo" not in str(info.value)


@pytest.mark.kernel
def test_prog_load_verifier_error():
    with pytest.raises(VerifierError) as info:
        syscalls.prog_load(ProgType.SOCKET_FILTER, READ_R2, log_level=1, log_size=65536)
    err = info.value
    assert err.summary == "R2 !read_ok" and err.insn_index == 0
    assert "processed" in err.log and err.log_true_size >= len(err.log)
    with pytest.raises(SyscallError, match="log buffer is too small") as small:
        syscalls.prog_load(ProgType.SOCKET_FILTER, READ_R2, log_level=1, log_size=16)
    assert small.value.errno == errno.ENOSPC and small.value.log_true_size == err.log_true_size


@pytest.mark.kernel
def test_pin_and_get(tmp_path):
    bpffs = tmp_path / "bpffs"
    bpffs.mkdir()
    subprocess.run(["mount", "-t", "bpf", "bpf", str(bpffs)], check=True)
    try:
        fd = syscalls.map_create(MapType.ARRAY, 4, 4, 1, name="pinned")
        syscalls.obj_pin(fd, str(bpffs / "m"))
        with pytest.raises(SyscallError, match="unpin"):
            syscalls.obj_pin(fd, str(bpffs / "m"))
        again = syscalls.obj_get(str(bpffs / "m"))
        assert syscalls.obj_get_info_by_fd(again, "map")["name"] == "pinned"
        os.close(fd)
        os.close(again)
        with pytest.raises(SyscallError, match="nothing is pinned"):
            syscalls.obj_get(str(bpffs / "nothing"))
    finally:
        subprocess.run(["umount", str(bpffs)], check=True)


def _btf_int():
    """The smallest valid BTF: one 32-bit INT type named "int"."""
    import struct
    types = struct.pack("<IIII", 1, 1 << 24, 4, 32)
    strings = b"\0int\0"
    header = struct.pack("<HBBIIIII", 0xEB9F, 1, 0, 24, 0, len(types), len(types),
                         len(strings))
    return header + types + strings


@pytest.mark.kernel
def test_btf_load():
    fd, log = syscalls.btf_load(_btf_int(), log_level=1, log_size=4096)
    os.close(fd)
    with pytest.raises(SyscallError) as info:
        syscalls.btf_load(b"\0" * 40, log_level=1, log_size=4096)
    assert info.value.errno == errno.EINVAL and "magic" in info.value.log


@pytest.mark.kernel
def test_possible_cpus():
    assert host.possible_cpus() >= os.cpu_count()


_CLOSED_STDIO = """
import os, sys
sys.path.insert(0, {root!r})
from pybpf import syscalls
from pybpf.abi import MapType
os.close(0)
fd = syscalls.map_create(MapType.ARRAY, 4, 4, 1)
print(fd, os.get_inheritable(fd))
"""


@pytest.mark.kernel
def test_fds_below_3_are_moved_up():
    out = subprocess.run([sys.executable, "-c", _CLOSED_STDIO.format(root=str(ROOT))],
                         capture_output=True, text=True, check=True).stdout.split()
    assert int(out[0]) >= 3 and out[1] == "False"


_FD_MOVE_FAILS = """
import os, resource, sys
sys.path.insert(0, {root!r})
from pybpf import features, syscalls
from pybpf.abi import MapType
features.ensure_memlock()
os.close(0)
resource.setrlimit(resource.RLIMIT_NOFILE, (3, 3))  # no fd >= 3 can be made
try:
    syscalls.map_create(MapType.ARRAY, 4, 4, 1)
except syscalls.SyscallError as exc:
    print(type(exc).__name__, exc)
try:
    os.fstat(0)
except OSError:
    print("fd 0 closed")
"""


@pytest.mark.kernel
def test_a_failed_fd_move_closes_the_fd_and_says_why():
    out = subprocess.run([sys.executable, "-c", _FD_MOVE_FAILS.format(root=str(ROOT))],
                         capture_output=True, text=True, check=True).stdout
    assert out.startswith("SyscallError fcntl(F_DUPFD_CLOEXEC) could not move new fd 0")
    assert "ulimit -n" in out and out.endswith("fd 0 closed\n")


@pytest.mark.kernel
def test_unprivileged_user_is_told_about_cap_bpf():
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: drop to nobody and try
        os.close(read_end)
        try:
            os.setgroups([])
            os.setresgid(65534, 65534, 65534)
            os.setresuid(65534, 65534, 65534)
            syscalls.map_create(MapType.ARRAY, 4, 4, 1)
            message = "no error"
        except BaseException as exc:
            message = f"{type(exc).__name__}: {exc}"
        os.write(write_end, message.encode())
        os._exit(0)
    os.close(write_end)
    message = os.read(read_end, 4096).decode()
    os.close(read_end)
    os.waitpid(pid, 0)
    assert message.startswith("BPFPermissionError")
    assert "CAP_BPF" in message and "sudo" in message
