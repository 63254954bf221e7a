"""/queryChanges with upToId (RFC 8620 §5.6): with a filter and sort on properties that never
change (a listener's name is fixed at create; the default order is creation order), changes
after the client's last cached id are left out; with mutable ones, or an upToId no longer in
the results, upToId is ignored."""

NL = "x:NetworkListener"
MINE = {"name": "up"}  # leaves out the management listener


def splice(old, qc):
    ids = [i for i in old if i not in qc["removed"]]
    for a in qc["added"]:
        ids.insert(a["index"], a["id"])
    return ids


def test_up_to_id_leaves_out_changes_after_it(gatehouse, free_port):
    ls = [gatehouse.create_listener(name=f"up{i}", bind=[f"127.0.0.1:{free_port()}"])
          for i in range(5)]
    _, q, _ = gatehouse.call(NL + "/query", {"filter": MINE})
    assert q["ids"] == ls
    s0 = q["queryState"]
    gatehouse.call(NL + "/set", {"update": {ls[1]: {"socketTtl": 9}, ls[3]: {"socketTtl": 9}},
                                 "destroy": [ls[2]]})
    new = gatehouse.create_listener(name="up5", bind=[f"127.0.0.1:{free_port()}"])
    _, now, _ = gatehouse.call(NL + "/query", {"filter": MINE})
    assert now["ids"] == [ls[0], ls[1], ls[3], ls[4], new]

    _, full, _ = gatehouse.call(NL + "/queryChanges", {"filter": MINE, "sinceQueryState": s0})
    assert set(full["removed"]) == {ls[1], ls[2], ls[3], new}
    assert full["added"] == [{"id": ls[1], "index": 1}, {"id": ls[3], "index": 2},
                             {"id": new, "index": 4}]
    assert splice(q["ids"], full) == now["ids"]

    # the client cached up to ls[1]: ls[3] and the new one lie beyond it
    _, cut, _ = gatehouse.call(NL + "/queryChanges", {"filter": MINE, "sinceQueryState": s0, "upToId": ls[1]})
    assert cut["oldQueryState"] == s0 and cut["newQueryState"] == now["queryState"]
    assert set(cut["removed"]) == {ls[1], ls[2]}
    assert cut["added"] == [{"id": ls[1], "index": 1}]
    # what the client cached, spliced, is the start of the new results
    assert splice(q["ids"][:2], cut) == now["ids"][:2]
    # maxChanges counts what is returned
    _, ok, _ = gatehouse.call(NL + "/queryChanges", {"filter": MINE, "sinceQueryState": s0, "upToId": ls[1],
                                                     "maxChanges": 3})
    assert ok["added"] == cut["added"]
    _, too, _ = gatehouse.call(NL + "/queryChanges", {"filter": MINE, "sinceQueryState": s0, "maxChanges": 3})
    assert too["type"] == "tooManyChanges"

    # the last id: nothing is left out
    _, last, _ = gatehouse.call(NL + "/queryChanges", {"filter": MINE, "sinceQueryState": s0, "upToId": new})
    assert last["added"] == full["added"] and sorted(last["removed"]) == sorted(full["removed"])
    # an upToId no longer in the results (destroyed) or unknown: ignored
    for gone in (ls[2], "nope"):
        _, r, _ = gatehouse.call(NL + "/queryChanges", {"filter": MINE, "sinceQueryState": s0, "upToId": gone})
        assert r["added"] == full["added"] and sorted(r["removed"]) == sorted(full["removed"])


def test_up_to_id_ignored_with_mutable_filter_or_sort(gatehouse, free_port):
    ls = [gatehouse.create_listener(name=f"up{i}", bind=[f"127.0.0.1:{free_port()}"])
          for i in range(3)]
    _, q, _ = gatehouse.call(NL + "/query", {"filter": MINE})
    s0 = q["queryState"]
    gatehouse.call(NL + "/set", {"update": {ls[2]: {"socketTtl": 9}}})
    for extra in ({"filter": {"protocol": "smtp"}},
                  {"filter": MINE, "sort": [{"property": "protocol"}]},
                  {"filter": {"operator": "AND", "conditions": [MINE, {"protocol": "smtp"}]}}):
        _, a, _ = gatehouse.call(NL + "/queryChanges", dict(extra, sinceQueryState=s0))
        _, b, _ = gatehouse.call(NL + "/queryChanges", dict(extra, sinceQueryState=s0,
                                                            upToId=ls[0]))
        assert a["added"] == b["added"] and ls[2] in [x["id"] for x in a["added"]], (a, b)
        assert a["removed"] == b["removed"] == [ls[2]]
    # the same with the immutable name alone: ls[2] lies after ls[0] and is left out
    _, c, _ = gatehouse.call(NL + "/queryChanges", {"filter": MINE, "sort": [{"property": "name"}],
                                                    "sinceQueryState": s0, "upToId": ls[0]})
    assert c["added"] == [] and c["removed"] == []
    _, bad, _ = gatehouse.call(NL + "/queryChanges", {"filter": MINE, "sinceQueryState": s0, "upToId": 5})
    assert bad["type"] == "invalidArguments"
