"""Reading the journal snapshot does not hold the journal lock while it parses: a publish never waits for it."""

from __future__ import annotations

import threading

from resolverguard.export import Record
from resolverguard.export import journal as journal_mod
from resolverguard.export.journal import Journal


def test_a_publish_completes_while_a_snapshot_is_being_parsed(tmp_path, monkeypatch):
    j = Journal(tmp_path / "j", clock=lambda: 1_800_000_000)
    first, _ = j.publish(b"one", [Record(f"n{i}.example", 300, "CNAME", ".") for i in range(3)])
    parsing, release = threading.Event(), threading.Event()
    real = journal_mod._record

    def slow_record(line: str) -> Record:  # the parse of a large snapshot, held until the publish is done
        parsing.set()
        assert release.wait(30), "the publish never finished"
        return real(line)

    monkeypatch.setattr(journal_mod, "_record", slow_record)
    reader_result: list = []
    reader = threading.Thread(target=lambda: reader_result.append(Journal(tmp_path / "j").snapshot()))
    reader.start()
    assert parsing.wait(30)
    published: list = []
    writer = threading.Thread(
        target=lambda: published.append(
            Journal(tmp_path / "j").publish(b"two", [Record("x.example", 300, "CNAME", ".")])
        )
    )
    writer.start()
    writer.join(30)
    done = not writer.is_alive()
    release.set()
    reader.join(30)
    writer.join(30)
    assert done, "publish waited for the snapshot reader's parse"
    serial, records = reader_result[0]
    assert serial == first and len(records) == 3  # the reader got the version it paired with its serial
    assert published[0][0] > first
