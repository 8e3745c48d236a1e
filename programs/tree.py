"""``--tree``: every interval, the processes that exec'd, drawn as a tree under their parents.

A burst of execs is easier to read by where it came from than as a list: each process that
exec'd in the interval is drawn under its parent (the ``real_parent`` the kernel saw at the
exec, in the event), with how many times it exec'd and its last command line; the ancestors
that did not exec are drawn too, with their names from ``/proc``, up to the first process,
as pstree does:

    2026/11/30 12:34:56 Exec tree: 3 execs in 2 processes
    2026/11/30 12:34:56 systemd(1)
    2026/11/30 12:34:56 └─ bash(1200)
    2026/11/30 12:34:56    └─ make(1234) 1 exec: make -j2
    2026/11/30 12:34:56       └─ cc(1240) 2 execs: cc -c a.c [ENOENT]
    2026/11/30 12:34:56 ---
"""

from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

from . import events_bpf
from .events import command_line, decode, follow
from .output import emit, safe_text

UNICODE_BRANCHES = ("\u251c\u2500 ", "\u2514\u2500 ", "\u2502  ", "   ")  # ├─ └─ │
ASCII_BRANCHES = ("|- ", "`- ", "|  ", "   ")
GONE = "?"  # the name of a parent that exited before the tree was drawn


@dataclass
class Node:
    """A process in the tree: one that exec'd in the interval (``execs`` > 0, its last
    command line and errno), or an ancestor of one."""

    pid: int
    ppid: int
    name: str
    execs: int = 0
    command: str = ""
    errno: Optional[str] = None

    def label(self) -> str:
        if not self.execs:
            return f"{self.name}({self.pid})"
        count = f"{self.execs} exec{'s' if self.execs > 1 else ''}"
        failed = f" [{self.errno}]" if self.errno else ""
        return f"{self.name}({self.pid}) {count}: {self.command}{failed}"


def proc_parent(pid, proc="/proc") -> Optional[Tuple[int, str]]:
    """``(ppid, name)`` of a live process from ``/proc/PID/stat``; None when it is gone. The
    name is between the first ``(`` and the last ``)``: it may hold either."""
    try:
        with open(f"{proc}/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return None
    name, rest = stat[stat.index(b"(") + 1:stat.rindex(b")")], stat[stat.rindex(b")") + 2:]
    return int(rest.split()[1]), safe_text(name)


class ExecTree:
    """The execs of one interval, by process, and the tree they make with their ancestors."""

    def __init__(self, ancestry=proc_parent):
        self.ancestry = ancestry  # pid -> (ppid, name) of a live process, or None
        self.nodes: Dict[int, Node] = {}
        self.execs = 0

    def add(self, event):
        """One exec (a :class:`programs.events.ExecEvent`)."""
        node = self.nodes.get(event.pid)
        if node is None:
            node = self.nodes[event.pid] = Node(event.pid, event.ppid, "")
        node.ppid, node.name = event.ppid, safe_text(event.comm)
        node.execs += 1
        node.command = command_line(event)
        node.errno = event.errno
        self.execs += 1

    def lines(self, unicode=True) -> List[str]:
        """The tree, one line per process, roots first, children by PID."""
        exec_nodes = [node for node in self.nodes.values() if node.execs]
        for node in exec_nodes:
            self._add_ancestors(node)
        roots, children = [], {pid: [] for pid in self.nodes}
        for pid in sorted(self.nodes):
            node = self.nodes[pid]
            if node.ppid in self.nodes and node.ppid != pid:
                children[node.ppid].append(pid)
            else:
                roots.append(node)
        branch, last, down, space = UNICODE_BRANCHES if unicode else ASCII_BRANCHES
        lines = []
        stack = [(root, "", None) for root in reversed(roots)]
        while stack:  # depth first, without recursion (a chain of processes can be long)
            node, indent, is_last = stack.pop()
            mark = "" if is_last is None else (last if is_last else branch)
            lines.append(indent + mark + node.label())
            below = indent if is_last is None else indent + (space if is_last else down)
            below_node = children[node.pid]
            for index in reversed(range(len(below_node))):
                stack.append((self.nodes[below_node[index]], below,
                              index == len(below_node) - 1))
        return lines

    def _add_ancestors(self, node):
        """The ancestors of ``node`` that did not exec, from /proc, up to the first process;
        a parent that has exited already is drawn as ``?(PID)``, its children under it."""
        seen = set()
        pid = node.ppid
        while pid > 0 and pid not in self.nodes and pid not in seen:
            seen.add(pid)
            found = self.ancestry(pid)
            if found is None:
                self.nodes[pid] = Node(pid, 0, GONE)
                return
            ppid, name = found
            self.nodes[pid] = Node(pid, ppid, name)
            pid = ppid


def run_tree(args, stop, tracker):
    """Draw the tree of each interval's execs until stopped, once more at the end."""
    import sys

    unicode = (getattr(sys.stdout, "encoding", "") or "").lower().replace("-", "") == "utf8"
    ancestry = proc_parent if tracker.sees_host_pids else (lambda pid: None)
    tree = ExecTree(ancestry)
    lost_reported = 0

    def handle(record):
        tree.add(decode(record))

    def report():
        nonlocal tree, lost_reported
        counts, names, dropped = tracker.snapshot()
        stats = dict(tracker.collection.maps["stats"].lookup_batch())
        lost = sum(stats.get(events_bpf.EVENTS_LOST, [0]))
        warnings = [tracker.lost_warning(dropped)]
        if lost > lost_reported:
            warnings.append(f"WARNING: {lost - lost_reported} events lost since the last "
                            f"report ({lost} since start): the ring buffer was full, the tree "
                            f"misses them; raise --buffer-size")
        tracker.dropped_reported, lost_reported = dropped, lost
        emit([w for w in warnings if w]
             + [f"Exec tree: {tree.execs} execs in "
                f"{sum(1 for n in tree.nodes.values() if n.execs)} processes"]
             + tree.lines(unicode) + ["---"])
        tree = ExecTree(ancestry)
        tracker.forget_exited(counts, names)

    follow(tracker.collection.maps["events"], stop, args.interval, handle, report)
    return 0
