"""Collection: BTF, maps and programs of one spec loaded together and closed together."""

import os

import pytest

from pybpf import syscalls
from pybpf.abi import MapType, ProgType
from pybpf.asm import R0, R1, R2, R10, W, Builder
from pybpf.collection import Collection, load_btf
from pybpf.errors import BTFError, NotSupportedError, UsageError, VerifierError
from pybpf.maps import Map
from pybpf.spec import CollectionSpec, MapSpec, ProgramSpec

pytestmark = pytest.mark.kernel
ELF_DIR = os.path.join(os.path.dirname(__file__), "elf")


def read_counter():
    b = Builder()
    b.st(W, R10, -4, 0)
    b.ld_map_fd(R1, "counter")
    b.mov(R2, R10)
    b.add(R2, -4)
    b.call("map_lookup_elem")
    b.jeq(R0, 0, "out")
    b.ldx(W, R0, R0, 0)
    b.label("out")
    b.exit()
    return b.instructions


def spec(extra_programs=None):
    maps = {"counter": MapSpec("counter", MapType.ARRAY, 4, 4, 1, data=(7).to_bytes(4, "little"))}
    programs = {"read": ProgramSpec("read", ProgType.SOCKET_FILTER, read_counter())}
    programs.update(extra_programs or {})
    return CollectionSpec(maps=maps, programs=programs)


def test_maps_and_programs_are_loaded_and_linked():
    with Collection(spec()) as coll:
        assert coll.programs["read"].test_run(bytes(14)).retval == 7
        coll.maps["counter"][(0).to_bytes(4, "little")] = (9).to_bytes(4, "little")
        assert coll.programs["read"].test_run(bytes(14)).retval == 9
        fds = [coll.maps["counter"].fd, coll.programs["read"].fd]
        assert "counter" in repr(coll)
    for fd in fds:
        with pytest.raises(OSError):
            os.fstat(fd)
    coll.close()  # idempotent


def test_a_failing_program_closes_what_was_created(monkeypatch):
    b = Builder()
    b.mov(R0, R2)
    b.exit()
    bad = {"bad": ProgramSpec("bad", ProgType.SOCKET_FILTER, b.instructions)}
    created = []
    real_init = Map.__init__

    def remember(self, *args, **kwargs):
        real_init(self, *args, **kwargs)
        created.append(self)
    monkeypatch.setattr(Map, "__init__", remember)
    with pytest.raises(VerifierError):
        Collection(spec(bad))
    assert created and all(m.closed for m in created)


def test_elf_object_with_btf():
    """The object's BTF is loaded once and given to its maps and programs (the kernel's
    info on each names the same BTF object, and the map's key and value types in it)."""
    from pybpf.elf import load_spec

    spec = load_spec(os.path.join(ELF_DIR, "execve.o"))
    with Collection(spec) as coll:
        assert os.readlink(f"/proc/self/fd/{coll.btf_fd}") == "anon_inode:btf"
        assert set(coll.programs) == {"sys_enter_execve", "sched_process_exec"}  # execve.c
        counts = syscalls.obj_get_info_by_fd(coll.maps["exec_count"].fd, "map")
        program = coll.programs["sys_enter_execve"].info()
        assert counts["btf_id"] == program["btf_id"] != 0
        declared = spec.maps["exec_count"]
        assert (counts["btf_key_type_id"], counts["btf_value_type_id"]) == \
            (declared.btf_key_type_id, declared.btf_value_type_id) != (0, 0)


def test_bad_btf_is_a_btf_error():
    with pytest.raises(BTFError, match="rejected the object's BTF"):
        load_btf(b"\x9f\xeb" + bytes(30))


def pinned(max_entries=4, pinning="by_name"):
    """A spec with one hash map pinned by name, as elf.py reads LIBBPF_PIN_BY_NAME."""
    shared = MapSpec("shared", MapType.HASH, 4, 8, max_entries, key_type="<I",
                     value_type="<Q", pinning=pinning)
    return CollectionSpec(maps={"shared": shared})


def test_maps_pinned_by_name_are_shared_between_loads(bpffs):
    with Collection(pinned(), pin_path=str(bpffs)) as first:
        first.maps["shared"][1] = 10
        with Collection(pinned(), pin_path=str(bpffs)) as second:
            assert second.maps["shared"].id == first.maps["shared"].id
    assert (bpffs / "shared").exists()  # the pin outlives the collections
    with Collection(pinned(), pin_path=str(bpffs)) as third:
        assert third.maps["shared"][1] == 10


def test_a_pinned_map_of_another_kind_is_refused(bpffs):
    Collection(pinned(max_entries=4), pin_path=str(bpffs)).close()
    with pytest.raises(UsageError, match=r"map 'shared': the map pinned at .*shared differs: "
                                         r"max_entries 4 \(declared 8\).*rm "):
        Collection(pinned(max_entries=8), pin_path=str(bpffs))


def test_pinning_needs_bpffs_and_a_known_kind(tmp_path):
    with pytest.raises(UsageError, match="not on a bpf file system.*mount -t bpf"):
        Collection(pinned(), pin_path=str(tmp_path))
    with pytest.raises(NotSupportedError, match="map 'shared' asks for pinning 'by_path'"):
        Collection(pinned(pinning="by_path"), pin_path=str(tmp_path))


# -- maps of maps and program arrays: .values ----------------------------------------------

OBJECTS_DIR = os.path.join(os.path.dirname(__file__), "objects")


def test_values_initialisers_fill_maps_of_maps_and_program_arrays():
    from pybpf import elf, syscalls

    spec = elf.load_spec(os.path.join(OBJECTS_DIR, "maptypes.bpf.o"))
    with Collection(spec) as coll:
        def ids(name):
            return {i: int.from_bytes(v, "little") for i, v in coll.maps[name].items()}
        # a user-space lookup in a map of maps or a program array gives the object's id
        assert ids("outer_array") == {0: coll.maps["inner_a"].id, 2: coll.maps["inner_b"].id}
        assert ids("jump_table") == {0: coll.programs["tail_a"].id,
                                     2: coll.programs["tail_b"].id}
        assert len(coll.maps["outer_hash"]) == 0
        info = syscalls.obj_get_info_by_fd(coll.maps["seen_pids"].fd, "map")
        assert info["map_extra"] == 3
        info = syscalls.obj_get_info_by_fd(coll.maps["lazy_hash"].fd, "map")
        assert info["map_flags"] == 1 | 1 << 2  # BPF_F_NO_PREALLOC, BPF_F_NUMA_NODE


@pytest.mark.parametrize("slots, message", [
    ({0: "nowhere"}, "map 'outer_array': .values\\[0\\] names 'nowhere', which is not in the "
                     "collection"),
])
def test_an_initialiser_naming_nothing_is_a_usage_error(slots, message):
    from pybpf import elf

    spec = elf.load_spec(os.path.join(OBJECTS_DIR, "maptypes.bpf.o"))
    spec.maps["outer_array"].init_slots = slots
    with pytest.raises(UsageError, match=message):
        Collection(spec)


def test_a_reused_pinned_map_of_maps_keeps_its_slots(bpffs):
    from pybpf import elf

    spec = elf.load_spec(os.path.join(OBJECTS_DIR, "maptypes.bpf.o"))
    spec.maps["outer_array"].pinning = "by_name"
    with Collection(spec, pin_path=str(bpffs)) as first:
        first.maps["outer_array"][2] = first.maps["inner_a"].fd.to_bytes(4, "little")
        inner_a = first.maps["inner_a"].id
        with Collection(spec, pin_path=str(bpffs)) as second:
            value = second.maps["outer_array"][2]
            assert int.from_bytes(value, "little") == inner_a  # not overwritten by .values
    os.unlink(bpffs / "outer_array")


def test_the_initialised_slots_are_what_the_program_uses():
    """use_maps (on getpid) counts in slot 1 of the inner map at outer_array[2] (inner_b) and
    tail-calls jump_table[pid & 1 ? 2 : 0]: tail_b or tail_a counts in .bss (other processes
    calling getpid meanwhile may add to either)."""
    from pybpf import elf
    from pybpf.attach import attach_tracepoint

    spec = elf.load_spec(os.path.join(OBJECTS_DIR, "maptypes.bpf.o"))
    with Collection(spec) as coll:
        with attach_tracepoint(coll.programs["use_maps"], "syscalls", "sys_enter_getpid"):
            for _ in range(3):
                os.getpid()
        tail = 2 if os.getpid() & 1 else 0
        calls = coll.variables["tail_calls"]
        assert calls[tail] >= 3 and calls[1] == 0
        assert coll.maps["inner_b"][1] >= 3 and coll.maps["inner_a"][1] == 0
