"""Collections: the maps and programs of one object, loaded together.

Programs refer to maps by name; the kernel wants map file descriptors. A :class:`Collection`
turns a :class:`~pybpf.spec.CollectionSpec` (from the DSL or :func:`pybpf.elf.load_spec`)
into kernel objects in dependency order: the BTF blob first (``BPF_BTF_LOAD``: it describes
map keys/values and the functions and source lines of the programs), then every map, then
every program with its map references resolved to those maps' fds.

Around that, what libbpf does when it loads an object:

- the ``.kconfig`` map is filled with the values of the object's ``__kconfig`` externs
  (:func:`pybpf.externs.kconfig_data`: the kernel's config, LINUX_KERNEL_VERSION...) and
  frozen, like ``.rodata``, so that the verifier prunes the code they disable;
- the ``.values`` initialisers of maps of maps are stored once every map exists, those of
  program arrays once every program is loaded;
- kfuncs, ``__ksym`` externs and the targets of fentry/tp_btf/lsm/iter programs are found in
  the kernel's BTF by one :class:`~pybpf.ksyms.Resolver`;
- :attr:`Collection.variables` reads and writes the global variables by name afterwards,
  through the data maps' memory (``BPF_F_MMAPABLE``), as a skeleton's ``skel->bss->x``.

A map declared with ``__uint(pinning, LIBBPF_PIN_BY_NAME)`` (``MapSpec.pinning == "by_name"``)
is shared between loads, as libbpf does it: it lives on as the file ``<pin_path>/<name>`` on
a bpf file system; the first load creates and pins it, later ones (of this or another
object) open the pinned map instead of creating a new one. Closing the collection leaves the
pin; remove the file to free the map.
"""

import os

from . import externs, features, host, ksyms, syscalls, verifier
from .abi import MapFlags, MapType
from .errors import BTFError, MapError, NotSupportedError, SyscallError, UsageError
from .fd import FD
from .host import BPFFS
from .maps import Map, kernel_spec
from .program import Program
from .spec import CollectionSpec
from .variables import Variables


class Collection:
    """Every map and program of ``spec``, created; close them all with :meth:`close`.

    ``pin_path`` is the bpffs directory of the maps pinned by name (libbpf's default too).
    Programs with CO-RE relocations are relocated against ``kernel_btf`` (a
    :class:`~pybpf.btf.kernel.KernelBTF`), by default the running kernel's. ``kconfig`` is
    the path of a kernel config file (plain or gzip) for the ``CONFIG_*`` externs, instead of
    the running kernel's (``/boot/config-$(uname -r)``, ``/proc/config.gz``); ``resolver``
    (a :class:`~pybpf.ksyms.Resolver`) where kernel symbols are looked up.
    """

    def __init__(self, spec: CollectionSpec, *, log_level: int = 0, pin_path: str = BPFFS,
                 kernel_btf=None, kconfig=None, resolver=None):
        self.spec = spec
        self.maps = {}
        self.programs = {}
        self._btf = None
        self._reused = set()  # the maps opened where they were pinned
        own = resolver is None
        resolver = resolver if resolver is not None else ksyms.Resolver()
        try:
            self._btf = FD(load_btf(spec.btf), "the object's BTF") if spec.btf else None
            for name, map_spec in spec.maps.items():
                if map_spec.section == externs.KCONFIG:
                    map_spec = map_spec.copy(data=_kconfig_data(spec, kconfig, resolver))
                self.maps[name] = self._map(map_spec, pin_path)
            self._init_slots(MapType.ARRAY_OF_MAPS, MapType.HASH_OF_MAPS)
            for name, prog_spec in spec.programs.items():
                self.programs[name] = Program(prog_spec, self.maps, log_level=log_level,
                                              btf_fd=self.btf_fd, kernel_btf=kernel_btf,
                                              resolver=resolver)
            self._init_slots(MapType.PROG_ARRAY)
        except BaseException:
            self.close()
            raise
        finally:
            if own:
                resolver.close()  # the programs hold the module BTF objects they use

    def _init_slots(self, *types):
        """Store the ``.values`` initialisers of the new maps of ``types``: the fd of the map
        (or program) each slot names, as libbpf does after creating them."""
        for name, m in self.maps.items():
            slots = self.spec.maps[name].init_slots
            if m.type not in types or not slots or name in self._reused:
                continue
            targets = self.programs if m.type == MapType.PROG_ARRAY else self.maps
            for slot, target in sorted(slots.items()):
                if target not in targets:
                    raise UsageError(f"map {name!r}: .values[{slot}] names {target!r}, which "
                                     f"is not in the collection")
                fd = targets[target].fd
                try:
                    syscalls.map_update_elem(m.fd, slot.to_bytes(4, "little"),
                                             fd.to_bytes(4, "little"))
                except SyscallError as exc:
                    raise MapError(exc.errno, "BPF_MAP_UPDATE_ELEM", (
                        f"map {name!r}: cannot store {target!r} in slot {slot} of its "
                        f".values: {exc}")) from None

    @property
    def variables(self) -> "LoadedVariables":
        """The global variables by name, read and written in the loaded data maps (through
        their memory when mapped): ``coll.variables["exec_count"]``. ``.rodata`` and
        ``.kconfig`` are frozen: set knobs on the spec before loading."""
        return LoadedVariables(self.maps, self.spec.var_info)

    def _map(self, spec, pin_path):
        """The map for ``spec``: new, or for a map pinned by name the one at
        ``<pin_path>/<name>`` (created and pinned there when nothing is)."""
        spec = kernel_spec(spec)
        if spec.pinning is None:
            return Map(spec, btf_fd=self._btf_for(spec))
        if spec.pinning != "by_name":
            raise NotSupportedError(f"map {spec.name!r} asks for pinning {spec.pinning!r}; "
                                    f"pybpf pins maps by name only")
        path = os.path.join(pin_path, spec.name)
        reuse = os.path.exists(path)
        if reuse:
            self._reused.add(spec.name)
            m = Map.from_pinned(path, key_type=spec.key_type, value_type=spec.value_type)
        else:
            m = Map(spec, btf_fd=self._btf_for(spec))
        try:
            if reuse:
                _check_reusable(m.spec, spec, path)
            else:
                m.pin(path)
        except BaseException:
            m.close()
            raise
        return m

    @property
    def btf_fd(self) -> int:
        """The fd of the object's BTF in the kernel, 0 when it has none."""
        return self._btf.fileno() if self._btf is not None else 0

    def _btf_for(self, map_spec):
        """The BTF fd for a map whose key/value types are described in it, else 0."""
        described = map_spec.btf_key_type_id or map_spec.btf_value_type_id
        return self.btf_fd if described else 0

    def close(self) -> None:
        """Close every program, map and the BTF object (safe to call twice)."""
        for obj in list(self.programs.values()) + list(self.maps.values()):
            obj.close()
        if self._btf is not None:
            self._btf.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __repr__(self):
        return (f"<Collection maps={sorted(self.maps)} programs={sorted(self.programs)}>")


_REUSE_FIELDS = ("type", "key_size", "value_size", "max_entries", "flags", "map_extra")


def _kconfig_data(spec, kconfig, resolver):
    """The ``.kconfig`` map's content for ``spec``'s externs: CONFIG_* from the file
    ``kconfig`` (else the running kernel's config), LINUX_* computed here."""
    names = {e.name for e in spec.externs.values() if e.section == externs.KCONFIG}
    virtual = {}
    if "LINUX_HAS_BPF_COOKIE" in names:
        virtual["LINUX_HAS_BPF_COOKIE"] = features.have("bpf_cookie")
    if "LINUX_HAS_SYSCALL_WRAPPER" in names:
        virtual["LINUX_HAS_SYSCALL_WRAPPER"] = resolver.has_syscall_wrapper()
    return externs.kconfig_data(spec.externs, lambda: host.kernel_config(kconfig),
                                host.kernel_version_release(), virtual)


class LoadedVariables(Variables):
    """Global variables read and written in a collection's data maps: through the map's
    memory when it is mapped (``BPF_F_MMAPABLE``), else with a lookup and an update."""

    def _read(self, var):
        m = self._map(var)
        if m.spec.flags & MapFlags.MMAPABLE:
            return m.mmap()[var.offset:var.offset + var.size]
        return syscalls.map_lookup_elem(m.fd, bytes(4), m.value_size)[
            var.offset:var.offset + var.size]

    def _write(self, var, raw):
        m = self._map(var)
        if m.spec.freeze:
            raise UsageError(f"variable {var.name!r} is in {var.section}, frozen read-only "
                             f"once loaded: set it before loading (spec.variables"
                             f"[{var.name!r}] = ...)")
        if m.spec.flags & MapFlags.MMAPABLE:
            m.mmap()[var.offset:var.offset + var.size] = raw
            return
        value = bytearray(syscalls.map_lookup_elem(m.fd, bytes(4), m.value_size))
        value[var.offset:var.offset + var.size] = raw
        syscalls.map_update_elem(m.fd, bytes(4), bytes(value))


def _check_reusable(pinned, declared, path):
    """UsageError unless the map ``pinned`` at ``path`` is the kind of map ``declared``
    (the fields libbpf compares before it reuses a pinned map)."""
    differ = [f"{field} {getattr(pinned, field)} (declared {getattr(declared, field)})"
              for field in _REUSE_FIELDS if getattr(pinned, field) != getattr(declared, field)]
    if differ:
        raise UsageError(f"map {declared.name!r}: the map pinned at {path} differs: "
                         f"{', '.join(differ)}; if it is stale, remove it (rm {path}), or "
                         f"load with another pin_path")


def load_btf(btf):
    """``BPF_BTF_LOAD`` for raw BTF bytes; on rejection, BTFError with the kernel's reason."""
    features.ensure_memlock()
    try:
        return syscalls.btf_load(btf)[0]
    except SyscallError:
        pass  # load again with a log, to say why
    try:
        return syscalls.btf_load(btf, log_level=1, log_size=syscalls.LOG_SIZE)[0]
    except SyscallError as exc:
        reason = verifier.summary(exc.log) or str(exc)
        raise BTFError(f"the kernel rejected the object's BTF: {reason}", section=".BTF"
                       ) from exc
