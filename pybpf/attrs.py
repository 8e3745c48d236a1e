"""The kernel structs pybpf passes to bpf(2) and perf_event_open(2), declared with construct.

``bpf(cmd, attr, size)`` takes a pointer to ``union bpf_attr``; each command reads its own
member of that union. Each member is declared here as a ``construct`` Struct named after the
kernel's member, with the kernel's field names (include/uapi/linux/bpf.h), and only up to the
last field pybpf uses: the kernel accepts a shorter attr from older programs, and its size is
what each command passes. ``struct perf_event_attr`` and the info structs that
``BPF_OBJ_GET_INFO_BY_FD`` fills are here too.

These declarations are the single source of truth for the layouts, readable and checked
against the kernel's ``offsetofend`` in the tests. They are not used at run time:
``tools/gen_layouts.py`` turns them into :mod:`pybpf.layouts` (precompiled ``struct.Struct``
formats), which :mod:`pybpf.syscalls` uses, because importing construct costs about 30 ms.
After editing a declaration, run ``python tools/gen_layouts.py > pybpf/layouts.py``.
"""

from construct import Bytes, Int32ul, Int64ul, Padding, PaddedString, Struct

from .abi import BPF_OBJ_NAME_LEN

# ---------------------------------------------------------------------------------------------
# union bpf_attr members. Comments give the kernel's name of each (anonymous) member.

#: BPF_MAP_CREATE ("anonymous struct used by BPF_MAP_CREATE command")
MapCreateAttr = Struct(
    "map_type" / Int32ul,
    "key_size" / Int32ul,
    "value_size" / Int32ul,
    "max_entries" / Int32ul,
    "map_flags" / Int32ul,
    "inner_map_fd" / Int32ul,
    "numa_node" / Int32ul,
    "map_name" / PaddedString(BPF_OBJ_NAME_LEN, "ascii"),
    "map_ifindex" / Int32ul,
    "btf_fd" / Int32ul,
    "btf_key_type_id" / Int32ul,
    "btf_value_type_id" / Int32ul,
    "btf_vmlinux_value_type_id" / Int32ul,
    "map_extra" / Int64ul,
)

#: BPF_MAP_*_ELEM, BPF_MAP_GET_NEXT_KEY, BPF_MAP_FREEZE; ``value`` is also ``next_key``
MapElemAttr = Struct(
    "map_fd" / Int32ul,
    Padding(4),
    "key" / Int64ul,
    "value" / Int64ul,
    "flags" / Int64ul,
)

#: BPF_MAP_*_BATCH (union member ``batch``)
BatchAttr = Struct(
    "in_batch" / Int64ul,
    "out_batch" / Int64ul,
    "keys" / Int64ul,
    "values" / Int64ul,
    "count" / Int32ul,
    "map_fd" / Int32ul,
    "elem_flags" / Int64ul,
    "flags" / Int64ul,
)

#: BPF_PROG_LOAD ("anonymous struct used by BPF_PROG_LOAD command"), up to log_true_size (6.4)
ProgLoadAttr = Struct(
    "prog_type" / Int32ul,
    "insn_cnt" / Int32ul,
    "insns" / Int64ul,
    "license" / Int64ul,
    "log_level" / Int32ul,
    "log_size" / Int32ul,
    "log_buf" / Int64ul,
    "kern_version" / Int32ul,
    "prog_flags" / Int32ul,
    "prog_name" / PaddedString(BPF_OBJ_NAME_LEN, "ascii"),
    "prog_ifindex" / Int32ul,
    "expected_attach_type" / Int32ul,
    "prog_btf_fd" / Int32ul,
    "func_info_rec_size" / Int32ul,
    "func_info" / Int64ul,
    "func_info_cnt" / Int32ul,
    "line_info_rec_size" / Int32ul,
    "line_info" / Int64ul,
    "line_info_cnt" / Int32ul,
    "attach_btf_id" / Int32ul,
    "attach_prog_fd" / Int32ul,
    "core_relo_cnt" / Int32ul,
    "fd_array" / Int64ul,
    "core_relos" / Int64ul,
    "core_relo_rec_size" / Int32ul,
    "log_true_size" / Int32ul,
)

#: BPF_PROG_TEST_RUN (union member ``test``), up to ``cpu``
TestAttr = Struct(
    "prog_fd" / Int32ul,
    "retval" / Int32ul,
    "data_size_in" / Int32ul,
    "data_size_out" / Int32ul,
    "data_in" / Int64ul,
    "data_out" / Int64ul,
    "repeat" / Int32ul,
    "duration" / Int32ul,
    "ctx_size_in" / Int32ul,
    "ctx_size_out" / Int32ul,
    "ctx_in" / Int64ul,
    "ctx_out" / Int64ul,
    "flags" / Int32ul,
    "cpu" / Int32ul,
)

#: BPF_OBJ_PIN, BPF_OBJ_GET ("anonymous struct used by BPF_OBJ_* commands")
ObjAttr = Struct(
    "pathname" / Int64ul,
    "bpf_fd" / Int32ul,
    "file_flags" / Int32ul,
)

#: BPF_*_GET_NEXT_ID and BPF_*_GET_FD_BY_ID; ``start_id`` is also prog_id/map_id/link_id
GetIdAttr = Struct(
    "start_id" / Int32ul,
    "next_id" / Int32ul,
    "open_flags" / Int32ul,
)

#: BPF_OBJ_GET_INFO_BY_FD (union member ``info``)
InfoAttr = Struct(
    "bpf_fd" / Int32ul,
    "info_len" / Int32ul,
    "info" / Int64ul,
)

#: BPF_RAW_TRACEPOINT_OPEN (union member ``raw_tracepoint``), up to prog_fd
RawTracepointAttr = Struct(
    "name" / Int64ul,
    "prog_fd" / Int32ul,
)

#: BPF_BTF_LOAD ("anonymous struct for BPF_BTF_LOAD"), up to btf_log_true_size (6.4)
BtfLoadAttr = Struct(
    "btf" / Int64ul,
    "btf_log_buf" / Int64ul,
    "btf_size" / Int32ul,
    "btf_log_size" / Int32ul,
    "btf_log_level" / Int32ul,
    "btf_log_true_size" / Int32ul,
)

#: The four words every BPF_LINK_CREATE attr starts with; the union after them is read per
#: attach type, so each union member used is declared on its own. ``target_fd`` is also
#: ``target_ifindex``.
_LINK_CREATE_HEAD = (
    "prog_fd" / Int32ul,
    "target_fd" / Int32ul,
    "attach_type" / Int32ul,
    "flags" / Int32ul,
)

#: BPF_LINK_CREATE (union member ``link_create``), with its ``perf_event.bpf_cookie``
LinkCreateAttr = Struct(
    *_LINK_CREATE_HEAD,
    "bpf_cookie" / Int64ul,
)

#: BPF_LINK_CREATE for an iterator (BPF_TRACE_ITER): ``iter_info`` points to a
#: ``union bpf_iter_link_info`` (the map of a map iterator...), ``iter_info_len`` its size
LinkCreateIterAttr = Struct(
    *_LINK_CREATE_HEAD,
    "iter_info" / Int64ul,
    "iter_info_len" / Int32ul,
)

#: BPF_LINK_CREATE for fentry/fexit/fmod_ret/lsm/tp_btf (its ``tracing`` member)
LinkCreateTracingAttr = Struct(
    *_LINK_CREATE_HEAD,
    "target_btf_id" / Int32ul,
    Padding(4),
    "cookie" / Int64ul,
)

#: union bpf_iter_link_info, what an iterator walks (``iter_info`` of BPF_LINK_CREATE): its
#: ``map`` member (map iterators: the map's fd)...
IterLinkInfoMap = Struct(
    "map_fd" / Int32ul,
)

#: ... and its ``task`` member (task iterators: one thread, or one process, when not 0)
IterLinkInfoTask = Struct(
    "tid" / Int32ul,
    "pid" / Int32ul,
    "pid_fd" / Int32ul,
)

#: BPF_ITER_CREATE (union member ``iter_create``): a readable fd from an iterator's link
IterCreateAttr = Struct(
    "link_fd" / Int32ul,
    "flags" / Int32ul,
)

#: BPF_ENABLE_STATS (union member ``enable_stats``)
EnableStatsAttr = Struct(
    "type" / Int32ul,
)

#: struct perf_event_attr up to config2 (PERF_ATTR_SIZE_VER1). ``flags`` holds the bitfield
#: that starts with disabled (bit 0), inherit (1), pinned (2), exclusive (3)... watermark (14)
#: (pybpf.abi.PERF_ATTR_*); ``wakeup_events`` shares its place with ``wakeup_watermark``.
PerfEventAttr = Struct(
    "type" / Int32ul,
    "size" / Int32ul,
    "config" / Int64ul,
    "sample_period" / Int64ul,
    "sample_type" / Int64ul,
    "read_format" / Int64ul,
    "flags" / Int64ul,
    "wakeup_events" / Int32ul,
    "bp_type" / Int32ul,
    "config1" / Int64ul,
    "config2" / Int64ul,
)

#: struct perf_event_mmap_page, the first page of a perf event's mapped ring, up to data_size.
#: The kernel advances ``data_head`` as it writes records into the data area (``data_size``
#: bytes from ``data_offset``); the reader advances ``data_tail`` as it consumes them.
perf_event_mmap_page = Struct(
    "version" / Int32ul,
    "compat_version" / Int32ul,
    Padding(1016),  # lock ... __reserved: the self-monitoring fields, not used by pybpf
    "data_head" / Int64ul,
    "data_tail" / Int64ul,
    "data_offset" / Int64ul,
    "data_size" / Int64ul,
)

# Info structs the kernel fills for BPF_OBJ_GET_INFO_BY_FD (include/uapi/linux/bpf.h).

#: struct bpf_prog_info, up to attach_btf_id
bpf_prog_info = Struct(
    "type" / Int32ul,
    "id" / Int32ul,
    "tag" / Bytes(8),
    "jited_prog_len" / Int32ul,
    "xlated_prog_len" / Int32ul,
    "jited_prog_insns" / Int64ul,
    "xlated_prog_insns" / Int64ul,
    "load_time" / Int64ul,
    "created_by_uid" / Int32ul,
    "nr_map_ids" / Int32ul,
    "map_ids" / Int64ul,
    "name" / PaddedString(BPF_OBJ_NAME_LEN, "ascii"),
    "ifindex" / Int32ul,
    "gpl_compatible" / Int32ul,
    "netns_dev" / Int64ul,
    "netns_ino" / Int64ul,
    "nr_jited_ksyms" / Int32ul,
    "nr_jited_func_lens" / Int32ul,
    "jited_ksyms" / Int64ul,
    "jited_func_lens" / Int64ul,
    "btf_id" / Int32ul,
    "func_info_rec_size" / Int32ul,
    "func_info" / Int64ul,
    "nr_func_info" / Int32ul,
    "nr_line_info" / Int32ul,
    "line_info" / Int64ul,
    "jited_line_info" / Int64ul,
    "nr_jited_line_info" / Int32ul,
    "line_info_rec_size" / Int32ul,
    "jited_line_info_rec_size" / Int32ul,
    "nr_prog_tags" / Int32ul,
    "prog_tags" / Int64ul,
    "run_time_ns" / Int64ul,
    "run_cnt" / Int64ul,
    "recursion_misses" / Int64ul,
    "verified_insns" / Int32ul,
    "attach_btf_obj_id" / Int32ul,
    "attach_btf_id" / Int32ul,
    Padding(4),
)

#: struct bpf_map_info, up to map_extra
bpf_map_info = Struct(
    "type" / Int32ul,
    "id" / Int32ul,
    "key_size" / Int32ul,
    "value_size" / Int32ul,
    "max_entries" / Int32ul,
    "map_flags" / Int32ul,
    "name" / PaddedString(BPF_OBJ_NAME_LEN, "ascii"),
    "ifindex" / Int32ul,
    "btf_vmlinux_value_type_id" / Int32ul,
    "netns_dev" / Int64ul,
    "netns_ino" / Int64ul,
    "btf_id" / Int32ul,
    "btf_key_type_id" / Int32ul,
    "btf_value_type_id" / Int32ul,
    "btf_vmlinux_id" / Int32ul,
    "map_extra" / Int64ul,
)

#: struct bpf_btf_info: ``name`` is the address of a buffer of ``name_len`` bytes the kernel
#: fills with the BTF object's name ("vmlinux", a module's name; "" for a program's BTF)
bpf_btf_info = Struct(
    "btf" / Int64ul,
    "btf_size" / Int32ul,
    "id" / Int32ul,
    "name" / Int64ul,
    "name_len" / Int32ul,
    "kernel_btf" / Int32ul,
)

#: struct bpf_link_info: the common head; the per-type union stays raw bytes
bpf_link_info = Struct(
    "type" / Int32ul,
    "id" / Int32ul,
    "prog_id" / Int32ul,
    Padding(4),
    "details" / Bytes(48),
)
