"""EventSource streams are capped per credential (docs/api.md "Push"): a credential may hold
16 streams open at once, across every worker; the 17th gets 429 with a problem body and
Retry-After, and a closed stream makes room again. Other credentials are not affected."""
import json
import time

from test_jmap_push import Stream, settled  # noqa: F401 (settled: the autouse fixture)

CAP = 16
QUERY = "types=*&closeafter=no&ping=0"


def make_key(g):
    _, res, _ = g.call("x:ApiKey/set", {"create": {"k": {"permissions": ["sysNetworkListenerGet"]}}})
    return res["created"]["k"]["secret"]


def refused(st):
    assert st.status == 429, st.status
    assert st.headers["content-type"].startswith("application/problem+json")
    assert int(st.headers["retry-after"]) >= 1
    body = st.buf
    while len(body) < int(st.headers["content-length"]):
        st._read(5)
        body = st.buf
    p = json.loads(body)
    assert p["status"] == 429 and "16" in p["detail"]


def test_streams_per_credential_are_capped(gatehouse):
    key = make_key(gatehouse)
    mine = [Stream(gatehouse, QUERY, auth="Bearer " + key) for _ in range(CAP)]
    assert all(st.status == 200 for st in mine)
    extra = Stream(gatehouse, QUERY, auth="Bearer " + key)
    refused(extra)
    extra.close()
    # by name and secret (Basic) it is the same credential
    basic = gatehouse.basic("key", key)
    extra = Stream(gatehouse, QUERY, auth=basic)
    refused(extra)
    extra.close()
    # another credential still opens streams
    other = Stream(gatehouse, QUERY)
    assert other.status == 200
    other.close()
    # closing one makes room (the server notices the close on its own)
    mine.pop().close()
    end, st = time.time() + 5, None
    while time.time() < end:
        st = Stream(gatehouse, QUERY, auth="Bearer " + key)
        if st.status == 200:
            break
        st.close()
        time.sleep(0.1)
    assert st.status == 200
    mine.append(st)
    for st in mine:
        st.close()


def test_the_administrator_is_capped_too(gatehouse):
    streams = [Stream(gatehouse, QUERY) for _ in range(CAP)]
    assert all(st.status == 200 for st in streams)
    extra = Stream(gatehouse, QUERY)
    refused(extra)
    extra.close()
    for st in streams:
        st.close()
