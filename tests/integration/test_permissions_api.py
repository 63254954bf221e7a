"""Permissions (SPEC §5) with API keys that hold only some of them: method-level
forbidden for get/query/changes/queryChanges, SetError forbidden per /set operation."""

NL = "x:NetworkListener"


def make_key(g, permissions, name=None):
    props = {"permissions": permissions}
    if name:
        props["name"] = name
    _, res, _ = g.call("x:ApiKey/set", {"create": {"k": props}})
    created = res["created"]["k"]
    return created["id"], created["secret"]


def test_key_with_get_and_update_only(gatehouse, free_port):
    lid = gatehouse.create_listener(bind=[f"127.0.0.1:{free_port()}"])
    _, secret = make_key(gatehouse, ["sysNetworkListenerGet", "sysNetworkListenerUpdate"])
    name, res, _ = gatehouse.call(NL + "/get", {"ids": [lid]}, token=secret)
    assert name == NL + "/get" and res["list"][0]["id"] == lid
    name, res, _ = gatehouse.call(NL + "/query", {}, token=secret)
    assert name == "error" and res["type"] == "forbidden"
    name, res, _ = gatehouse.call(NL + "/queryChanges", {"sinceQueryState": "x"}, token=secret)
    assert name == "error" and res["type"] == "forbidden"
    name, res, _ = gatehouse.call(NL + "/set", {
        "create": {"c": {"bind": [f"127.0.0.1:{free_port()}"]}},
        "update": {lid: {"socketTtl": 7}},
        "destroy": [lid]}, token=secret)
    assert name == NL + "/set"
    assert res["notCreated"]["c"]["type"] == "forbidden"
    assert "sysNetworkListenerCreate" in res["notCreated"]["c"]["description"]
    assert res["notDestroyed"][lid]["type"] == "forbidden"
    assert res["notUpdated"][lid]["type"] == "willDestroy"
    name, res, _ = gatehouse.call(NL + "/set", {"update": {lid: {"socketTtl": 7}}}, token=secret)
    assert lid in res["updated"]
    _, res, _ = gatehouse.call(NL + "/get", {"ids": [lid], "properties": ["socketTtl"]})
    assert res["list"][0]["socketTtl"] == 7


def test_key_without_get_cannot_read_changes(gatehouse):
    _, secret = make_key(gatehouse, ["sysNetworkListenerQuery"])
    _, res, _ = gatehouse.call(NL + "/get", {"ids": []})
    name, res, _ = gatehouse.call(NL + "/changes", {"sinceState": res["state"]}, token=secret)
    assert name == "error" and res["type"] == "forbidden"
    name, res, _ = gatehouse.call(NL + "/get", {}, token=secret)
    assert name == "error" and res["type"] == "forbidden"
    name, res, _ = gatehouse.call(NL + "/query", {}, token=secret)
    assert name == NL + "/query"


def test_permissions_are_per_type(gatehouse):
    _, secret = make_key(gatehouse, ["sysNetworkListenerGet", "sysNetworkListenerUpdate"])
    name, res, _ = gatehouse.call("x:ApiKey/get", {}, token=secret)
    assert name == "error" and res["type"] == "forbidden"
    name, res, _ = gatehouse.call("x:SystemSettings/get", {}, token=secret)
    assert name == "error" and res["type"] == "forbidden"
    name, res, _ = gatehouse.call("x:SystemSettings/set", {
        "update": {"singleton": {"defaultHostname": "x.example"}}}, token=secret)
    assert res["notUpdated"]["singleton"]["type"] == "forbidden"


def test_settings_permissions(gatehouse):
    _, secret = make_key(gatehouse, ["sysSystemSettingsGet", "sysSystemSettingsUpdate"])
    name, res, _ = gatehouse.call("x:SystemSettings/set", {
        "update": {"singleton": {"defaultHostname": "mx.example.org"}}}, token=secret)
    assert "singleton" in res["updated"], res
    _, res, _ = gatehouse.call("x:SystemSettings/get", {}, token=secret)
    assert res["list"][0]["defaultHostname"] == "mx.example.org"
