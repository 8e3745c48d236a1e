"""Collections: the maps and programs of one object, loaded together.

Programs refer to maps by name; the kernel wants map file descriptors. A :class:`Collection`
turns a :class:`~pybpf.spec.CollectionSpec` (from the DSL or :func:`pybpf.elf.load_spec`)
into kernel objects in dependency order: the BTF blob first (``BPF_BTF_LOAD``: it describes
map keys/values and the functions and source lines of the programs), then every map, then
every program with its map references resolved to those maps' fds.
"""

import os

from . import syscalls
from .errors import BTFError, SyscallError
from .maps import Map
from .program import Program
from .spec import CollectionSpec


class Collection:
    """Every map and program of ``spec``, created; close them all with :meth:`close`."""

    def __init__(self, spec: CollectionSpec, *, log_level=0):
        self.spec = spec
        self.maps = {}
        self.programs = {}
        self.btf_fd = None
        try:
            self.btf_fd = load_btf(spec.btf) if spec.btf else None
            for name, map_spec in spec.maps.items():
                self.maps[name] = Map(map_spec, btf_fd=self._btf_for(map_spec))
            for name, prog_spec in spec.programs.items():
                self.programs[name] = Program(prog_spec, self.maps, log_level=log_level,
                                              btf_fd=self.btf_fd or 0)
        except BaseException:
            self.close()
            raise

    def _btf_for(self, map_spec):
        """The BTF fd for a map whose key/value types are described in it, else 0."""
        described = map_spec.btf_key_type_id or map_spec.btf_value_type_id
        return self.btf_fd if described and self.btf_fd else 0

    def close(self):
        """Close every program, map and the BTF object (safe to call twice)."""
        for obj in list(self.programs.values()) + list(self.maps.values()):
            obj.close()
        if self.btf_fd is not None:
            fd, self.btf_fd = self.btf_fd, None
            os.close(fd)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __repr__(self):
        return (f"<Collection maps={sorted(self.maps)} programs={sorted(self.programs)}>")


def load_btf(btf):
    """``BPF_BTF_LOAD`` for raw BTF bytes; on rejection, BTFError with the kernel's reason."""
    try:
        return syscalls.btf_load(btf)[0]
    except SyscallError:
        pass  # load again with a log, to say why
    try:
        return syscalls.btf_load(btf, log_level=1, log_size=syscalls.LOG_SIZE)[0]
    except SyscallError as exc:
        reason = syscalls.log_summary(getattr(exc, "log", "")) or str(exc)
        raise BTFError(f"the kernel rejected the object's BTF: {reason}", section=".BTF"
                       ) from exc
