"""An API key grants only what it holds: creating a key, or updating one so that it keeps or
gains permissions, needs every one of those permissions on the calling credential; the
administrator secret holds them all. Anything else is the SetError forbidden naming the
permissions the caller lacks."""

AK = "x:ApiKey"
CREATE_ONLY = ["sysApiKeyCreate"]
UPDATE_ONLY = ["sysApiKeyUpdate"]
ALL_KEY = ["sysApiKeyGet", "sysApiKeyCreate", "sysApiKeyUpdate", "sysApiKeyDestroy",
           "sysNetworkListenerGet", "sysNetworkListenerCreate", "sysCertificateGet"]


def make_key(g, permissions, name=None, token=None):
    props = {"permissions": permissions}
    if name:
        props["name"] = name
    _, res, _ = g.call(AK + "/set", {"create": {"k": props}}, token=token)
    assert "k" in (res.get("created") or {}), res
    return res["created"]["k"]["id"], res["created"]["k"]["secret"]


def perms_of(g, kid):
    _, res, _ = g.call(AK + "/get", {"ids": [kid], "properties": ["permissions"]})
    return sorted(res["list"][0]["permissions"])


def create(g, token, permissions):
    name, res, _ = g.call(AK + "/set", {"create": {"k": {"permissions": permissions}}},
                          token=token)
    assert name == AK + "/set", res
    return res


def update(g, token, kid, patch):
    name, res, _ = g.call(AK + "/set", {"update": {kid: patch}}, token=token)
    assert name == AK + "/set", res
    return res


def assert_forbidden(err, *lacking, granted=()):
    assert err["type"] == "forbidden", err
    assert err["properties"] == ["permissions"], err
    for p in lacking:
        assert p in err["description"], err
    for p in granted:
        assert p not in err["description"], err


def keys_named(g):
    _, res, _ = g.call(AK + "/get", {"properties": ["name"]})
    return sorted(k["name"] for k in res["list"])


def test_create_only_key_cannot_create_a_wider_key(gatehouse):
    _, secret = make_key(gatehouse, CREATE_ONLY, "creator")
    res = create(gatehouse, secret, ["sysApiKeyCreate", "sysNetworkListenerDestroy",
                                     "sysApiKeyUpdate"])
    assert_forbidden(res["notCreated"]["k"], "sysNetworkListenerDestroy", "sysApiKeyUpdate",
                     granted=["sysApiKeyCreate,", "sysApiKeyCreate "])
    assert keys_named(gatehouse) == ["creator"]


def test_create_only_key_creates_subsets_of_itself(gatehouse):
    _, secret = make_key(gatehouse, CREATE_ONLY, "creator")
    res = create(gatehouse, secret, CREATE_ONLY)
    assert "k" in res["created"], res
    res = create(gatehouse, secret, [])
    assert "k" in res["created"], res


def test_key_creates_subset_and_equal_but_not_superset(gatehouse):
    _, secret = make_key(gatehouse, ALL_KEY)
    res = create(gatehouse, secret, ["sysNetworkListenerGet", "sysApiKeyCreate"])
    kid = res["created"]["k"]["id"]
    assert perms_of(gatehouse, kid) == sorted(["sysNetworkListenerGet", "sysApiKeyCreate"])
    res = create(gatehouse, secret, ALL_KEY)
    assert "k" in res["created"], res
    res = create(gatehouse, secret, ALL_KEY + ["sysSystemSettingsUpdate"])
    assert_forbidden(res["notCreated"]["k"], "sysSystemSettingsUpdate",
                     granted=["sysApiKeyCreate"])


def test_update_only_key_cannot_widen_itself(gatehouse):
    kid, secret = make_key(gatehouse, UPDATE_ONLY)
    res = update(gatehouse, secret, kid, {"permissions": UPDATE_ONLY + ["sysApiKeyCreate"]})
    assert_forbidden(res["notUpdated"][kid], "sysApiKeyCreate")
    res = update(gatehouse, secret, kid, {"permissions/sysNetworkListenerDestroy": True})
    assert_forbidden(res["notUpdated"][kid], "sysNetworkListenerDestroy")
    assert perms_of(gatehouse, kid) == UPDATE_ONLY
    # nothing widened: the same key may still rename itself
    res = update(gatehouse, secret, kid, {"name": "renamed"})
    assert kid in res["updated"], res


def test_update_only_key_cannot_widen_or_keep_another_key(gatehouse):
    _, secret = make_key(gatehouse, UPDATE_ONLY, "updater")
    other, _ = make_key(gatehouse, ["sysApiKeyUpdate"], "other")
    res = update(gatehouse, secret, other, {"permissions/sysCertificateDestroy": True})
    assert_forbidden(res["notUpdated"][other], "sysCertificateDestroy")
    assert perms_of(gatehouse, other) == ["sysApiKeyUpdate"]
    # a key holding more than the updater: renaming it would keep what the updater lacks
    wide, _ = make_key(gatehouse, ["sysApiKeyUpdate", "sysNetworkListenerCreate",
                                   "sysCertificateGet"], "wide")
    res = update(gatehouse, secret, wide, {"name": "wide2"})
    assert_forbidden(res["notUpdated"][wide], "sysNetworkListenerCreate", "sysCertificateGet")
    # narrowing it to less than the updater lacks still keeps one it lacks
    res = update(gatehouse, secret, wide, {"permissions/sysCertificateGet": None})
    assert_forbidden(res["notUpdated"][wide], "sysNetworkListenerCreate",
                     granted=["sysCertificateGet"])
    assert perms_of(gatehouse, wide) == sorted(["sysApiKeyUpdate", "sysNetworkListenerCreate",
                                                "sysCertificateGet"])
    # narrowing it to what the updater holds is allowed
    res = update(gatehouse, secret, wide, {"permissions": ["sysApiKeyUpdate"]})
    assert wide in res["updated"], res
    assert perms_of(gatehouse, wide) == ["sysApiKeyUpdate"]


def test_key_narrows_itself_and_others_within_its_permissions(gatehouse):
    kid, secret = make_key(gatehouse, ALL_KEY, "mine")
    other, _ = make_key(gatehouse, ["sysApiKeyGet", "sysNetworkListenerGet"], "other")
    res = update(gatehouse, secret, other, {"permissions": ["sysApiKeyGet", "sysApiKeyCreate",
                                                            "sysNetworkListenerGet"]})
    assert other in res["updated"], res  # widened, but only with what the caller holds
    res = update(gatehouse, secret, other, {"permissions": ["sysApiKeyGet"]})
    assert other in res["updated"], res
    res = update(gatehouse, secret, kid, {"permissions/sysCertificateGet": None})
    assert kid in res["updated"], res
    assert "sysCertificateGet" not in perms_of(gatehouse, kid)
    # once dropped, the key cannot take it back
    res = update(gatehouse, secret, kid, {"permissions/sysCertificateGet": True})
    assert_forbidden(res["notUpdated"][kid], "sysCertificateGet")


def test_admin_secret_grants_everything(gatehouse):
    _, res, _ = gatehouse.call("x:SystemSettings/get", {})  # the admin holds every permission
    every = ["sysNetworkListenerGet", "sysNetworkListenerQuery", "sysNetworkListenerCreate",
             "sysNetworkListenerUpdate", "sysNetworkListenerDestroy", "sysCertificateGet",
             "sysCertificateQuery", "sysCertificateCreate", "sysCertificateUpdate",
             "sysCertificateDestroy", "sysApiKeyGet", "sysApiKeyQuery", "sysApiKeyCreate",
             "sysApiKeyUpdate", "sysApiKeyDestroy", "sysDestinationGet", "sysDestinationQuery",
             "sysDestinationCreate", "sysDestinationUpdate", "sysDestinationDestroy",
             "sysSystemSettingsGet", "sysSystemSettingsUpdate"]
    kid, _ = make_key(gatehouse, every)
    assert perms_of(gatehouse, kid) == sorted(every)
    res = update(gatehouse, None, kid, {"permissions": ["sysApiKeyGet"]})
    assert kid in res["updated"]
    res = update(gatehouse, None, kid, {"permissions": every})
    assert kid in res["updated"]


def test_full_key_made_by_admin_may_mint_full_keys(gatehouse):
    every_ak = ["sysApiKeyGet", "sysApiKeyQuery", "sysApiKeyCreate", "sysApiKeyUpdate",
                "sysApiKeyDestroy"]
    _, secret = make_key(gatehouse, every_ak)
    res = create(gatehouse, secret, every_ak)
    assert "k" in res["created"], res


def test_forbidden_create_in_a_mixed_set_leaves_the_rest(gatehouse):
    _, secret = make_key(gatehouse, CREATE_ONLY, "creator")
    name, res, _ = gatehouse.call(AK + "/set", {"create": {
        "ok": {"permissions": CREATE_ONLY, "name": "fine"},
        "bad": {"permissions": ["sysApiKeyDestroy"], "name": "wider"}}}, token=secret)
    assert "ok" in res["created"]
    assert_forbidden(res["notCreated"]["bad"], "sysApiKeyDestroy")
    assert keys_named(gatehouse) == ["creator", "fine"]
