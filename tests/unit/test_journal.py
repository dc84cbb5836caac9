"""Journal: one serial per content across processes, deltas of the last N versions, AXFR fallback."""

from __future__ import annotations

import multiprocessing
from pathlib import Path

from resolverguard.export import Journal, Record


class Clock:
    def __init__(self, now: float = 1_800_000_000) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def rules(*names: str) -> list[Record]:
    return [Record(n, 300, "CNAME", ".") for n in names]


def test_same_content_same_serial_and_deltas(tmp_path: Path) -> None:
    journal = Journal(tmp_path, clock=Clock())
    s1, new1 = journal.publish(b"a", rules("a.example", "b.example"))
    again, new_again = journal.publish(b"a", rules("a.example", "b.example"))
    s2, new2 = journal.publish(b"b", rules("a.example", "c.example"))
    assert (new1, new_again, new2) == (True, False, True) and again == s1 and s2 == s1 + 1
    [delta] = journal.deltas(s1)
    assert (delta.old, delta.new) == (s1, s2)
    assert delta.removed == rules("b.example") and delta.added == rules("c.example")
    assert journal.deltas(s2) == [] and journal.deltas(12345) is None
    assert journal.snapshot() == (s2, rules("a.example", "c.example"))


def test_journal_keeps_only_the_last_versions(tmp_path: Path) -> None:
    journal = Journal(tmp_path, keep=3, clock=Clock())
    serials = [journal.publish(bytes([i]), rules(f"n{i}.example"))[0] for i in range(6)]
    assert journal.deltas(serials[1]) is None  # older than the journal: the caller falls back to AXFR
    chain = journal.deltas(serials[2])
    assert [d.new for d in chain] == serials[3:]
    assert len(list(tmp_path.glob("delta-*"))) == 3


def test_an_older_content_gets_its_old_serial_back(tmp_path: Path) -> None:
    journal = Journal(tmp_path, clock=Clock())
    s1, _ = journal.publish(b"a", rules("a.example"))
    s2, _ = journal.publish(b"b", rules("b.example"))
    assert journal.publish(b"a", rules("a.example")) == (s1, False)  # a slow worker: no new serial
    assert journal.serial == s2


def _publish(directory: str, queue: multiprocessing.Queue) -> None:
    queue.put(Journal(directory).publish(b"same", rules("x.example"))[0])


def test_processes_sharing_a_directory_agree_on_the_serial(tmp_path: Path) -> None:
    queue: multiprocessing.Queue = multiprocessing.Queue()
    procs = [
        multiprocessing.get_context("fork").Process(target=_publish, args=(str(tmp_path), queue)) for _ in range(3)
    ]
    for p in procs:
        p.start()
    for p in procs:
        p.join(30)
    got = {queue.get(timeout=5) for _ in procs}
    assert len(got) == 1 and Journal(tmp_path).serial in got


def test_acknowledged_serials_are_shared(tmp_path: Path) -> None:
    Journal(tmp_path).acknowledged("127.0.0.1:53", 7)
    assert Journal(tmp_path).acknowledged("127.0.0.1:54") == {"127.0.0.1:53": 7}
