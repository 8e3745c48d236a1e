"""Tests of pybpf.maps: every map type, dict semantics, batch ops, errors, pinning, bpftool."""

import errno
import json
import os
import socket
import subprocess

import pytest
from construct import Bytes, Int32ul, Int64ul, Struct

from pybpf import features, host, syscalls
from pybpf.abi import Cmd, MapType, UpdateFlags
from pybpf.errors import (
    BPFPermissionError,
    KeyExistsError,
    MapError,
    MapFullError,
    MapKeyError,
    SyscallError,
    UsageError,
)
from pybpf import maps as maps_module
from pybpf.maps import Map
from pybpf.spec import MapSpec
from support import require_tool

pytestmark = pytest.mark.kernel

HASHES = [MapType.HASH, MapType.LRU_HASH, MapType.PERCPU_HASH, MapType.LRU_PERCPU_HASH]
ARRAYS = [MapType.ARRAY, MapType.PERCPU_ARRAY]
PERCPU = {MapType.PERCPU_HASH, MapType.PERCPU_ARRAY, MapType.LRU_PERCPU_HASH}


def u32_u64(type=MapType.HASH, max_entries=64, **kw):
    """A map with u32 keys and u64 values, decoded as ints."""
    return Map.create(type, 4, 8, max_entries, name="test", key_type=Int32ul,
                      value_type=Int64ul, **kw)


def value_for(map_type, n):
    """What to store for ``n``: an int, or one int per CPU (all different) for per-CPU maps."""
    if map_type in PERCPU:
        return [n * 100 + cpu for cpu in range(host.possible_cpus())]
    return n


# --- every map type ---------------------------------------------------------------------------


@pytest.mark.parametrize("map_type", HASHES + ARRAYS, ids=lambda t: t.name)
def test_each_type_roundtrip(map_type):
    with u32_u64(map_type, max_entries=8) as m:
        for k in range(8):
            m[k] = value_for(map_type, k)
        assert {k: m[k] for k in range(8)} == {k: value_for(map_type, k) for k in range(8)}
        assert dict(m.lookup_batch()) == {k: value_for(map_type, k) for k in range(8)}
        assert dict(m.items()) == dict(m.lookup_batch())
        assert len(m) == 8


@pytest.mark.parametrize("map_type", [t for t in HASHES + ARRAYS if t in PERCPU],
                         ids=lambda t: t.name)
def test_percpu_values_are_lists_of_possible_cpus(map_type):
    ncpus = host.possible_cpus()
    with Map.create(map_type, 4, 4, 4, key_type=Int32ul, value_type=Int32ul) as m:
        m[1] = list(range(ncpus))  # 4-byte values: padded to 8 bytes per CPU in the kernel
        assert m[1] == list(range(ncpus))
        assert dict(m.lookup_batch())[1] == list(range(ncpus))
        with pytest.raises(UsageError, match=f"list of {ncpus} values"):
            m[1] = 7


def test_ringbuf_has_no_keys():
    with Map.create(MapType.RINGBUF, 0, 0, 4096, name="events") as rb:
        assert rb.fd >= 0 and rb.type == MapType.RINGBUF
        with pytest.raises(UsageError, match="RINGBUF map 'events' has no keys, so dict "
                           "operations do not apply; read its records with "
                           "pybpf.ringbuf.RingBuffer"):
            rb[b""]
        with pytest.raises(UsageError, match="no keys"):
            list(rb)
        with pytest.raises(UsageError, match="no keys"):
            rb.lookup_batch()


def test_lru_hash_evicts_instead_of_failing():
    with u32_u64(MapType.LRU_HASH, max_entries=16) as m:
        for k in range(100):
            m[k] = k
        held = dict(m.items())
        assert 1 <= len(held) <= 16 and held[99] == 99  # at most max_entries; the newest kept
        assert all(v == k for k, v in held.items()) and set(held) <= set(range(100))


# --- dict semantics ---------------------------------------------------------------------------


def test_dict_semantics():
    with u32_u64() as m:
        m.update(1, 10)
        m[2] = 20
        assert 1 in m and 3 not in m
        assert m[2] == 20 and m.lookup(3) is None and m.lookup(3, -1) == -1 and m.get(2) == 20
        assert sorted(m) == [1, 2] and sorted(m.keys()) == [1, 2]
        assert sorted(m.values()) == [10, 20] and sorted(m.items()) == [(1, 10), (2, 20)]
        assert len(m) == 2
        del m[1]
        assert 1 not in m and m.pop(2) == 20 and len(m) == 0
        m[5] = 50
        m.clear()
        assert len(m) == 0 and list(m) == []


def test_update_flags():
    with u32_u64() as m:
        m.update(1, 10, UpdateFlags.NOEXIST)
        with pytest.raises(KeyExistsError, match="key 1 is already in map 'test'"):
            m.update(1, 11, UpdateFlags.NOEXIST)
        m.update(1, 12, UpdateFlags.EXIST)
        assert m[1] == 12
        with pytest.raises(MapKeyError, match="key 2 is not in map 'test'"):
            m.update(2, 20, UpdateFlags.EXIST)


def test_array_semantics():
    with u32_u64(MapType.ARRAY, max_entries=4) as m:
        assert dict(m.items()) == {0: 0, 1: 0, 2: 0, 3: 0} and len(m) == 4
        m[3] = 33
        with pytest.raises(UsageError, match="cannot be deleted"):
            del m[3]
        with pytest.raises(MapKeyError, match=r"key 4 is not in .*0\.\.3"):
            m[4] = 1
        with pytest.raises(MapKeyError):
            m[4]
        m.clear()
        assert m[3] == 0


def test_typed_struct_and_bytes():
    value = Struct("pid" / Int32ul, "comm" / Bytes(12))
    with Map.create(MapType.HASH, 16, 16, 8, key_type=Bytes(16), value_type=value) as m:
        m[b"k" * 16] = dict(pid=42, comm=b"bash".ljust(12, b"\0"))
        got = m[b"k" * 16]
        assert got.pid == 42 and got.comm.rstrip(b"\0") == b"bash"
        assert m.lookup_batch()[0][0] == b"k" * 16


@pytest.mark.parametrize("map_type", HASHES + ARRAYS, ids=lambda t: t.name)
def test_struct_formats_decode_like_construct_types(map_type):
    with Map.create(map_type, 4, 8, 8, key_type="<I", value_type="<Q") as m, \
            Map.from_id(m.id, key_type=Int32ul, value_type=Int64ul) as same:
        m.update_batch({k: value_for(map_type, k) for k in range(8)})
        assert m.lookup_batch() == same.lookup_batch()
        assert dict(m.items()) == dict(same.items()) == dict(m.lookup_batch())
        assert m[3] == same[3] == value_for(map_type, 3)


def test_struct_formats_for_bytes_and_tuples():
    with Map.create(MapType.HASH, 4, 16, 8, key_type="<I", value_type="16s") as names, \
            Map.create(MapType.HASH, 8, 12, 8, key_type="<II", value_type="<IQ") as pairs:
        names[1] = b"bash".ljust(16, b"\0")
        assert names[1] == b"bash".ljust(16, b"\0") and names.lookup_batch() == [(1, names[1])]
        pairs[(1, 2)] = (3, 4)
        assert pairs[(1, 2)] == (3, 4) and pairs.lookup_batch() == [((1, 2), (3, 4))]
        with pytest.raises(UsageError, match=r"cannot encode value 3 with the map's value type "
                                           r"'<IQ'"):
            pairs[(1, 2)] = 3


def test_struct_format_size_and_syntax_checked_before_creating():
    with pytest.raises(UsageError, match="key type is 8 bytes, map key_size is 4"):
        Map.create(MapType.HASH, 4, 8, 4, key_type="<Q")
    with pytest.raises(UsageError, match="value type '<Z' is not a struct format"):
        Map.create(MapType.HASH, 4, 8, 4, value_type="<Z")
    with pytest.raises(UsageError, match=r"key_type must be a struct format such as \"<I\""):
        Map.create(MapType.HASH, 4, 8, 4, key_type=4)


# --- errors -----------------------------------------------------------------------------------


def test_missing_key_is_a_keyerror_naming_the_key():
    with u32_u64() as m:
        with pytest.raises(KeyError):
            m[7]
        with pytest.raises(MapKeyError, match="key 7 is not in map 'test'"):
            del m[7]


def test_full_map():
    with u32_u64(max_entries=2) as m:
        m[1], m[2] = 1, 2
        with pytest.raises(MapFullError, match=r"map 'test' is full \(2 entries\)") as info:
            m[3] = 3
        assert info.value.errno == errno.E2BIG
        m[2] = 22  # overwriting an existing key still works


def test_type_size_checked_before_creating():
    with pytest.raises(UsageError, match="key type is 8 bytes, map key_size is 4"):
        Map.create(MapType.HASH, 4, 8, 4, key_type=Int64ul)
    with pytest.raises(UsageError, match="value type is 4 bytes, map value_size is 8"):
        Map.create(MapType.HASH, 4, 8, 4, value_type=Int32ul)


def test_untyped_map_wants_exact_bytes():
    with Map.create(MapType.HASH, 4, 8, 4) as m:
        with pytest.raises(UsageError, match=r"bytes of length 4.*got int.*\(5\)\.to_bytes\(4.*"
                                           r"key_type=\"<I\" to use ints"):
            m[5] = bytes(8)
        with pytest.raises(UsageError, match="key must be bytes of length 4.*got 8 bytes"):
            m[bytes(8)] = bytes(8)
        with pytest.raises(UsageError, match="value must be bytes of length 8"):
            m[bytes(4)] = b"x"
        m[b"\1\0\0\0"] = bytes(range(8))
        assert m[b"\1\0\0\0"] == bytes(range(8))


def test_unencodable_value():
    with u32_u64() as m:
        with pytest.raises(UsageError, match="cannot encode value -1"):
            m[1] = -1


def test_closed_map():
    m = u32_u64()
    m.close()
    m.close()  # idempotent
    with pytest.raises(UsageError, match="map 'test' is closed"):
        m[1]
    with pytest.raises(UsageError, match="closed"):
        _ = m.fd


def test_frozen_map_refuses_updates():
    with u32_u64(MapType.ARRAY, max_entries=2) as m:
        m[0] = 5
        m.freeze()
        with pytest.raises(BPFPermissionError, match="frozen"):
            m[0] = 6
        assert m[0] == 5


def test_spec_data_and_freeze():
    spec = MapSpec(name=".rodata", type=MapType.ARRAY, key_size=4, value_size=8,
                   max_entries=1, data=b"abc", freeze=True)
    with Map(spec) as m:
        assert m[b"\0\0\0\0"] == b"abc".ljust(8, b"\0")


# --- iteration under change ------------------------------------------------------------------


def test_iteration_skips_keys_deleted_by_another_handle(monkeypatch):
    with u32_u64() as m, Map.from_id(m.id, key_type=Int32ul) as other:
        for k in range(10):
            m[k] = k
        real_next_key = syscalls.map_get_next_key

        def next_key_then_delete_odd(fd, key, key_size):
            nxt = real_next_key(fd, key, key_size)
            if nxt is not None and Int32ul.parse(nxt) % 2:
                del other[Int32ul.parse(nxt)]  # gone before the lookup of the walk
            return nxt

        monkeypatch.setattr(syscalls, "map_get_next_key", next_key_then_delete_odd)
        assert dict(m.items()) == {k: k for k in range(0, 10, 2)}


def test_iteration_bounded_when_the_walk_keeps_restarting(monkeypatch):
    with u32_u64(max_entries=8) as m, Map.from_id(m.id, key_type=Int32ul,
                                                    value_type=Int64ul) as other:
        for k in range(8):
            m[k] = k
        real_next_key = syscalls.map_get_next_key
        fresh = iter(range(100, 10**6))

        def delete_current_and_add_one(fd, key, key_size):
            if key is not None:  # the current key vanishes: the kernel restarts the walk
                del other[Int32ul.parse(key)]
                other[next(fresh)] = 0
            return real_next_key(fd, key, key_size)

        monkeypatch.setattr(syscalls, "map_get_next_key", delete_current_and_add_one)
        with pytest.raises(MapError, match="aborted after 8 steps"):
            list(m)


# --- batch operations ------------------------------------------------------------------------


def test_batch_roundtrip():
    with u32_u64(max_entries=5000) as m:
        assert m.update_batch({k: k * 3 for k in range(5000)}) == 5000
        assert dict(m.lookup_batch()) == {k: k * 3 for k in range(5000)}
        assert m.delete_batch(range(1000)) == 1000 and len(m) == 4000
        taken = m.lookup_and_delete_batch(chunk=512)
        assert dict(taken) == {k: k * 3 for k in range(1000, 5000)} and len(m) == 0


@pytest.mark.parametrize("batch", ["lookup_batch", "lookup_and_delete_batch"])
def test_batch_reads_every_element_once_and_stops(monkeypatch, batch):
    """1000 elements, 100 per call: every key exactly once, in a bounded number of calls
    (a cursor that does not move would loop and grow without end)."""
    real, calls = getattr(syscalls, f"map_{batch}"), []

    def bounded(*args, **kw):
        calls.append(args[1])  # the cursor given
        if len(calls) > 40:
            raise AssertionError(f"{batch} still going after 40 calls of 100 elements")
        return real(*args, **kw)

    monkeypatch.setattr(syscalls, f"map_{batch}", bounded)
    with u32_u64(max_entries=1000) as m:
        m.update_batch({k: 3 * k for k in range(1000)})
        pairs = getattr(m, batch)(chunk=100)
    assert sorted(pairs) == [(k, 3 * k) for k in range(1000)]
    assert calls[0] is None and len(set(calls)) == len(calls)  # a new cursor every call


def test_batch_regrows_on_enospc(monkeypatch):
    real = syscalls.map_lookup_batch
    seen, calls = [], []

    def spy(fd, in_batch, key_size, value_size, count, *args, **kw):
        calls.append(count)
        if len(calls) > 2000:  # 1000 elements, 1 or 2 per call: at most about 1000 calls
            raise AssertionError(f"the batch lookup has not ended after {len(calls)} calls")
        try:
            return real(fd, in_batch, key_size, value_size, count, *args, **kw)
        except SyscallError as exc:
            seen.append(exc.errno)
            raise

    monkeypatch.setattr(syscalls, "map_lookup_batch", spy)
    with u32_u64(max_entries=1000) as m:
        m.update_batch((k, k) for k in range(1000))
        assert dict(m.lookup_batch(chunk=1)) == {k: k for k in range(1000)}
    assert errno.ENOSPC in seen  # some hash bucket held two keys


def test_batch_falls_back_without_kernel_support(monkeypatch):
    def not_called(*args, **kw):
        raise AssertionError("a batch command was used where the probe said it is missing")

    batch = features._REGISTRY["batch"]
    monkeypatch.setattr(batch, "answers", {})
    monkeypatch.setattr(batch, "probe", lambda cmd, map_type, fd: False)
    for name in ("map_lookup_batch", "map_lookup_and_delete_batch", "map_update_batch",
                 "map_delete_batch"):
        monkeypatch.setattr(syscalls, name, not_called)
    with u32_u64(MapType.PERCPU_HASH, max_entries=100) as m:
        assert m.update_batch({k: value_for(m.type, k) for k in range(100)}) == 100
        assert dict(m.lookup_batch()) == {k: value_for(m.type, k) for k in range(100)}
        assert m.delete_batch(range(50)) == 50
        assert dict(m.lookup_and_delete_batch()) == {k: value_for(m.type, k)
                                                     for k in range(50, 100)}
        assert len(m) == 0


def test_batch_falls_back_for_devmap():
    """Device maps have no batch lookup (ENOTSUPP): the walk is key by key, and skips the
    empty slots that get_next_key reports but lookup does not find."""
    lo = socket.if_nametoindex("lo")
    with Map.create(MapType.DEVMAP, 4, 4, 4, key_type=Int32ul, value_type=Int32ul) as m:
        m[0] = m[2] = lo
        assert m.lookup_batch() == [(0, lo), (2, lo)]


def test_batch_support_is_probed_once_per_command_and_map_type(monkeypatch):
    probes = []
    batch = features._REGISTRY["batch"]
    real = batch.probe

    def counting(cmd, map_type, fd):
        probes.append(cmd)
        return real(cmd, map_type, fd)

    monkeypatch.setattr(batch, "answers", {})
    monkeypatch.setattr(batch, "probe", counting)
    with u32_u64() as a, u32_u64() as b, u32_u64(MapType.ARRAY, max_entries=4) as arr:
        for m in (a, b, a):
            m.update_batch({1: 1})
            m.lookup_batch()
        arr.lookup_batch()
    assert sorted(probes) == sorted([Cmd.MAP_UPDATE_BATCH, Cmd.MAP_LOOKUP_BATCH,
                                     Cmd.MAP_LOOKUP_BATCH])  # HASH twice, ARRAY once
    assert batch.answers[Cmd.MAP_LOOKUP_BATCH, MapType.HASH] is True


def test_a_real_einval_is_raised_once_the_batch_command_is_known_to_work(monkeypatch):
    def einval(*args, **kw):
        raise MapError(errno.EINVAL, "BPF_MAP_UPDATE_BATCH")

    monkeypatch.setattr(syscalls, "map_update_batch", einval)
    with u32_u64() as m:
        with pytest.raises(MapError) as info:
            m.update_batch({1: 1, 2: 2})
        assert info.value.errno == errno.EINVAL
        assert len(m) == 0  # not silently stored element by element instead


def test_update_batch_noexist_and_exist_go_element_by_element(monkeypatch):
    batches = []
    real = syscalls.map_update_batch

    def spy(*args, **kw):
        batches.append(kw.get("elem_flags", 0))
        return real(*args, **kw)

    monkeypatch.setattr(syscalls, "map_update_batch", spy)
    with u32_u64() as m:
        assert m.update_batch({1: 10, 2: 20}, UpdateFlags.NOEXIST) == 2
        assert m.update_batch({1: 11}, UpdateFlags.EXIST) == 1
        with pytest.raises(KeyExistsError, match="key 2 is already in") as info:
            m.update_batch({3: 30, 2: 21, 4: 40}, UpdateFlags.NOEXIST)
        assert info.value.count == 1 and dict(m.items()) == {1: 11, 2: 20, 3: 30}
        assert m.update_batch({5: 50}) == 1
    assert batches == [UpdateFlags.ANY]  # only the ANY update was one batch


def test_update_and_delete_batch_failures_carry_the_count():
    with u32_u64(max_entries=2) as m:
        with pytest.raises(MapFullError) as full:
            m.update_batch({1: 1, 2: 2, 3: 3})
        assert full.value.count == 2 and dict(m.items()) == {1: 1, 2: 2}
        with pytest.raises(MapKeyError) as missing:
            m.delete_batch([1, 7, 2])
        assert missing.value.count == 1 and dict(m.items()) == {2: 2}


@pytest.mark.parametrize("batched", [True, False], ids=["batch", "key by key"])
def test_lookup_and_delete_batch_failure_keeps_what_was_taken(monkeypatch, batched):
    calls = []
    real_batch, real_delete = syscalls.map_lookup_and_delete_batch, syscalls.map_delete_elem

    def fail_second_chunk(*args, **kw):
        calls.append(1)
        if len(calls) > 1:
            raise MapError(errno.EFAULT, "BPF_MAP_LOOKUP_AND_DELETE_BATCH")
        return real_batch(*args, **kw)

    def fail_fifth_delete(fd, key):
        calls.append(1)
        if len(calls) == 5:
            raise MapError(errno.EFAULT, "BPF_MAP_DELETE_ELEM")
        return real_delete(fd, key)

    batch = features._REGISTRY["batch"]
    monkeypatch.setattr(batch, "answers", {
        (Cmd.MAP_UPDATE_BATCH, MapType.HASH): True,
        (Cmd.MAP_LOOKUP_AND_DELETE_BATCH, MapType.HASH): batched})
    if batched:
        monkeypatch.setattr(syscalls, "map_lookup_and_delete_batch", fail_second_chunk)
    else:
        monkeypatch.setattr(syscalls, "map_delete_elem", fail_fifth_delete)
    with u32_u64(max_entries=256) as m:
        m.update_batch({k: k for k in range(200)})
        with pytest.raises(MapError) as info:
            m.lookup_and_delete_batch(chunk=64)
        taken = dict(info.value.partial)
        assert taken and len(taken) < 200 and all(v == k for k, v in taken.items())
        assert not set(taken) & set(m.keys())  # gone from the map: only err.partial has them


def test_bloom_filter_gets_its_map_extra():
    spec = MapSpec(name="bloom", type=MapType.BLOOM_FILTER, key_size=0, value_size=4,
                   max_entries=64, map_extra=3)
    with Map(spec) as m, Map.from_id(m.id) as same:
        assert syscalls.obj_get_info_by_fd(m.fd, "map")["map_extra"] == 3
        assert same.spec.map_extra == 3


def test_map_type_newer_than_pybpf_stays_a_number(monkeypatch):
    real = syscalls.obj_get_info_by_fd
    monkeypatch.setattr(syscalls, "obj_get_info_by_fd",
                        lambda fd, kind: {**real(fd, kind), "type": 999})
    with u32_u64() as m, Map.from_id(m.id, key_type="<I", value_type="<Q") as same:
        m[1] = 10
        assert same.type == 999 and same.type_name == "999" and same[1] == 10
        assert "999" in repr(same)


def test_batch_errors_name_the_map():
    with u32_u64(max_entries=2) as m:
        with pytest.raises(MapKeyError, match="one of the keys is not in map 'test'"):
            m.delete_batch([1])
        with pytest.raises(MapFullError, match="map 'test' is full"):
            m.update_batch({1: 1, 2: 2, 3: 3})


# --- pinning, ids, bpftool -------------------------------------------------------------------


def test_pin_and_from_pinned(bpffs):
    path = str(bpffs / "counts")
    with u32_u64() as m:
        m[1] = 11
        m.pin(path)
    with Map.from_pinned(path, key_type=Int32ul, value_type=Int64ul) as again:
        assert again[1] == 11 and again.type == MapType.HASH and again.max_entries == 64
        again.unpin()
        assert not os.path.exists(path)


def test_pin_outside_bpffs_says_how_to_mount(tmp_path):
    with u32_u64() as m:
        with pytest.raises(UsageError, match="not on a bpf file system.*mount -t bpf bpf"):
            m.pin(str(tmp_path / "counts"))


def test_from_id_reads_the_same_map():
    with u32_u64() as m, Map.from_id(m.id, key_type=Int32ul, value_type=Int64ul) as same:
        m[3] = 30
        assert same[3] == 30 and same.name == "test" and same.key_size == 4


def bpftool_dump(map_id):
    """``bpftool map dump id N -j`` as {key bytes: value bytes or [bytes per CPU]}."""
    out = subprocess.run([require_tool("bpftool"), "map", "dump", "id", str(map_id), "-j"],
                         check=True, capture_output=True, text=True).stdout
    as_bytes = lambda hexes: bytes(int(h, 16) for h in hexes)  # noqa: E731
    result = {}
    for entry in json.loads(out):
        if "values" in entry:
            result[as_bytes(entry["key"])] = [as_bytes(v["value"]) for v in entry["values"]]
        else:
            result[as_bytes(entry["key"])] = as_bytes(entry["value"])
    return result


@pytest.mark.parametrize("map_type", [MapType.HASH, MapType.ARRAY, MapType.PERCPU_HASH],
                         ids=lambda t: t.name)
def test_matches_bpftool_dump(map_type):
    with Map.create(map_type, 4, 8, 100) as m:
        for k in range(100):
            key = k.to_bytes(4, "little")
            m[key] = ([bytes([k, cpu]) * 4 for cpu in range(host.possible_cpus())]
                      if map_type in PERCPU else (k * 7).to_bytes(8, "little"))
        assert bpftool_dump(m.id) == dict(m.lookup_batch()) == dict(m.items())


def test_map_of_maps_from_spec():
    inner = MapSpec(name="inner", type=MapType.ARRAY, key_size=4, value_size=8, max_entries=1)
    outer = MapSpec(name="outer", type=MapType.HASH_OF_MAPS, key_size=4, value_size=4,
                    max_entries=4, key_type=Int32ul, value_type=Int32ul, inner_map=inner)
    with Map(outer) as m, Map(inner) as slot:
        m[1] = slot.fd  # written as an fd, read back as the inner map's id
        assert m[1] == slot.id


# -- libbpf's adjustments before BPF_MAP_CREATE ------------------------------------------------

def _u32_btf():
    """The fd of BTF with one type, [1] unsigned int, loaded into the kernel."""
    from pybpf.btf.writer import BTFWriter
    from pybpf.collection import load_btf

    w = BTFWriter()
    w.add_int("unsigned int", 4)
    return load_btf(w.encode())


def _refused_spec(map_type):
    """The smallest map of ``map_type`` (one of maps.BTF_REFUSED), its key and value typed
    [1] u32 where they are 4 bytes."""
    key, value, entries = {MapType.QUEUE: (0, 4, 1), MapType.STACK: (0, 4, 1),
                           MapType.STACK_TRACE: (4, 8, 1)}.get(map_type, (4, 4, 1))
    inner = MapSpec("inner", MapType.ARRAY, 4, 4, 1) \
        if map_type in (MapType.ARRAY_OF_MAPS, MapType.HASH_OF_MAPS) else None
    return MapSpec("refuses_btf", map_type, key, value, entries, inner_map=inner,
                   btf_key_type_id=1 if key == 4 else 0, btf_value_type_id=1 if value == 4 else 0)


@pytest.mark.parametrize("map_type", sorted(maps_module.BTF_REFUSED), ids=lambda t: t.name)
def test_map_types_that_refuse_btf_are_created_without_it(map_type):
    """The kernel refuses BTF key/value types for these types (asked directly); the map is
    created without them, as libbpf does."""
    btf = _u32_btf()
    spec = _refused_spec(map_type)
    inner = Map(spec.inner_map) if spec.inner_map else None
    try:
        with pytest.raises(SyscallError):
            syscalls.map_create(map_type, spec.key_size, spec.value_size, spec.max_entries,
                                inner_map_fd=inner.fd if inner else 0, btf_fd=btf,
                                btf_key_type_id=spec.btf_key_type_id,
                                btf_value_type_id=spec.btf_value_type_id)
        with Map(spec, btf_fd=btf) as m:
            info = syscalls.obj_get_info_by_fd(m.fd, "map")
            assert (info["btf_key_type_id"], info["btf_value_type_id"]) == (0, 0)
    finally:
        if inner is not None:
            inner.close()
        os.close(btf)


def test_a_map_the_kernel_refuses_with_btf_is_retried_without_it(monkeypatch):
    """libbpf's retry: a type not in the table whose BTF the kernel refuses (an LPM trie's
    key must be a struct) is created again without BTF."""
    btf = _u32_btf()
    calls = []
    real = syscalls.map_create

    def spy(*args, **kwargs):
        calls.append(kwargs.get("btf_key_type_id"))
        return real(*args, **kwargs)
    monkeypatch.setattr(syscalls, "map_create", spy)
    try:
        spec = MapSpec("trie", MapType.LPM_TRIE, 8, 4, 1, flags=1, btf_key_type_id=1,
                       btf_value_type_id=1)
        with Map(spec, btf_fd=btf) as m:
            assert calls == [1, 0] and m.spec.btf_key_type_id == 0
    finally:
        os.close(btf)


def test_stack_trace_maps_are_checked_against_perf_event_max_stack():
    most = host.perf_event_max_stack()
    with Map(MapSpec("stacks", MapType.STACK_TRACE, 4, most * 8, 4)) as m:
        assert m.value_size == most * 8
    for size in (most * 8 + 8, 12):
        with pytest.raises(UsageError, match=f"perf_event_max_stack \\({most}\\) frames: "
                                             f"{size} is not"):
            Map(MapSpec("stacks", MapType.STACK_TRACE, 4, size, 4))
    with Map(MapSpec("stacks", MapType.STACK_TRACE, 4, 0, 4)) as m:  # no value_size given
        assert m.value_size == most * 8
        assert syscalls.obj_get_info_by_fd(m.fd, "map")["value_size"] == most * 8


def test_global_data_loses_mmapable_only_on_kernels_without_it(monkeypatch):
    mmapable = 1 << 10
    spec = MapSpec(".bss", MapType.ARRAY, 4, 8, 1, flags=mmapable, section=".bss")
    assert maps_module.kernel_spec(spec).flags == mmapable
    monkeypatch.setitem(features._REGISTRY["mmapable_array"].answers, (), False)
    assert maps_module.kernel_spec(spec).flags == 0
    user = MapSpec("mine", MapType.ARRAY, 4, 8, 1, flags=mmapable)
    assert maps_module.kernel_spec(user).flags == mmapable  # not global data: as asked


def test_mmapable_arrays_are_read_and_written_through_memory():
    spec = MapSpec("mapped", MapType.ARRAY, 4, 12, 3, flags=1 << 10, key_type=Int32ul)
    with Map(spec) as m:
        memory = m.mmap()
        assert len(memory) == host.os.sysconf("SC_PAGE_SIZE") and m.mmap() is memory
        m[2] = b"abcdefghijkl"
        assert memory[32:44] == b"abcdefghijkl"  # values are 8-byte aligned: 16 apart
        memory[0:4] = b"WXYZ"
        assert m[0] == b"WXYZ" + bytes(8)
    assert memory.closed
    with Map(MapSpec("plain", MapType.ARRAY, 4, 8, 1)) as m:
        with pytest.raises(UsageError, match="'plain' cannot be memory-mapped"):
            m.mmap()


def test_a_frozen_mmapable_map_is_mapped_read_only():
    spec = MapSpec("ro", MapType.ARRAY, 4, 4, 1, flags=1 << 10 | 1 << 7, data=b"\x07\0\0\0",
                   freeze=True)
    with Map(spec) as m:
        memory = m.mmap()
        assert memory[:4] == b"\x07\0\0\0"
        with pytest.raises(TypeError):
            memory[0:1] = b"\x08"


def test_numa_node_sets_the_numa_flag():
    spec = MapSpec("numa", MapType.HASH, 4, 4, 8, numa_node=0)
    with Map(spec) as m:
        assert syscalls.obj_get_info_by_fd(m.fd, "map")["map_flags"] == 1 << 2
