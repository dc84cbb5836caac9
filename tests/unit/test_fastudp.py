"""The compiled UDP loop (_fastudp.drain) and the pure-Python one (fastpath.drain_python) behave the same.

Both read real datagrams from a loopback socket: what each answers, what each hands to the pipeline and
what each counts must be equal, datagram for datagram.
"""

from __future__ import annotations

import socket
from array import array

import pytest

from resolverguard import fastpath
from resolverguard.metrics import LATENCY_BUCKETS_NS
from tests.polling import wait_until
from tests.realprog import in_ci

needs_compiled = pytest.mark.usefixtures("compiled_loop")


@pytest.fixture
def compiled_loop():
    """The compiled loop: a missing build skips locally and fails under CI=true (like tests/realprog.py)."""
    if fastpath._fastudp is None:
        if in_ci():
            pytest.fail("resolverguard/_fastudp.c was not built (setup.py); CI must test the compiled loop")
        pytest.skip("the compiled UDP loop is not built here")
    return fastpath._fastudp


BOUNDS = LATENCY_BUCKETS_NS


def _query(qid: int, name: bytes) -> bytes:
    return qid.to_bytes(2, "big") + b"\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00" + name + b"\x00\x00\x01\x00\x01"


def _reply(name: bytes, marker: int) -> bytes:
    return b"\xff\xff\x81\x80\x00\x01\x00\x00\x00\x00\x00\x00" + name + b"\x00\x00\x01\x00\x01" + bytes([marker])


@pytest.fixture
def sockets():
    server = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    server.bind(("127.0.0.1", 0))
    server.setblocking(False)
    allowed = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    allowed.bind(("127.0.0.1", 0))
    other = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    other.bind(("127.0.0.2", 0))
    for s in (allowed, other):
        s.settimeout(5)
    yield server, allowed, other
    for s in (server, allowed, other):
        s.close()


def _drain_all(kind: str, server, table, clients, counts, now: float, expected: int) -> list:
    """Drain with one loop until `expected` datagrams are read; the ones left for the pipeline."""
    slow: list = []
    total = [0]

    def drained() -> bool:
        if kind == "python":
            read, more = fastpath.drain_python(server, table, clients, counts, now, BOUNDS)
        else:
            read, more = fastpath._fastudp.drain(server.fileno(), table, clients, counts, now, BOUNDS)
        total[0] += read
        slow.extend(more)
        return total[0] == expected

    wait_until(drained, what="every datagram read")
    return slow


def _run(kind: str, sockets) -> tuple[list, list, list, array]:
    """Send a fixed mix of datagrams; drain them with one loop; return (replies, slow, slow senders, counts)."""
    server, allowed, other = sockets
    port = server.getsockname()[1]
    fresh, stale = b"\x05fresh\x07example", b"\x05stale\x07example"
    key = _query(0, fresh)[2:]
    table = {
        key: (100.0, _reply(fresh, 1), (3, 4), 10, 30),
        _query(0, stale)[2:]: (50.0, _reply(stale, 2), (5,), 10, 30),
    }
    clients = {"127.0.0.1" if kind == "python" else socket.inet_aton("127.0.0.1"): True}
    counts = array("q", bytes(8 * 40))
    plan = [
        (allowed, _query(0x1234, fresh)),  # answered: fresh entry, admitted client
        (allowed, _query(0x4321, stale)),  # pipeline: entry stale at now=60
        (other, _query(0x1111, fresh)),  # pipeline: client not admitted
        (allowed, b"\x12\x34\x01"),  # pipeline: too short (the pipeline drops it)
        (allowed, _query(0x9999, b"\x03new\x07example")),  # pipeline: nothing remembered
        (allowed, _query(0xBEEF, fresh)),  # answered
    ]
    for sock, data in plan:
        sock.sendto(data, ("127.0.0.1", port))
    slow = _drain_all(kind, server, table, clients, counts, 60.0, len(plan))
    replies = [allowed.recv(100) for _ in range(2)]
    senders = [addr[0] for _, addr in slow]
    return replies, [data for data, _ in slow], senders, counts


@needs_compiled
def test_compiled_and_python_loops_answer_and_count_the_same(sockets):
    results = {kind: _run(kind, sockets) for kind in ("python", "compiled")}
    py, c = results["python"], results["compiled"]
    assert py[0] == c[0]
    assert sorted(py[0]) == sorted(
        [b"\x12\x34" + _reply(b"\x05fresh\x07example", 1)[2:], b"\xbe\xef" + _reply(b"\x05fresh\x07example", 1)[2:]]
    )
    assert py[1] == c[1] and len(py[1]) == 4
    assert py[2] == c[2] and "127.0.0.2" in py[2]
    for counts in (py[3], c[3]):
        assert counts[3] == counts[4] == 2 and counts[5] == 0  # the fresh entry's slots, twice; never the stale one
        assert sum(counts[10 : 10 + len(BOUNDS) + 1]) == 2  # two durations observed
        assert counts[30] > 0  # their sum, in ns


def test_python_loop_reads_nothing_from_an_empty_socket(sockets):
    server = sockets[0]
    assert fastpath.drain_python(server, {}, {}, array("q", bytes(80)), 0.0, BOUNDS) == (0, [])


@needs_compiled
def test_compiled_loop_reads_nothing_from_an_empty_socket(sockets):
    server = sockets[0]
    assert fastpath._fastudp.drain(server.fileno(), {}, {}, array("q", bytes(80)), 0.0, BOUNDS) == (0, [])


@needs_compiled
def test_compiled_loop_ignores_slots_outside_the_counts(sockets):
    server, allowed, _ = sockets
    name = b"\x01x\x07example"
    table = {_query(0, name)[2:]: (10.0, _reply(name, 7), (999, -1, 2), 500, 9999)}
    counts = array("q", bytes(8 * 4))
    allowed.sendto(_query(7, name), server.getsockname())
    read = [0]

    def drained() -> bool:
        read[0] += fastpath._fastudp.drain(
            server.fileno(), table, {socket.inet_aton("127.0.0.1"): True}, counts, 0.0, BOUNDS
        )[0]
        return read[0] == 1

    wait_until(drained, what="the datagram read")
    assert allowed.recv(100)[:2] == b"\x00\x07"
    assert list(counts) == [0, 0, 1, 0]


def _renewing(kind: str, sockets) -> tuple[list, dict]:
    """A cache hit past its second, and one past its TTL: drained at now=60.5 by one loop."""
    server, allowed, _ = sockets
    name, gone = b"\x05renew\x07example", b"\x04gone\x07example"
    question_end = 12 + len(name) + 5
    template = _reply(name, 0)[:-1] + b"\xc0\x0c\x00\x01\x00\x01\x00\x00\x01\x2c\x00\x04\xc0\x00\x02\x01"  # TTL 300
    offsets = (question_end + 6,)
    table = {
        _query(0, name)[2:]: (41.0, template, (3,), 10, 30, template, offsets, 40.0, 340.0),
        _query(0, gone)[2:]: (41.0, _reply(gone, 9), (4,), 10, 30, _reply(gone, 9), (), 40.0, 59.0),
    }
    clients = {"127.0.0.1" if kind == "python" else socket.inet_aton("127.0.0.1"): True}
    counts = array("q", bytes(8 * 40))
    for qid, q in ((1, name), (2, gone), (3, name)):
        allowed.sendto(_query(qid, q), server.getsockname())
    slow = _drain_all(kind, server, table, clients, counts, 60.5, 3)
    assert [data[2:] for data, _ in slow] == [_query(0, gone)[2:]]  # expired: the pipeline's
    assert counts[3] == 2 and counts[4] == 0
    return [allowed.recv(200) for _ in range(2)], table


@needs_compiled
def test_both_loops_count_a_cache_hit_down_once_its_second_has_passed(sockets):
    py_replies, py_table = _renewing("python", sockets)
    c_replies, c_table = _renewing("compiled", sockets)
    assert py_replies == c_replies and py_table == c_table
    key = _query(0, b"\x05renew\x07example")[2:]
    fresh_until, reply = c_table[key][:2]
    assert fresh_until == 61.0  # renewed once, fresh until the next second
    assert reply[-10:-6] == (300 - 20).to_bytes(4, "big")  # 20 whole seconds since it was stored
    assert c_replies[0][2:] == reply[2:] and c_replies[0][:2] == b"\x00\x01"


def _logging(kind: str, sockets) -> tuple[list, list, array]:
    """Blocks with an event (a sixth item) and one without, drained by one loop with a list for events."""
    server, allowed, other = sockets
    logged_name, quiet_name = b"\x07army-ml\x07example", b"\x05quiet\x07example"
    table = {
        _query(0, logged_name)[2:]: (float("inf"), _reply(logged_name, 3), (6,), 10, 30, ',"qname":"army.ml"}\n'),
        _query(0, quiet_name)[2:]: (float("inf"), _reply(quiet_name, 4), (7,), 10, 30),
    }
    clients = {"127.0.0.1" if kind == "python" else socket.inet_aton("127.0.0.1"): True}
    counts = array("q", bytes(8 * 40))
    plan = [(allowed, _query(1, logged_name)), (allowed, _query(2, quiet_name)), (allowed, _query(3, logged_name))]
    plan.append((other, _query(4, logged_name)))  # not admitted: the pipeline's, which logs it itself
    for sock, data in plan:
        sock.sendto(data, server.getsockname())
    logged: list = []
    read = [0]

    def drained() -> bool:
        if kind == "python":
            n, _ = fastpath.drain_python(server, table, clients, counts, 60.0, BOUNDS, logged)
        else:
            n, _ = fastpath._fastudp.drain(server.fileno(), table, clients, counts, 60.0, BOUNDS, logged)
        read[0] += n
        return read[0] == len(plan)

    wait_until(drained, what="every datagram read")
    replies = [allowed.recv(100) for _ in range(3)]
    return replies, logged, counts


@needs_compiled
def test_both_loops_hand_back_each_logged_block_they_answer(sockets):
    py_replies, py_logged, py_counts = _logging("python", sockets)
    c_replies, c_logged, c_counts = _logging("compiled", sockets)
    assert sorted(py_replies) == sorted(c_replies) and len(c_replies) == 3
    assert py_counts[:30] == c_counts[:30] and c_counts[6] == 2 and c_counts[7] == 1  # 30: their ns, which differ
    tail = ',"qname":"army.ml"}\n'
    assert py_logged == [(tail, "127.0.0.1")] * 2  # the Python loop: the client's host text
    assert c_logged == [(tail, socket.inet_aton("127.0.0.1"))] * 2  # the compiled one: its address octets


def test_without_a_list_nothing_is_handed_back(sockets):
    server, allowed, _ = sockets
    name = b"\x07army-ml\x07example"
    table = {_query(0, name)[2:]: (float("inf"), _reply(name, 3), (), 10, 30, "tail")}
    allowed.sendto(_query(9, name), server.getsockname())
    clients = {"127.0.0.1": True}
    read = [0]

    def drained() -> bool:
        read[0] += fastpath.drain_python(server, table, clients, array("q", bytes(8 * 40)), 0.0, BOUNDS)[0]
        return read[0] == 1

    wait_until(drained, what="the datagram read")
    assert allowed.recv(100)[:2] == b"\x00\x09"
