"""x:SystemSettings: a singleton with id "singleton"; create and destroy are refused;
defaultHostname reaches the protocols' greetings without a restart."""
import socket

SS = "x:SystemSettings"


def test_singleton_get_and_refusals(gatehouse):
    _, res, _ = gatehouse.call(SS + "/get", {"ids": None})
    assert len(res["list"]) == 1
    s = res["list"][0]
    assert s["id"] == "singleton"
    assert s["defaultHostname"]
    assert s["proxyTrustedNetworks"] == []
    _, res, _ = gatehouse.call(SS + "/set", {"create": {"c": {}}, "destroy": ["singleton"]})
    assert res["notCreated"]["c"]["type"] == "singleton"
    assert res["notDestroyed"]["singleton"]["type"] == "singleton"
    _, res, _ = gatehouse.call(SS + "/set", {"update": {"other": {"defaultHostname": "a.b"}}})
    assert res["notUpdated"]["other"]["type"] == "notFound"
    name, res, _ = gatehouse.call(SS + "/query", {})
    assert name == "error" and res["type"] == "unknownMethod"


def test_validation(gatehouse):
    _, res, _ = gatehouse.call(SS + "/set", {"update": {"singleton": {
        "defaultHostname": "not a host", "proxyTrustedNetworks": ["10.0.0.1/8"],
        "colour": "blue"}}})
    err = res["notUpdated"]["singleton"]
    assert err["type"] == "invalidProperties"
    assert set(err["properties"]) == {"defaultHostname", "proxyTrustedNetworks", "colour"}


def test_hostname_reaches_the_smtp_greeting(gatehouse, free_port):
    port = free_port()
    _, res, _ = gatehouse.call(SS + "/set", {"update": {"singleton": {
        "defaultHostname": "mx.example.test", "proxyTrustedNetworks": ["10.0.0.0/8"]}}})
    assert "singleton" in res["updated"], res
    assert res["newState"] != res["oldState"]
    gatehouse.create_listener(bind=[f"127.0.0.1:{port}"], useTls=False)
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        greeting = s.recv(512).decode()
    assert greeting.startswith("220 mx.example.test"), greeting
    _, res, _ = gatehouse.call(SS + "/get", {})
    assert res["list"][0]["proxyTrustedNetworks"] == ["10.0.0.0/8"]
