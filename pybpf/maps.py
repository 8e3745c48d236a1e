"""BPF maps: kernel key/value stores shared by BPF programs and user space, as Python dicts.

A map is created with ``BPF_MAP_CREATE`` and named by a file descriptor. Its keys and values
are fixed-size byte strings (``key_size``, ``value_size``) and it holds at most
``max_entries`` elements:

- **hash** maps (``HASH``, ``LRU_HASH``) hold any keys; an update adds or overwrites, a full
  map refuses new keys (``E2BIG``) unless it is an LRU map, which evicts the least recently
  used one.
- **array** maps (``ARRAY``) have the keys ``0 .. max_entries-1`` (a ``u32``) from birth;
  elements always exist (zero-filled) and cannot be deleted.
- **per-CPU** variants (``PERCPU_HASH``, ``PERCPU_ARRAY``, ``LRU_PERCPU_HASH``) keep one value
  per possible CPU so programs update them without atomics; user space reads and writes all of
  them at once, each padded to 8 bytes. Here such a value is a list, one item per CPU.
- a **ring buffer** (``RINGBUF``) has no keys at all, so dict operations on it raise
  :class:`~pybpf.errors.UsageError`; its records are read through :mod:`pybpf.ringbuf`, and
  its size (``max_entries``, in bytes) is checked to be a power-of-2 multiple of the page
  size before the kernel is asked. A ``PERF_EVENT_ARRAY`` holds perf event fds, one per CPU
  (:mod:`pybpf.perfbuf`); declared without ``max_entries`` it gets one slot per possible CPU.

User space walks a map one key at a time (``BPF_MAP_GET_NEXT_KEY`` then
``BPF_MAP_LOOKUP_ELEM``: two system calls per element) or, since Linux 5.6, many elements per
call with the **batch** commands (``BPF_MAP_LOOKUP_BATCH`` and friends), which is what makes
reading 100k elements fast. Not every map type has them (device maps have none, arrays cannot
delete): :class:`Map` asks the kernel once per command and map type, uses the batch command
where it exists and goes element by element elsewhere, behind the ``MutableMapping``
interface. Mistakes caught before any system call (a closed map, a key of the wrong size)
raise :class:`~pybpf.errors.UsageError`; the kernel's refusals raise :class:`MapError` and
its subclasses.

Keys and values are ``bytes`` of exactly the map's sizes, or Python objects when the map is
given types: a ``struct`` format (``key_type="<I"`` for a u32 int, ``"16s"`` for 16 bytes,
``"<IQ"`` for a tuple of two ints) or a ``construct`` type (``key_type=Int32ul``, a
``Struct``). One-number formats (and construct's integer types, which are such formats) are
decoded with one ``struct.unpack`` over a whole batch buffer. construct is imported only by
whoever makes a construct type: a program whose maps use formats never pays its import.
"""

from __future__ import annotations

import errno
import mmap
import os
import struct
from collections.abc import ItemsView, Iterable, Mapping, MutableMapping, ValuesView
from contextlib import ExitStack, suppress
from typing import Any, List, Tuple, Union

from . import errnos, features, syscalls
from .abi import Cmd, MapFlags, MapType, UpdateFlags
from .errnos import ENOTSUPP
from .errors import MapError, MapKeyError, SyscallError, UsageError
from .fd import FD, KernelObject, map_shared
from .host import perf_event_max_stack, possible_cpus
from .spec import MapSpec

DEFAULT_CHUNK = 16384  # elements asked for per batch system call

PERCPU_TYPES = frozenset({MapType.PERCPU_HASH, MapType.PERCPU_ARRAY,
                          MapType.LRU_PERCPU_HASH, MapType.PERCPU_CGROUP_STORAGE})
ARRAY_TYPES = frozenset({MapType.ARRAY, MapType.PERCPU_ARRAY})
RING_TYPES = frozenset({MapType.RINGBUF, MapType.USER_RINGBUF})
KEYLESS_TYPES = RING_TYPES | {MapType.QUEUE, MapType.STACK, MapType.BLOOM_FILTER}
PAGE_SIZE = mmap.PAGESIZE
READERS = {MapType.RINGBUF: "pybpf.ringbuf.RingBuffer",  # what reads the records of a map
           MapType.PERF_EVENT_ARRAY: "pybpf.perfbuf.PerfBuffer"}
# Map types whose keys and values are fds, stack frames or nothing, which the kernel refuses
# to describe with BTF (ENOTSUPP or EINVAL): libbpf creates them without BTF key/value types.
BTF_REFUSED = frozenset({
    MapType.PERF_EVENT_ARRAY, MapType.CGROUP_ARRAY, MapType.STACK_TRACE,
    MapType.ARRAY_OF_MAPS, MapType.HASH_OF_MAPS, MapType.DEVMAP, MapType.DEVMAP_HASH,
    MapType.CPUMAP, MapType.XSKMAP, MapType.SOCKMAP, MapType.SOCKHASH, MapType.QUEUE,
    MapType.STACK})
_NO_BTF_ERRNOS = frozenset({errno.EINVAL, errno.EOPNOTSUPP, ENOTSUPP})
DEFAULT_MAX_STACK = 127  # PERF_MAX_STACK_DEPTH: kernel.perf_event_max_stack's default
_REOPEN = "open it again (Map.from_pinned / Map.from_id) to use it"


def _map_type(value):
    """``value`` as a MapType; a type newer than pybpf's table stays a plain int."""
    try:
        return MapType(value)
    except ValueError:
        return value


def kernel_spec(spec: MapSpec) -> MapSpec:
    """``spec`` as the kernel must get it, as libbpf adjusts it, checked before
    ``BPF_MAP_CREATE`` (where the kernel would answer a bare EINVAL):

    - a ring buffer's size, and a stack trace map's frames (``perf_event_max_stack``);
    - a ``PERF_EVENT_ARRAY`` declared without ``max_entries`` gets one slot per possible CPU,
      a ``STACK_TRACE`` map declared without ``value_size`` room for ``perf_event_max_stack``
      frames (as libbpf-tools' profile sizes it before loading);
    - the map types in :data:`BTF_REFUSED` lose their BTF key/value type ids;
    - a global data map (``spec.section``) loses ``BPF_F_MMAPABLE`` on kernels before 5.5.
    """
    if spec.type in RING_TYPES:
        check_ring_size(spec.max_entries, f"map {spec.name!r}", MapType(spec.type).name)
    if spec.type == MapType.STACK_TRACE:
        if spec.value_size == 0:
            spec = spec.copy(value_size=8 * (perf_event_max_stack() or DEFAULT_MAX_STACK))
        _check_stack_size(spec)
    if spec.type == MapType.PERF_EVENT_ARRAY and spec.max_entries == 0:
        spec = spec.copy(max_entries=possible_cpus())
    if spec.type in BTF_REFUSED and (spec.btf_key_type_id or spec.btf_value_type_id):
        spec = spec.copy(btf_key_type_id=0, btf_value_type_id=0)
    if spec.section and spec.flags & MapFlags.MMAPABLE and not features.have("mmapable_array"):
        spec = spec.copy(flags=spec.flags & ~MapFlags.MMAPABLE)
    return spec


def _check_stack_size(spec):
    """UsageError unless a STACK_TRACE map's value (8 bytes per frame) holds at most
    ``kernel.perf_event_max_stack`` frames, as BPF_MAP_CREATE demands."""
    frames, most = spec.value_size // 8, perf_event_max_stack()
    if spec.value_size % 8 or not spec.value_size or (most is not None and frames > most):
        raise UsageError(f"map {spec.name!r}: a STACK_TRACE map's value_size is 8 bytes per "
                         f"frame, at most perf_event_max_stack ({most}) frames: "
                         f"{spec.value_size} is not; use {8 * (most or DEFAULT_MAX_STACK)} or "
                         f"less, or raise sysctl kernel.perf_event_max_stack")


def check_ring_size(size, what, type_name="RINGBUF"):
    """UsageError unless ``size`` (bytes) can be a ring buffer's: a power of 2 and a multiple
    of the page size, which is what ``BPF_MAP_CREATE`` demands of ``max_entries``."""
    if isinstance(size, int) and not isinstance(size, bool) and size >= PAGE_SIZE \
            and size & (size - 1) == 0:
        return
    hint = f"e.g. {PAGE_SIZE * 64} (256 KiB with 4 KiB pages)"
    if isinstance(size, int) and not isinstance(size, bool) and size > PAGE_SIZE:
        below = 1 << (size.bit_length() - 1)
        hint = f"use {below} or {below * 2}"
    raise UsageError(f"{what}: a {type_name} map's max_entries is its size in bytes, which "
                     f"must be a power of 2 and a multiple of the page size ({PAGE_SIZE}), "
                     f"not {size!r}; {hint}")


def _round_up8(size):
    return (size + 7) & ~7


_UNSIGNED = {1: "B", 2: "<H", 4: "<I", 8: "<Q"}  # struct formats of little-endian uN
_NUMBERS = frozenset("bBhHiIlLqQefd?")  # struct codes whose repeat count means "N numbers"


def _codec(what, ctype, size, stride):
    """The codec for one kind of map slot (a key, or one CPU's value) typed by ``ctype``.

    ``size`` is the slot's size in the kernel, ``stride`` the distance between two slots in a
    buffer (per-CPU values are padded to 8 bytes). Sizes are checked here, before any system
    call.
    """
    if ctype is None:
        return _BytesCodec(what, size, stride)
    if isinstance(ctype, str):
        return _StructCodec(what, ctype, size, stride)
    import construct  # only reached with a construct type: construct is already imported

    if isinstance(ctype, construct.FormatField):  # Int32ul is the struct format "<L"
        return _StructCodec(what, ctype.fmtstr, size, stride)
    if isinstance(ctype, construct.Construct):
        return _ConstructCodec(what, ctype, size, stride)
    raise UsageError(f"{what}_type must be a struct format such as \"<I\", a construct "
                     f"type or None (bytes), got {ctype!r}")


def _slots(data, size, stride):
    """Views of the ``size``-byte slots that start every ``stride`` bytes of ``data``."""
    view = memoryview(data)
    return [view[i:i + size] for i in range(0, len(view), stride)]


def _check_size(what, type_size, size):
    """Refuse a key/value type whose size differs from the map's."""
    if type_size != size:
        raise UsageError(f"{what} type is {type_size} bytes, map {what}_size is {size}")


class _BytesCodec:
    """Untyped slots: ``bytes`` of exactly the slot's size, in and out."""

    def __init__(self, what, size, stride):
        self.what, self.size, self.stride = what, size, stride

    def encode(self, obj):
        """``obj`` padded to ``stride`` bytes; UsageError saying what to pass if it is wrong."""
        if isinstance(obj, (bytes, bytearray, memoryview)):
            data = bytes(obj)  # a memoryview's len() counts items, not bytes
            if len(data) == self.size:
                return data.ljust(self.stride, b"\0")
            got = f"{len(data)} bytes"
        else:
            got = type(obj).__name__
        hint = ""
        if isinstance(obj, int):
            hint = f"; pass ({obj}).to_bytes({self.size}, 'little')"
            if self.size in _UNSIGNED:
                hint += (f", or create the map with {self.what}_type="
                         f"\"{_UNSIGNED[self.size]}\" to use ints")
        raise UsageError(f"{self.what} must be bytes of length {self.size} (the map's "
                         f"{self.what}_size), got {got}{hint}")

    def decode(self, data):
        """Every slot in ``data`` (a multiple of ``stride`` bytes) as ``bytes``."""
        return [bytes(slot) for slot in _slots(data, self.size, self.stride)]


class _StructCodec:
    """Slots described by a ``struct`` format: ``"<I"`` is an int, ``"16s"`` 16 bytes,
    ``"<IQ"`` a tuple of two ints. One-number formats decode a whole buffer in one call."""

    def __init__(self, what, fmt, size, stride):
        self.what, self.size = what, size
        try:
            layout = struct.Struct(fmt)
        except struct.error as exc:
            raise UsageError(f"{what} type {fmt!r} is not a struct format: {exc}") from None
        _check_size(what, layout.size, size)
        self._struct = struct.Struct(f"{fmt}{stride - size}x") if stride > size else layout
        self._scalar = len(layout.unpack(bytes(size))) == 1
        self._whole = _whole_buffer_format(fmt) if stride == size else None

    def encode(self, obj):
        """``obj`` (a value, or a tuple for several fields) packed; UsageError if it cannot be."""
        try:
            return self._struct.pack(obj) if self._scalar else self._struct.pack(*obj)
        except (struct.error, TypeError) as exc:
            raise UsageError(f"cannot encode {self.what} {obj!r} with the map's {self.what} "
                             f"type {self._struct.format!r}: {exc}") from None

    def decode(self, data):
        """Every slot in ``data`` (a multiple of ``stride`` bytes), decoded, as a list."""
        if self._whole is not None:
            # one unpack of the whole buffer: "<100000L" decodes 100000 u32s in one C call
            return list(struct.unpack(self._whole.format(len(data) // self.size), data))
        if self._scalar:
            return [item for (item,) in self._struct.iter_unpack(data)]
        return list(self._struct.iter_unpack(data))


def _whole_buffer_format(fmt):
    """``"<{}L"`` for a one-number format such as ``"<L"``, else None (``"16s"``, ``"<IQ"``)."""
    order, code = (fmt[0], fmt[1:]) if fmt[:1] in ("@", "=", "<", ">", "!") else ("", fmt)
    return f"{order}{{}}{code}" if len(code) == 1 and code in _NUMBERS else None


class _ConstructCodec:
    """Slots described by any fixed-size construct type (a Struct, an Array, ``Bytes(16)``)."""

    def __init__(self, what, ctype, size, stride):
        import construct  # construct is already imported: the caller made ``ctype`` with it

        self.what, self.ctype, self.size, self.stride = what, ctype, size, stride
        self._error = construct.ConstructError
        try:
            type_size = ctype.sizeof()
        except construct.ConstructError:
            raise UsageError(f"{what} type has no fixed size; map {what}s are {size} bytes, "
                             f"use a fixed-size construct type") from None
        _check_size(what, type_size, size)

    def encode(self, obj):
        """``obj`` built and padded to ``stride`` bytes; UsageError if it cannot be built."""
        try:
            return self.ctype.build(obj).ljust(self.stride, b"\0")
        except (struct.error, self._error) as exc:
            raise UsageError(f"cannot encode {self.what} {obj!r} with the map's "
                             f"{self.what} type: {exc}") from None

    def decode(self, data):
        """Every slot in ``data`` (a multiple of ``stride`` bytes), parsed, as a list."""
        return [self.ctype.parse(slot) for slot in _slots(data, self.size, self.stride)]


class _ItemsView(ItemsView):
    """``map.items()``: iterates without failing when keys vanish meanwhile."""

    def __iter__(self):
        return self._mapping._iter_items()


class _ValuesView(ValuesView):
    """``map.values()``: iterates without failing when keys vanish meanwhile."""

    def __iter__(self):
        return (value for _, value in self._mapping._iter_items())


class Map(KernelObject, MutableMapping):
    """A BPF map owned through its file descriptor, used like a dict.

    ``len(m)`` walks the whole map (the kernel keeps no count). Iteration tolerates elements
    deleted meanwhile (they are skipped); since a hash map restarts from its first key when the
    current key is deleted, a walk longer than ``max_entries`` steps raises :class:`MapError`
    instead of looping forever. ``update()`` is the kernel's (key, value, flags), not
    ``dict.update``.
    """

    def __init__(self, spec: MapSpec, *, btf_fd: int = 0):
        spec = kernel_spec(spec)
        self._bind(spec)
        self._fd = FD(self._create_or_without_btf(btf_fd), f"map {spec.name!r}", _REOPEN)
        self._fill(spec)

    # --- construction -------------------------------------------------------------------

    @classmethod
    def create(cls, type, key_size, value_size, max_entries, *, flags=0, name="",
               key_type=None, value_type=None) -> "Map":
        """Create a new map (``BPF_MAP_CREATE``) from its parameters."""
        return cls(MapSpec(name=name, type=_map_type(type), key_size=key_size,
                           value_size=value_size, max_entries=max_entries, flags=flags,
                           key_type=key_type, value_type=value_type))

    @classmethod
    def from_pinned(cls, path, *, key_type=None, value_type=None) -> "Map":
        """Open the map pinned at ``path`` on a bpf file system (``BPF_OBJ_GET``)."""
        m = cls._from_fd(syscalls.obj_get(path), key_type, value_type)
        m._pinned = path
        return m

    @classmethod
    def from_id(cls, map_id, *, key_type=None, value_type=None) -> "Map":
        """Open an existing map by its kernel id (as listed by ``bpftool map``)."""
        return cls._from_fd(syscalls.map_get_fd_by_id(map_id), key_type, value_type)

    @classmethod
    def _from_fd(cls, fd, key_type, value_type):
        """Wrap a map fd we now own, describing it with ``BPF_OBJ_GET_INFO_BY_FD``."""
        owned = FD(fd, "map", _REOPEN)
        try:
            info = syscalls.obj_get_info_by_fd(fd, "map")
            spec = MapSpec(name=info["name"], type=_map_type(info["type"]),
                           key_size=info["key_size"], value_size=info["value_size"],
                           max_entries=info["max_entries"], flags=info["map_flags"],
                           map_extra=info["map_extra"], key_type=key_type,
                           value_type=value_type)
            m = cls.__new__(cls)
            m._bind(spec)
        except BaseException:
            owned.close()
            raise
        owned.what = f"map {spec.name!r}"
        m._fd = owned
        return m

    def _bind(self, spec):
        """Remember ``spec`` and compile its key/value codecs (checking the sizes up front)."""
        self._pinned = None
        self._mmap = None
        self.spec = spec
        self.type = _map_type(spec.type)
        self._ncpus = possible_cpus() if self.type in PERCPU_TYPES else 1
        stride = _round_up8(spec.value_size) if self.type in PERCPU_TYPES else spec.value_size
        self._keys = _codec("key", spec.key_type, spec.key_size, spec.key_size)
        self._values = _codec("value", spec.value_type, spec.value_size, stride)
        self._value_bytes = stride * self._ncpus

    def _create_or_without_btf(self, btf_fd):
        """``BPF_MAP_CREATE``; refused with BTF key/value types, once more without them (as
        libbpf retries: the map is the same, only its BTF description is lost)."""
        spec = self.spec
        try:
            return self._create(spec, btf_fd)
        except SyscallError as exc:
            described = spec.btf_key_type_id or spec.btf_value_type_id
            if not btf_fd or not described or exc.errno not in _NO_BTF_ERRNOS:
                raise
        self.spec = spec.copy(btf_key_type_id=0, btf_value_type_id=0)
        return self._create(self.spec, 0)

    @staticmethod
    def _create(spec, btf_fd):
        """``BPF_MAP_CREATE``; a map of maps gets a temporary inner map as its template (with
        the same BTF). Key/value type ids are passed only with the BTF they are ids in."""
        features.ensure_memlock()
        with ExitStack() as stack:
            inner_fd = 0
            if spec.inner_map is not None:
                inner_fd = stack.enter_context(Map(spec.inner_map, btf_fd=btf_fd)).fd
            return syscalls.map_create(
                spec.type, spec.key_size, spec.value_size, spec.max_entries, spec.flags,
                spec.name, inner_map_fd=inner_fd, numa_node=spec.numa_node, btf_fd=btf_fd,
                btf_key_type_id=spec.btf_key_type_id if btf_fd else 0,
                btf_value_type_id=spec.btf_value_type_id if btf_fd else 0,
                map_extra=spec.map_extra)

    def _fill(self, spec):
        """Write ``spec.data`` into element 0 (global data sections) and freeze if asked."""
        try:
            if spec.data is not None:
                value = bytes(spec.data).ljust(self._value_bytes, b"\0")
                syscalls.map_update_elem(self.fd, bytes(self.key_size), value)
            if spec.freeze:
                self.freeze()
        except BaseException:
            self.close()
            raise

    # --- attributes ---------------------------------------------------------------------

    name = property(lambda self: self.spec.name, doc="The map's name (at most 15 bytes).")
    key_size = property(lambda self: self.spec.key_size, doc="Bytes per key.")
    value_size = property(lambda self: self.spec.value_size, doc="Bytes per value (per CPU).")
    max_entries = property(lambda self: self.spec.max_entries, doc="Capacity.")

    @property
    def type_name(self) -> str:
        """The map type's name (``HASH``), or its number for a type newer than pybpf."""
        return getattr(self.type, "name", str(self.type))

    @property
    def id(self) -> int:
        """The kernel's id of this map (what ``bpftool map show`` lists)."""
        return syscalls.obj_get_info_by_fd(self.fd, "map")["id"]

    def __repr__(self):
        state = "closed" if self.closed else f"fd={self.fd}"
        return (f"<Map {self.name!r} {self.type_name} key_size={self.key_size} "
                f"value_size={self.value_size} max_entries={self.max_entries} {state}>")

    def _keyed_fd(self, op):
        """The fd for a key/value operation; a clear error for maps that have no keys."""
        fd = self.fd
        if self.type in KEYLESS_TYPES:
            reader = f"; read its records with {READERS[self.type]}" \
                if self.type in READERS else ""
            raise UsageError(f"{op}: {self.type_name} map {self.name!r} has no keys, so dict "
                             f"operations do not apply{reader}")
        return fd

    # --- encoding -------------------------------------------------------------------------

    def _encode_value(self, value):
        if self.type not in PERCPU_TYPES:
            return self._values.encode(value)
        if not isinstance(value, (list, tuple)) or len(value) != self._ncpus:
            raise UsageError(f"per-CPU map {self.name!r} needs a list of {self._ncpus} values "
                             f"(one per possible CPU), got {value!r}")
        return b"".join(self._values.encode(v) for v in value)

    def _decode_values(self, data):
        """The values in a buffer of whole entries: a list per entry for per-CPU maps."""
        items = self._values.decode(data)
        if self.type not in PERCPU_TYPES:
            return items
        n = self._ncpus
        return [items[i:i + n] for i in range(0, len(items), n)]

    def _error(self, exc, cmd, key=errnos.Context.NO_KEY):
        """``exc`` as the exception its errno means for this map: :func:`pybpf.errnos.error`
        with the map's name, type and size, and ``key`` (None: one of the keys of a batch)."""
        context = errnos.Context(f"map {self.name!r}", key, self.type, self.max_entries)
        return errnos.error(cmd, exc.errno, context=context)

    # --- single elements ------------------------------------------------------------------

    def __getitem__(self, key):
        raw = self._lookup_raw(self._keys.encode(key), key)
        return self._decode_values(raw)[0]

    def lookup(self, key: Any, default: Any = None) -> Any:
        """The value of ``key``, or ``default`` when the map has no such key."""
        try:
            return self[key]
        except MapKeyError:
            return default

    def __setitem__(self, key, value):
        self.update(key, value)

    def update(self, key: Any, value: Any,  # type: ignore[override]  # not dict.update
               flags: int = UpdateFlags.ANY) -> None:
        """Set ``key`` to ``value``; ``flags`` NOEXIST creates only, EXIST overwrites only.

        Raises KeyExistsError (NOEXIST, key present), MapKeyError (EXIST, key absent; or an
        array index out of range), MapFullError (no room for a new key).
        """
        fd = self._keyed_fd("update")
        raw_key, raw_value = self._keys.encode(key), self._encode_value(value)
        try:
            syscalls.map_update_elem(fd, raw_key, raw_value, flags)
        except SyscallError as exc:
            raise self._error(exc, Cmd.MAP_UPDATE_ELEM, key) from None

    def __delitem__(self, key):
        fd = self._deletable("delete")
        try:
            syscalls.map_delete_elem(fd, self._keys.encode(key))
        except SyscallError as exc:
            raise self._error(exc, Cmd.MAP_DELETE_ELEM, key) from None

    def __contains__(self, key):
        try:
            self._lookup_raw(self._keys.encode(key), key)
        except MapKeyError:
            return False
        return True

    def _lookup_raw(self, raw_key, key):
        try:
            return syscalls.map_lookup_elem(self._keyed_fd("lookup"), raw_key, self._value_bytes)
        except SyscallError as exc:
            raise self._error(exc, Cmd.MAP_LOOKUP_ELEM, key) from None

    # --- iteration ------------------------------------------------------------------------

    def _raw_keys(self):
        """Every key as bytes, by ``BPF_MAP_GET_NEXT_KEY``, at most ``max_entries`` steps.

        The fd is asked for at every step: a map closed during the walk raises UsageError
        (its number may already name another map).
        """
        self._keyed_fd("iterate")
        key = None
        for _ in range(self.max_entries):
            key = syscalls.map_get_next_key(self.fd, key, self.key_size)
            if key is None:
                return
            yield key
        if syscalls.map_get_next_key(self.fd, key, self.key_size) is not None:
            raise MapError(errno.EAGAIN, "BPF_MAP_GET_NEXT_KEY",
                           f"iteration of map {self.name!r} aborted after {self.max_entries} "
                           f"steps: keys were deleted meanwhile and the walk restarted from the "
                           f"first key; retry, or use lookup_batch()")

    def _raw_items(self):
        """(key, value) bytes pairs; keys deleted between next-key and lookup are skipped."""
        for raw_key in self._raw_keys():
            try:
                yield raw_key, syscalls.map_lookup_elem(self.fd, raw_key, self._value_bytes)
            except MapKeyError:
                continue

    def _iter_items(self):
        for raw_key, raw_value in self._raw_items():
            yield self._keys.decode(raw_key)[0], self._decode_values(raw_value)[0]

    def __iter__(self):
        return (self._keys.decode(raw)[0] for raw in self._raw_keys())

    def __len__(self):
        """The number of elements, counted by walking every key (one system call each)."""
        return sum(1 for _ in self._raw_keys())

    def items(self):
        return _ItemsView(self)

    def values(self):
        return _ValuesView(self)

    def clear(self) -> None:
        """Delete every element; array maps, whose elements cannot go, are zero-filled."""
        fd = self._keyed_fd("clear")
        if self.type in ARRAY_TYPES:
            zero = bytes(self._value_bytes)
            for raw_key in self._raw_keys():
                syscalls.map_update_elem(fd, raw_key, zero)
            return
        for raw_key in list(self._raw_keys()):
            with suppress(MapKeyError):
                syscalls.map_delete_elem(fd, raw_key)

    # --- batch operations -----------------------------------------------------------------
    #
    # A batch that fails part way has done part of its work: the exception carries it,
    # ``err.partial`` (the pairs read) or ``err.count`` (the elements written or deleted).

    def lookup_batch(self, chunk: int = DEFAULT_CHUNK) -> List[Tuple[Any, Any]]:
        """Every (key, value) pair, read ``chunk`` elements per ``BPF_MAP_LOOKUP_BATCH`` call.

        Walks key by key where the kernel or map type has no batch lookup.
        """
        chunk = _chunk(chunk, self.max_entries)
        if not self._has_batch(Cmd.MAP_LOOKUP_BATCH, "lookup_batch"):
            return self._decode_pairs(*self._each(self._lookup_each))
        return self._batch(syscalls.map_lookup_batch, Cmd.MAP_LOOKUP_BATCH, chunk)

    def lookup_and_delete_batch(self, chunk: int = DEFAULT_CHUNK) -> List[Tuple[Any, Any]]:
        """Every (key, value) pair, deleting them as they are read (hash maps only).

        On a failure part way, ``err.partial`` holds the pairs already read and deleted: they
        are in no map any more.
        """
        self._deletable("lookup_and_delete_batch")
        chunk = _chunk(chunk, self.max_entries)
        if not self._has_batch(Cmd.MAP_LOOKUP_AND_DELETE_BATCH, "lookup_and_delete_batch"):
            return self._decode_pairs(*self._each(self._lookup_and_delete_each))
        return self._batch(syscalls.map_lookup_and_delete_batch, Cmd.MAP_LOOKUP_AND_DELETE_BATCH,
                           chunk)

    def update_batch(self, pairs: Union[Mapping, Iterable[Tuple[Any, Any]]],
                     flags: int = UpdateFlags.ANY) -> int:
        """Set many (key, value) pairs (a dict or an iterable of pairs); returns how many.

        With ``flags`` ANY or F_LOCK this is one ``BPF_MAP_UPDATE_BATCH`` system call. The
        batch command knows no NOEXIST or EXIST, so those go element by element, one
        ``BPF_MAP_UPDATE_ELEM`` each, as do map types and kernels without the batch command.
        Either way the pairs are stored in order up to the first failure, whose exception's
        ``count`` says how many were stored. Every key and value is encoded (and checked)
        before the first is stored.
        """
        fd = self._keyed_fd("update_batch")
        pairs = _pairs(pairs)
        raw = [(self._keys.encode(k), self._encode_value(v)) for k, v in pairs]
        if flags in (UpdateFlags.ANY, UpdateFlags.F_LOCK) and \
                self._has_batch(Cmd.MAP_UPDATE_BATCH, "update_batch"):
            try:
                return syscalls.map_update_batch(fd, b"".join(k for k, _ in raw),
                                                 b"".join(v for _, v in raw), len(raw),
                                                 elem_flags=flags)
            except SyscallError as exc:
                raise self._partly(exc, Cmd.MAP_UPDATE_BATCH, count=exc.count) from None
        for done, ((key, _), (raw_key, raw_value)) in enumerate(zip(pairs, raw)):
            try:
                syscalls.map_update_elem(fd, raw_key, raw_value, flags)
            except SyscallError as exc:
                raise self._partly(exc, Cmd.MAP_UPDATE_ELEM, key, count=done) from None
        return len(raw)

    def delete_batch(self, keys: Iterable[Any]) -> int:
        """Delete many keys; returns how many.

        One ``BPF_MAP_DELETE_BATCH`` where the kernel has it for this map type, else one
        ``BPF_MAP_DELETE_ELEM`` per key. A missing key stops it with MapKeyError, whose
        ``count`` says how many keys were deleted before.
        """
        fd = self._deletable("delete_batch")
        keys = list(keys)
        raw = [self._keys.encode(k) for k in keys]
        if self._has_batch(Cmd.MAP_DELETE_BATCH, "delete_batch"):
            try:
                return syscalls.map_delete_batch(fd, b"".join(raw), len(raw))
            except SyscallError as exc:
                raise self._partly(exc, Cmd.MAP_DELETE_BATCH, count=exc.count) from None
        for done, (key, raw_key) in enumerate(zip(keys, raw)):
            try:
                syscalls.map_delete_elem(fd, raw_key)
            except SyscallError as exc:
                raise self._partly(exc, Cmd.MAP_DELETE_ELEM, key, count=done) from None
        return len(raw)

    def _has_batch(self, cmd, op):
        """Whether the kernel runs batch command ``cmd`` on maps of this type: asked once per
        command and map type (the ``batch`` feature probe), then remembered. Once a command is
        known to work, its failures are real errors, never a reason to fall back."""
        fd = self._keyed_fd(op)
        try:
            return features.have("batch", cmd, self.type, fd=fd)
        except SyscallError as exc:
            raise self._error(exc, cmd) from None

    def _deletable(self, op):
        """The fd for an operation that deletes elements; UsageError for arrays."""
        fd = self._keyed_fd(op)
        if self.type in ARRAY_TYPES:
            raise UsageError(f"{op}: array map {self.name!r} elements always exist and cannot "
                             f"be deleted; assign a zero value instead")
        return fd

    def _partly(self, exc, cmd, key=None, **done):
        """``exc`` named as :meth:`_error` does, carrying what was done before it (``partial``
        pairs or a ``count``)."""
        err = self._error(exc, cmd, key)
        for name, value in done.items():
            setattr(err, name, value)
        return err

    def _batch(self, command, cmd, chunk):
        """Run ``command``, a batch lookup (``cmd``), to the end; every pair it returned.

        ``chunk`` elements are asked for per call (never more than the map holds); a hash
        bucket with more elements than that (ENOSPC) doubles it. A call that returns nothing
        yet does not end the walk is an error, never a reason to loop.
        """
        keys, values, cursor = [], [], None
        while True:
            try:
                k, v, n, cursor_out, done = command(self.fd, cursor, self.key_size,
                                                    self._value_bytes, chunk)
                if n == 0 and not done:
                    raise MapError(errno.EAGAIN, f"BPF_{cmd.name}", (
                        f"map {self.name!r}: BPF_{cmd.name} returned no elements and did not "
                        f"reach the end (cursor {cursor!r}); the walk cannot go on"))
            except SyscallError as exc:
                if exc.errno == errno.ENOSPC and chunk < self.max_entries:
                    chunk = min(chunk * 2, self.max_entries)  # a hash bucket larger than chunk
                    continue
                read = self._decode_pairs(b"".join(keys), b"".join(values))
                raise self._partly(exc, cmd, partial=read) from None
            keys.append(k)
            values.append(v)
            if done:
                return self._decode_pairs(b"".join(keys), b"".join(values))
            cursor = cursor_out

    def _decode_pairs(self, keys, values):
        return list(zip(self._keys.decode(keys), self._decode_values(values)))

    def _each(self, step):
        """The slow path of the lookup batches: ``step(fd, raw_key)`` for every key, as
        (keys bytes, values bytes); keys that vanish meanwhile are skipped. A failure carries
        the pairs read before it in ``partial``."""
        fd, keys, values = self.fd, [], []
        for raw_key in list(self._raw_keys()):
            try:
                values.append(step(fd, raw_key))
            except MapKeyError:
                continue
            except SyscallError as exc:
                read = self._decode_pairs(b"".join(keys), b"".join(values))
                raise self._partly(exc, Cmd.MAP_LOOKUP_ELEM, partial=read) from None
            keys.append(raw_key)
        return b"".join(keys), b"".join(values)

    def _lookup_each(self, fd, raw_key):
        return syscalls.map_lookup_elem(fd, raw_key, self._value_bytes)

    def _lookup_and_delete_each(self, fd, raw_key):
        value = syscalls.map_lookup_elem(fd, raw_key, self._value_bytes)
        syscalls.map_delete_elem(fd, raw_key)
        return value

    # --- memory mapping (BPF_F_MMAPABLE arrays) -------------------------------------------

    def mmap(self):
        """The map's values mapped into this process (an ``mmap.mmap``, cached): an ARRAY
        created with ``BPF_F_MMAPABLE`` (global data, as libbpf's skeletons read and write it)
        is one block of ``max_entries`` values, each ``value_size`` rounded up to 8 bytes.
        Read-write, or read-only when the map is frozen or read-only for user space.
        Reads and writes go straight to the kernel's memory, seen by programs at once."""
        if self._mmap is None:
            if self.type != MapType.ARRAY or not self.spec.flags & MapFlags.MMAPABLE:
                raise UsageError(f"map {self.name!r} cannot be memory-mapped: only ARRAY maps "
                                 f"created with BPF_F_MMAPABLE can (global data is, on "
                                 f"kernels >= 5.5)")
            size = _round_up8(self.value_size) * self.max_entries
            length = (size + PAGE_SIZE - 1) // PAGE_SIZE * PAGE_SIZE
            writable = not (self.spec.freeze or self.spec.flags & MapFlags.RDONLY)
            self._mmap = map_shared(self.fd, length, 0, writable, f"map {self.name!r}")
        return self._mmap

    def close(self) -> None:
        """Unmap :meth:`mmap`'s memory and close the fd (safe to call twice)."""
        if self._mmap is not None:
            self._mmap.close()
            self._mmap = None
        super().close()

    # --- life cycle -----------------------------------------------------------------------

    def freeze(self) -> None:
        """Make the map read-only for user space from now on (``BPF_MAP_FREEZE``)."""
        syscalls.map_freeze(self.fd)

    def pin(self, path: str) -> None:
        """Pin the map at ``path`` on a bpf file system so it outlives this process
        (UsageError, saying how to mount one, when ``path`` is elsewhere)."""
        syscalls.obj_pin(self.fd, path)
        self._pinned = path

    def unpin(self) -> None:
        """Remove the pin made by pin() or opened by from_pinned(); no-op when not pinned."""
        if self._pinned is not None:
            os.unlink(self._pinned)
            self._pinned = None


def _chunk(chunk, max_entries):
    """``chunk`` checked: a whole number of elements >= 1, no more than the map can hold."""
    if isinstance(chunk, bool) or not isinstance(chunk, int) or chunk < 1:
        raise UsageError(f"chunk must be a whole number of elements >= 1, not {chunk!r}")
    return min(chunk, max(max_entries, 1))


def _pairs(pairs):
    """``pairs`` (a dict, or an iterable of (key, value)) as a list of 2-tuples; UsageError
    naming the first item that is not a pair."""
    items = list(pairs.items() if hasattr(pairs, "items") else pairs)
    for index, item in enumerate(items):
        if not isinstance(item, (tuple, list)) or len(item) != 2:
            raise UsageError(f"update_batch takes (key, value) pairs or a dict; item {index} "
                             f"is {item!r}")
    return items
