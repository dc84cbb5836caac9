"""Learning second-level labels of a protected whole TLD (mil) from upstream answers: guard and file."""

from __future__ import annotations

from pathlib import Path

from resolverguard.typo import TypoGuard, learned


def test_an_answered_name_under_mil_teaches_its_label() -> None:
    guard = TypoGuard.build(["mil", "gmail.com"])
    assert guard.find_neighbour("jfhq.ml") is None  # jfhq is in neither the shipped nor the HSTS .mil labels
    old = guard
    guard, *learned_label = guard.learn("mail.jfhq.mil")
    assert learned_label == ["mil", "jfhq"]
    assert old.find_neighbour("jfhq.ml") is None and old.learned_count == 0  # a snapshot: never changed
    match = guard.find_neighbour("jfhq.ml")  # the new snapshot decides anew
    assert match is not None and match.protected == "jfhq.mil" and match.learned and match.blocks
    assert guard.find_neighbour("jfhqmil.com").learned  # combos of the learned name too
    assert not guard.find_neighbour("army.ml").learned  # shipped labels are not "learned"
    assert guard.learned_count == 1


def test_what_is_not_learned() -> None:
    guard = TypoGuard.build(["mil", "gmail.com"])
    for qname in ("mil", "army.mil", "x.army.mil", "www.gmail.com", "_dmarc.mil", "a.b.example.com", ""):
        assert guard.learn(qname) is None, qname  # known, not under a whole-TLD entry, or not a hostname label
    assert guard.learned_count == 0


def test_learning_is_bounded(monkeypatch) -> None:
    monkeypatch.setattr(learned, "MAX_LEARNED", 3)
    guard = TypoGuard.build(["mil"], cache_size=0)
    got = []
    for i in range(10):
        got.append(guard.learn(f"host.unit{i}.mil"))
        guard = got[-1][0] if got[-1] is not None else guard
    assert sum(g is not None for g in got) == 3 and guard.learned_count == 3
    assert guard.find_neighbour("unit9.ml") is None and guard.find_neighbour("unit0.ml") is not None


def test_learned_labels_file_round_trip_and_reload(tmp_path: Path) -> None:
    path = learned.path_in(str(tmp_path / "state"))
    learned.append(path, "mil", "jfhq")
    learned.append(path, "mil", "jfhq")  # duplicates are dropped on load
    learned.append(path, "mil", "socom2")
    Path(path).write_text(Path(path).read_text() + "garbage line here\nmil bad_label\n\n", encoding="utf-8")
    loaded = learned.load(path)
    assert loaded == {"mil": {"jfhq", "socom2"}}
    guard = TypoGuard.build(["mil"], learned=loaded)
    assert guard.find_neighbour("socom2.ml").learned and guard.learned_count == 2
    assert learned.load(None) == {} and learned.load(str(tmp_path / "absent.txt")) == {}


def test_parse_is_bounded(monkeypatch) -> None:
    monkeypatch.setattr(learned, "MAX_LEARNED", 5)
    assert learned.total(learned.parse("".join(f"mil unit{i}\n" for i in range(50)))) == 5


def test_learner_learns_from_answers_only(tmp_path: Path) -> None:
    import dns.message
    import dns.rcode
    import dns.rrset
    from prometheus_client import CollectorRegistry

    from resolverguard import wire
    from resolverguard.config import Config
    from resolverguard.metrics import Metrics
    from resolverguard.reload import PolicyHolder

    (tmp_path / "zones").mkdir()
    metrics = Metrics(CollectorRegistry())
    cfg = Config(protect=("mil",), zones_dir=str(tmp_path / "zones"), state_dir=str(tmp_path))
    holder = PolicyHolder(cfg, metrics)
    first = holder.current()
    path = learned.path_in(str(tmp_path))
    learner = holder.learn

    def reply(qname: str, rcode: int, answers: bool) -> tuple[wire.Query, bytes]:
        query = dns.message.make_query(qname, "A")
        response = dns.message.make_response(query)
        response.set_rcode(rcode)
        if answers:
            response.answer.append(dns.rrset.from_text(qname + ".", 300, "IN", "A", "192.0.2.1"))
        return wire.parse_query(query.to_wire(), "127.0.0.1", False), response.to_wire()

    learner(*reply("mail.nxunit.mil", dns.rcode.NXDOMAIN, False))
    learner(*reply("mail.nodataunit.mil", dns.rcode.NOERROR, False))
    assert holder.current() is first and not Path(path).exists()
    learner(*reply("mail.jfhq.mil", dns.rcode.NOERROR, True))
    assert holder.current() is not first and first.guard.learned_count == 0  # a new snapshot swapped in
    assert holder.current().guard.learned_count == 1 and learned.load(path) == {"mil": {"jfhq"}}
    assert holder.current().generation == first.generation and holder.current().table is first.table
    assert metrics.registry.get_sample_value("resolverguard_typo_learned_labels") == 1
