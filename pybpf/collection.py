"""Collections: the maps and programs of one object, loaded together.

Programs refer to maps by name; the kernel wants map file descriptors. A :class:`Collection`
turns a :class:`~pybpf.spec.CollectionSpec` (from the DSL or :func:`pybpf.elf.load_spec`)
into kernel objects in dependency order: the BTF blob first (``BPF_BTF_LOAD``: it describes
map keys/values and the functions and source lines of the programs), then every map, then
every program with its map references resolved to those maps' fds.

A map declared with ``__uint(pinning, LIBBPF_PIN_BY_NAME)`` (``MapSpec.pinning == "by_name"``)
is shared between loads, as libbpf does it: it lives on as the file ``<pin_path>/<name>`` on
a bpf file system; the first load creates and pins it, later ones (of this or another
object) open the pinned map instead of creating a new one. Closing the collection leaves the
pin; remove the file to free the map.
"""

import os

from . import features, syscalls, verifier
from .errors import BTFError, NotSupportedError, SyscallError, UsageError
from .fd import FD
from .host import BPFFS
from .maps import Map, kernel_spec
from .program import Program
from .spec import CollectionSpec


class Collection:
    """Every map and program of ``spec``, created; close them all with :meth:`close`.

    ``pin_path`` is the bpffs directory of the maps pinned by name (libbpf's default too).
    Programs with CO-RE relocations are relocated against ``kernel_btf`` (a
    :class:`~pybpf.btf.kernel.KernelBTF`), by default the running kernel's.
    """

    def __init__(self, spec: CollectionSpec, *, log_level: int = 0, pin_path: str = BPFFS,
                 kernel_btf=None):
        self.spec = spec
        self.maps = {}
        self.programs = {}
        self._btf = None
        try:
            self._btf = FD(load_btf(spec.btf), "the object's BTF") if spec.btf else None
            for name, map_spec in spec.maps.items():
                self.maps[name] = self._map(map_spec, pin_path)
            for name, prog_spec in spec.programs.items():
                self.programs[name] = Program(prog_spec, self.maps, log_level=log_level,
                                              btf_fd=self.btf_fd, kernel_btf=kernel_btf)
        except BaseException:
            self.close()
            raise

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
