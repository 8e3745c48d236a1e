"""The DSL: a :class:`Builder` whose every method call appends one instruction.

Names follow RFC 9669: ALU64 operations are bare (``add``), ALU32 ones end in ``32``
(``add32``); a :class:`~pybpf.asm.insn.Register` as second operand selects the register (X)
form, an int the immediate (K) form. Jump targets are label names or slot offsets. Every
operand is checked when the call is made, and a bad one raises AssemblerError naming the
instruction's index and the call.
"""

from __future__ import annotations

import functools
import inspect

from pybpf import abi
from pybpf.asm import opcodes as oc
from pybpf.asm.insn import Instruction, Register, shown, validate
from pybpf.asm.operands import address_spaces, helper_id, imm32, imm64, integer, offset, register
from pybpf.errors import AssemblerError


class CoreOperand:
    """A DSL operand whose value comes from the kernel's types at load (made by
    :mod:`pybpf.asm.core`): ``value`` is what the local declaration gives, ``relo`` the
    CO-RE relocation (a :class:`pybpf.btf.CoreRelo`) the instruction will carry."""

    __slots__ = ("value", "relo")

    def __init__(self, value: int, relo):
        self.value, self.relo = value, relo

    def __repr__(self):
        return f"<CO-RE {self.relo.describe()} = {self.value} locally>"


def _split_core_operand(method, builder, args, kwargs):
    """``(args, kwargs, relocation, parameter name)``: a DSL call's arguments with its
    CoreOperand replaced by the local value (the builder checks and encodes that as usual)."""
    bound = inspect.signature(method).bind(builder, *args, **kwargs)
    found = [(name, value) for name, value in bound.arguments.items()
             if isinstance(value, CoreOperand)]
    if len(found) > 1:
        raise AssemblerError("an instruction takes one CO-RE operand (it has one relocation)")
    name, operand = found[0]
    bound.arguments[name] = operand.value
    return bound.args[1:], bound.kwargs, operand.relo, name


def _place_core_operand(insn, relo, param):
    """``relo`` if the CO-RE operand went where the loader patches it (the offset of a
    load or store, the immediate of an ALU instruction or of lddw), else AssemblerError."""
    cls = insn.opcode & 0x07
    if cls in (oc.LDX, oc.ST, oc.STX):
        fits = param == "off"
    elif cls in (oc.ALU, oc.ALU64):
        fits = param == "src" and not insn.opcode & oc.X
    else:
        fits = insn.opcode == oc.LD_IMM64 and insn.src == 0 and param == "value"
    if not fits:
        raise AssemblerError(f"a CO-RE operand ({relo.describe()}) can be the offset of a load "
                             "or store, the immediate of an ALU instruction or the value of "
                             f"lddw; not the {param!r} of this instruction")
    return relo


def _dsl(method):
    """Run a builder method, validate its instruction, append it; errors name the call."""

    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        try:
            relo = None
            if any(isinstance(a, CoreOperand) for a in (*args, *kwargs.values())):
                args, kwargs, relo, param = _split_core_operand(method, self, args, kwargs)
            insn = method(self, *args, **kwargs)
            validate(insn)
            if relo is not None:
                insn.core = _place_core_operand(insn, relo, param)
        except AssemblerError as exc:
            text = ", ".join([shown(a) for a in args]
                             + [f"{k}={shown(v)}" for k, v in kwargs.items()])
            raise AssemblerError(exc.message, len(self._insns),
                                 f"{method.__name__}({text})") from None
        return self._append(insn)

    return wrapper


def _target(target):
    """(off, ref) for a jump target: a label name or an int slot offset."""
    if isinstance(target, str):
        return 0, target
    return integer(target, "a jump target: a label name or an int offset"), None


def _op(name, **selectors):
    """The Op of ``name`` matching ``selectors``, or AssemblerError listing what exists."""
    for what, meaning in (("size", "size"), ("value", "width")):  # access size, movsx width
        if what in selectors:
            selectors[what] = integer(selectors[what], f"an int {name} {meaning}")
    try:
        return oc.find(name, **selectors)
    except KeyError:
        ops = oc.BY_NAME[name]
        if "size" in selectors:
            sizes = ", ".join(str(op.size) for op in ops)
            raise AssemblerError(f"{name} has no {shown(selectors['size'])}-byte form "
                                 f"(sizes: {sizes})") from None
        values = ", ".join(str(op.value) for op in ops)
        raise AssemblerError(f"{name} width must be one of {values}, "
                             f"not {shown(selectors.get('value'))}") from None


def _alu(name, semantics, attr):
    def method(self, dst, src):
        if isinstance(src, Register):
            op = _op(name, x=True)
            return Instruction(op.opcode, register(dst), int(src), op.value)
        op = _op(name, x=False)
        return Instruction(op.opcode, register(dst), 0, op.value, imm32(src))
    method.__name__ = attr
    method.__doc__ = semantics + " (src: a register, or an int immediate)."
    return _dsl(method)


def _jump(name, semantics):
    def method(self, dst, src, target):
        off, ref = _target(target)
        if isinstance(src, Register):
            return Instruction(_op(name, x=True).opcode, register(dst), int(src), off, ref=ref)
        return Instruction(_op(name, x=False).opcode, register(dst), 0, off, imm32(src), ref=ref)
    method.__name__ = name
    method.__doc__ = semantics + ": to ``target``, a label name or a slot offset."
    return _dsl(method)


def _atomic(name, semantics):
    def method(self, size, dst, off, src):
        op = _op(name, size=size)
        return Instruction(op.opcode, register(dst), register(src), offset(off), op.value)
    method.__name__ = name
    method.__doc__ = semantics + "; size W or DW."
    return _dsl(method)


class Builder:
    """Collects instructions; ``b.instructions`` is the program."""

    def __init__(self):
        self._insns = []
        self._labels = []
        self._seen_labels = set()
        self._comment = None

    @property
    def instructions(self):
        """The list of instructions built so far (a label must not be left dangling)."""
        if self._labels:
            raise AssemblerError(f"label {self._labels[0]!r} at the end of the program names "
                                 "no instruction; add one after it (e.g. exit())",
                                 len(self._insns))
        return self._insns

    @property
    def next_index(self):
        """The index the next instruction will have (how many were built so far)."""
        return len(self._insns)

    def _append(self, insn):
        if self._labels:
            insn.labels = tuple(self._labels)
            self._labels = []
        if self._comment is not None:
            insn.comment, self._comment = self._comment, None
        self._insns.append(insn)
        return insn

    def label(self, name):
        """Name the next instruction ``name`` (a jump or call target)."""
        if name in self._seen_labels:
            raise AssemblerError(f"duplicate label {name!r}", len(self._insns), f"label({name!r})")
        self._seen_labels.add(name)
        self._labels.append(name)

    def comment(self, text):
        """Attach ``text`` (e.g. the C line implemented) to the next instruction."""
        self._comment = text if self._comment is None else f"{self._comment}\n{text}"

    @_dsl
    def neg(self, dst):
        """dst = -dst."""
        return Instruction(_op("neg").opcode, register(dst))

    @_dsl
    def neg32(self, dst):
        """dst = -dst, 32-bit."""
        return Instruction(_op("neg32").opcode, register(dst))

    @_dsl
    def movsx(self, dst, src, bits):
        """dst = src sign-extended from its low 8, 16 or 32 bits."""
        op = _op("movsx", value=bits)
        return Instruction(op.opcode, register(dst), register(src), bits)

    @_dsl
    def movsx32(self, dst, src, bits):
        """dst = low 32 bits of src sign-extended from its low 8 or 16 bits."""
        op = _op("movsx32", value=bits)
        return Instruction(op.opcode, register(dst), register(src), bits)

    @_dsl
    def addr_space_cast(self, dst, src, dst_as, src_as):
        """dst = src, a pointer cast from address space ``src_as`` to ``dst_as`` (Linux 6.9).

        For a BPF arena (``MapType.ARENA``), memory shared with user space: address space 1
        is the user-space address (what a program stores in the arena), 0 the kernel's view
        (what it dereferences). clang emits the cast for ``__arena`` pointers; the kernel
        accepts only ``(0, 1)`` and ``(1, 0)``.
        """
        op = _op("addr_space_cast")
        return Instruction(op.opcode, register(dst), register(src), op.value,
                           address_spaces(dst_as, src_as))

    @_dsl
    def le(self, dst, bits):
        """dst = dst converted to little endian (16, 32 or 64 bits)."""
        return Instruction(_op("le").opcode, register(dst), imm=bits)

    @_dsl
    def be(self, dst, bits):
        """dst = dst converted to big endian (16, 32 or 64 bits)."""
        return Instruction(_op("be").opcode, register(dst), imm=bits)

    @_dsl
    def bswap(self, dst, bits):
        """dst = dst byte-swapped unconditionally (16, 32 or 64 bits)."""
        return Instruction(_op("bswap").opcode, register(dst), imm=bits)

    @_dsl
    def ja(self, target):
        """Jump to ``target`` (16-bit offset)."""
        off, ref = _target(target)
        return Instruction(_op("ja").opcode, off=off, ref=ref)

    @_dsl
    def gotol(self, target):
        """Jump to ``target`` (32-bit offset, for long distances)."""
        off, ref = _target(target)
        return Instruction(_op("gotol").opcode, imm=off, ref=ref)

    @_dsl
    def may_goto(self, target):
        """Fall through while the loop budget lasts, then jump to ``target``."""
        off, ref = _target(target)
        return Instruction(_op("may_goto").opcode, off=off, ref=ref)

    @_dsl
    def call(self, helper):
        """Call a kernel helper by name (``"map_lookup_elem"``, ``"bpf_..."``) or id."""
        return Instruction(_op("call").opcode, imm=helper_id(helper))

    @_dsl
    def call_local(self, target):
        """Call the subprogram at label ``target`` (bpf-to-bpf call)."""
        off, ref = _target(target)
        return Instruction(_op("call_local").opcode, src=abi.PSEUDO_CALL, imm=off, ref=ref)

    @_dsl
    def call_kfunc(self, btf_id, fd_index=0):
        """Call the kernel function with ``btf_id`` (``fd_index``: module BTF in fd_array)."""
        return Instruction(_op("call_kfunc").opcode, src=abi.PSEUDO_KFUNC_CALL,
                           off=integer(fd_index, "an int fd_array index"),
                           imm=imm32(btf_id))

    @_dsl
    def exit(self):
        """Return r0 to the caller."""
        return Instruction(_op("exit").opcode)

    @_dsl
    def ldx(self, size, dst, src, off=0):
        """dst = *(size *)(src + off), zero-extended."""
        return Instruction(_op("ldx", size=size).opcode, register(dst), register(src), offset(off))

    @_dsl
    def ldxsx(self, size, dst, src, off=0):
        """dst = *(size *)(src + off), sign-extended (size B, H or W)."""
        op = _op("ldxsx", size=size)
        return Instruction(op.opcode, register(dst), register(src), offset(off))

    @_dsl
    def st(self, size, dst, off, imm):
        """*(size *)(dst + off) = imm."""
        return Instruction(_op("st", size=size).opcode, register(dst), 0, offset(off), imm32(imm))

    @_dsl
    def stx(self, size, dst, off, src):
        """*(size *)(dst + off) = src."""
        return Instruction(_op("stx", size=size).opcode, register(dst), register(src), offset(off))

    @_dsl
    def ld_abs(self, size, imm):
        """r0 = *(size *)(packet + imm) in network order (legacy socket-filter access)."""
        return Instruction(_op("ld_abs", size=size).opcode, imm=imm32(imm))

    @_dsl
    def ld_ind(self, size, src, imm):
        """r0 = *(size *)(packet + src + imm) in network order (legacy)."""
        return Instruction(_op("ld_ind", size=size).opcode, 0, register(src), imm=imm32(imm))

    @_dsl
    def load_acquire(self, size, dst, src, off=0):
        """dst = *(size *)(src + off) with acquire ordering."""
        op = _op("load_acquire", size=size)
        return Instruction(op.opcode, register(dst), register(src), offset(off), op.value)

    @_dsl
    def store_release(self, size, dst, off, src):
        """*(size *)(dst + off) = src with release ordering."""
        op = _op("store_release", size=size)
        return Instruction(op.opcode, register(dst), register(src), offset(off), op.value)

    @_dsl
    def lddw(self, dst, value):
        """dst = a 64-bit constant (two slots)."""
        return Instruction(oc.LD_IMM64, register(dst), 0, 0, imm64(value))

    @_dsl
    def ld_map_fd(self, dst, map_):
        """dst = pointer to a map, by name (resolved at load time) or by fd."""
        return _ld_pseudo(abi.PSEUDO_MAP_FD, dst, map_)

    @_dsl
    def ld_map_value(self, dst, map_, offset=0):
        """dst = pointer to byte ``offset`` of a map's value (global data)."""
        return _ld_pseudo(abi.PSEUDO_MAP_VALUE, dst, map_, offset)

    @_dsl
    def ld_btf_id(self, dst, btf_id, module_fd=0):
        """dst = address of the kernel variable with ``btf_id`` (module BTF fd)."""
        return _ld_pseudo(abi.PSEUDO_BTF_ID, dst, btf_id, module_fd)

    @_dsl
    def ld_func(self, dst, target):
        """dst = address of the subprogram at label ``target`` (a callback)."""
        return _ld_pseudo(abi.PSEUDO_FUNC, dst, target)

    @_dsl
    def ld_map_idx(self, dst, index):
        """dst = pointer to the map at ``fd_array[index]``."""
        return _ld_pseudo(abi.PSEUDO_MAP_IDX, dst, index)

    @_dsl
    def ld_map_idx_value(self, dst, index, offset=0):
        """dst = pointer to byte ``offset`` of the value of map ``fd_array[index]``."""
        return _ld_pseudo(abi.PSEUDO_MAP_IDX_VALUE, dst, index, offset)


    def core_read(self, dst, src, struct, path, stack):
        """dst = ``src->path``, CO-RE: ``struct`` (from :class:`pybpf.asm.core.Types`) is
        what ``src`` points to, ``path`` a chain such as ``"real_parent->tgid"``. Each
        pointer and the final integer, enum or pointer are read with bpf_probe_read_kernel
        into the 8 bytes at ``r10 + stack`` (``stack``: -8, -16...), as libbpf's
        BPF_CORE_READ does; r0-r5 are clobbered. The final value is zero- or sign-extended
        as declared, from the kernel's size of the field (bitfields extracted)."""
        from pybpf.asm.core import emit_read  # CO-RE types import BTF: only when used

        emit_read(self, dst, src, struct, path, stack)

    def core_load(self, dst, src, struct, path, scratch=None):
        """dst = ``src->path`` with direct loads, CO-RE: for pointers the verifier knows the
        type of (``bpf_get_current_task_btf()``, tp_btf/fentry arguments). Each load's
        offset (and size, for unsigned integers and pointers) is the kernel's. A bitfield is
        extracted from a load of the size the kernel needs, chosen with ``scratch``."""
        from pybpf.asm.core import emit_load

        emit_load(self, dst, src, struct, path, scratch)


# The pseudo loads whose first immediate may be a name: a map's, or a subprogram's label.
_NAMED_SOURCES = (abi.PSEUDO_MAP_FD, abi.PSEUDO_MAP_VALUE, abi.PSEUDO_FUNC)


def _ld_pseudo(src, dst, value, high=0):
    """A 64-bit immediate load with pseudo source ``src``; a str ``value`` is a reference."""
    if isinstance(value, str):
        if src not in _NAMED_SOURCES:
            name = oc.LDDW_SOURCES[src][0]
            hint = "" if src == abi.PSEUDO_BTF_ID else "; load a map by name with ld_map_fd"
            raise AssemblerError(f"{name} takes an int, not the name {value!r}{hint}")
        low, ref = 0, value
    else:
        low, ref = imm32(value) & 0xFFFFFFFF, None
    return Instruction(oc.LD_IMM64, register(dst), src, 0,
                       (imm32(high) & 0xFFFFFFFF) << 32 | low, ref=ref)


def _add_generated_methods():
    """ALU, conditional jump and atomic methods, one per row of the opcode tables."""
    for name, _code, _sym, _off, sem in oc.ALU_OPS:
        attr = name + "_" if name in ("or", "and") else name  # or/and are Python keywords
        setattr(Builder, attr, _alu(name, sem, attr))
        setattr(Builder, name + "32", _alu(name + "32", sem + ", 32-bit", name + "32"))
    for name, _code, _sym, sem in oc.JMP_OPS:
        setattr(Builder, name, _jump(name, sem))
        setattr(Builder, name + "32", _jump(name + "32", sem + ", comparing the low 32 bits"))
    for name, _imm, sym in oc.ATOMIC_OPS:
        setattr(Builder, "atomic_" + name,
                _atomic("atomic_" + name, f"*(size *)(dst + off) {sym}= src, atomically"))
        setattr(Builder, "atomic_fetch_" + name,
                _atomic("atomic_fetch_" + name,
                        f"src = old *(dst + off), then it {sym}= src, atomically"))
    Builder.xchg = _atomic("xchg", "swap src with *(size *)(dst + off), atomically")
    Builder.cmpxchg = _atomic("cmpxchg",
                              "if *(dst + off) == r0 store src there; r0 = the old value")


_add_generated_methods()
