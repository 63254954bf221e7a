"""x:ApiKey and the administrator secret: a key's secret is shown once and works as a
Bearer token and as HTTP Basic password under the key's name; destroying a key revokes it;
the administrator secret is generated and printed once when none is configured."""
import re
import time

USING = ["urn:ietf:params:jmap:core", "urn:stalwart:jmap"]


def echo_status(g, authorization):
    status, _, _ = g.http("POST", "/api",
                          '{"using":["urn:ietf:params:jmap:core"],"methodCalls":[]}',
                          {"Content-Type": "application/json", "Authorization": authorization})
    return status


def test_secret_shown_once_and_revoked_on_destroy(gatehouse):
    _, res, _ = gatehouse.call("x:ApiKey/set", {"create": {"k": {
        "name": "ops", "permissions": ["sysNetworkListenerGet"]}}})
    created = res["created"]["k"]
    secret, kid = created["secret"], created["id"]
    assert len(secret) >= 40
    assert created["permissions"] == ["sysNetworkListenerGet"]
    _, res, _ = gatehouse.call("x:ApiKey/get", {"ids": [kid]})
    assert "secret" not in res["list"][0]
    assert res["list"][0]["name"] == "ops"
    _, res, _ = gatehouse.call("x:ApiKey/get", {"ids": [kid], "properties": ["secret"]})
    assert res["list"][0] == {"id": kid}
    assert echo_status(gatehouse, "Bearer " + secret) == 200
    assert echo_status(gatehouse, gatehouse.basic("ops", secret)) == 200
    assert echo_status(gatehouse, gatehouse.basic("admin", secret)) == 401
    _, res, _ = gatehouse.call("x:ApiKey/set", {"destroy": [kid]})
    assert res["destroyed"] == [kid]
    assert echo_status(gatehouse, "Bearer " + secret) == 401


def test_secret_cannot_be_chosen_or_changed(gatehouse):
    _, res, _ = gatehouse.call("x:ApiKey/set", {"create": {
        "k": {"secret": "mine"}, "p": {"permissions": ["sysEverything"]}}})
    assert res["notCreated"]["k"]["properties"] == ["secret"]
    assert res["notCreated"]["p"]["properties"] == ["permissions"]
    _, res, _ = gatehouse.call("x:ApiKey/set", {"create": {"k": {}}})
    kid = res["created"]["k"]["id"]
    assert res["created"]["k"]["name"] == "key"
    _, res, _ = gatehouse.call("x:ApiKey/set", {"update": {kid: {"secret": "mine"}}})
    assert res["notUpdated"][kid]["properties"] == ["secret"]


def test_permission_change_applies_at_once(gatehouse):
    _, res, _ = gatehouse.call("x:ApiKey/set", {"create": {"k": {"permissions": ["sysApiKeyGet"]}}})
    kid, secret = res["created"]["k"]["id"], res["created"]["k"]["secret"]
    name, res, _ = gatehouse.call("x:NetworkListener/get", {}, token=secret)
    assert res["type"] == "forbidden"
    gatehouse.call("x:ApiKey/set", {"update": {kid: {
        "permissions/sysNetworkListenerGet": True}}})
    name, res, _ = gatehouse.call("x:NetworkListener/get", {}, token=secret)
    assert name == "x:NetworkListener/get"


def test_generated_admin_secret_printed_once(make_daemon):
    d = make_daemon(start=False)
    del d.env["GATEHOUSE_ADMIN_SECRET"]
    d.start()
    d.stop()
    log = d.read_log()
    found = re.findall(r"administrator secret: (\S+)", log)
    assert len(found) == 1, log
    secret = found[0]
    assert re.search(r"management: http://127\.0\.0\.1:\d+/", log)
    d.start()
    d.secret = secret
    assert echo_status(d, "Bearer " + secret) == 200
    assert echo_status(d, d.basic("admin", secret)) == 200
    assert echo_status(d, "Bearer wrong") == 401
    d.stop()
    assert len(re.findall(r"administrator secret:", d.read_log())) == 1


def test_changed_admin_secret_replaces_the_old_one(make_daemon):
    d = make_daemon(start=False)
    d.env["GATEHOUSE_ADMIN_SECRET"] = "first-secret"
    d.start()
    assert echo_status(d, "Bearer first-secret") == 200
    d.stop()
    d.env["GATEHOUSE_ADMIN_SECRET"] = "second-secret"
    d.start()
    assert echo_status(d, "Bearer second-secret") == 200
    time.sleep(0.1)
    assert echo_status(d, "Bearer first-secret") == 401
    assert "first-secret" not in d.read_log() and "second-secret" not in d.read_log()
