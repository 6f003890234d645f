//! The 2026-07-28 rules: the era lock, `_meta`, discover, input across
//! eras, listen streams (ERAS §2, §4).

use super::*;

mod meta_cache;
mod streams;
mod tasks;

use super::era::{MODERN, SERVER_INFO, UNSUPPORTED_VERSION};

/// The `_meta` of a modern request, with `extra` keys added.
pub(super) fn meta(extra: Value) -> Value {
    let mut m = json!({
        "io.modelcontextprotocol/protocolVersion": MODERN,
        "io.modelcontextprotocol/clientCapabilities": {"sampling": {}, "extensions": {"x/y": {}}},
        "io.modelcontextprotocol/clientInfo": {"name": "mc", "version": "2"},
    });
    if let (Some(m), Some(e)) = (m.as_object_mut(), extra.as_object()) {
        m.extend(e.clone());
    }
    m
}

fn modern(id: Value, method: &str, mut params: Value, extra: Value) -> Value {
    params["_meta"] = meta(extra);
    json!({"jsonrpc":"2.0","id":id,"method":method,"params":params})
}

/// A router of `n` legacy children locked modern by a `server/discover`
/// they answer with `caps`; returns the discover result.
fn discover(r: &mut Router, caps: Value, now: Instant) -> Value {
    let a = r.from_client(
        modern(json!("d"), "server/discover", json!({}), json!({})),
        now,
    );
    let sent = to_child(&a);
    assert_eq!(
        sent.len(),
        r.children.len(),
        "every child initialized at once"
    );
    let mut last = Vec::new();
    for (i, m) in sent {
        assert_eq!(m["method"], "initialize");
        assert_eq!(m["params"]["protocolVersion"], "2025-11-25");
        assert_eq!(
            m["params"]["capabilities"],
            json!({"sampling": {}}),
            "the first request's capabilities, minus extensions"
        );
        assert_eq!(m["params"]["clientInfo"]["name"], "mc");
        last = r.from_child(
            i,
            json!({"jsonrpc":"2.0","id":m["id"],"result":{"protocolVersion":"2025-11-25","capabilities":caps,"serverInfo":{"name":"x","version":"1"},"instructions":format!("i{i}")}}),
            now,
        );
    }
    let initialized: Vec<_> = to_child(&last)
        .into_iter()
        .filter(|(_, m)| m["method"] == "notifications/initialized")
        .collect();
    assert_eq!(
        initialized.len(),
        r.children.len(),
        "the gateway is their client"
    );
    let reply = to_client(&last);
    assert_eq!(reply.len(), 1);
    assert_eq!(reply[0]["id"], "d");
    reply[0]["result"].clone()
}

fn raw(r: &mut Router, child: usize, line: String, now: Instant) -> Value {
    let a = r.from_child_incoming(
        child,
        jsonrpc::parse_child_line(line.as_bytes()).unwrap(),
        now,
    );
    match &a[..] {
        [Action::ToClientRaw(b)] => serde_json::from_slice(b).unwrap(),
        [Action::ToClient(v)] => v.clone(),
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_modern_first_request_locks_the_era_and_discover_merges_the_children() {
    let now = Instant::now();
    let mut r = router(2);
    let d = discover(
        &mut r,
        json!({"tools":{"listChanged":true},"logging":{}}),
        now,
    );
    assert_eq!(d["resultType"], "complete");
    assert_eq!(d["supportedVersions"], json!([MODERN]));
    assert_eq!(d["capabilities"]["tools"]["listChanged"], true);
    assert!(d["capabilities"].get("logging").is_some());
    assert_eq!(d["instructions"], "[s0] i0\n\n[s1] i1");
    assert_eq!(
        (d["ttlMs"].clone(), d["cacheScope"].clone()),
        (json!(0), json!("private"))
    );
    assert_eq!(d["_meta"][SERVER_INFO]["name"], "gw");
    assert!(d.get("serverInfo").is_none() && d.get("protocolVersion").is_none());
    // Locked: initialize now gets -32022 naming only the modern version.
    let a = r.from_client(
        json!({"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18"}}),
        now,
    );
    let e = &to_client(&a)[0]["error"];
    assert_eq!(e["code"], UNSUPPORTED_VERSION);
    assert_eq!(
        e["data"],
        json!({"supported": [MODERN], "requested": "2025-06-18"})
    );
    assert!(
        e["message"]
            .as_str()
            .unwrap()
            .contains("locked to 2026-07-28")
    );
    assert!(to_child(&a).is_empty());
}

#[test]
fn a_modern_request_first_is_served_without_discover() {
    let now = Instant::now();
    let mut r = router(1);
    let a = r.from_client(modern(json!(1), "tools/list", json!({}), json!({})), now);
    let (_, init) = &to_child(&a)[0];
    assert_eq!(init["method"], "initialize");
    let a = r.from_child(
        0,
        json!({"jsonrpc":"2.0","id":init["id"],"result":{"capabilities":{"tools":{}}}}),
        now,
    );
    let list = to_child(&a)
        .into_iter()
        .find(|(_, m)| m["method"] == "tools/list")
        .expect("the deferred list goes out once the child is initialized");
    let a = r.from_child(
        0,
        json!({"jsonrpc":"2.0","id":list.1["id"],"result":{"tools":[{"name":"t"}]}}),
        now,
    );
    let l = &to_client(&a)[0]["result"];
    assert_eq!(l["tools"][0]["name"], "t");
    assert_eq!(l["resultType"], "complete");
    assert_eq!(
        (l["ttlMs"].clone(), l["cacheScope"].clone()),
        (json!(0), json!("private"))
    );
    assert_eq!(l["_meta"][SERVER_INFO]["version"], "0");
}

#[test]
fn forwarded_modern_requests_lose_the_modern_keys_and_results_are_stamped() {
    let now = Instant::now();
    let mut r = router(1);
    discover(&mut r, json!({"tools":{},"resources":{}}), now);
    list_tools(&mut r, now, |_| json!([{"name":"t"}]));
    let call = modern(
        json!("c"),
        "tools/call",
        json!({"name":"t","arguments":{}}),
        json!({"progressToken": "p", "traceparent": "00-x"}),
    );
    let a = r.from_client(call, now);
    let (_, m) = &to_child(&a)[0];
    assert_eq!(
        m["params"]["_meta"],
        json!({"progressToken":"p","traceparent":"00-x"}),
        "a legacy child never sees the 2026-07-28 keys"
    );
    let v = raw(
        &mut r,
        0,
        format!(
            r#"{{"jsonrpc":"2.0","id":{},"result":{{"content":[]}}}}"#,
            m["id"]
        ),
        now,
    );
    assert_eq!(v["id"], "c");
    assert_eq!(v["result"]["resultType"], "complete");
    assert_eq!(v["result"]["_meta"][SERVER_INFO]["name"], "gw");
    assert!(
        v["result"].get("ttlMs").is_none(),
        "a call is not cacheable"
    );
    // resources/read: the cache hints; a legacy -32002 becomes -32602.
    let a = r.from_client(json!({"jsonrpc":"2.0","id":"L","method":"resources/list","params":{"_meta":meta(json!({}))}}), now);
    for (_, m) in to_child(&a) {
        let kind = if m["method"] == "resources/list" {
            "resources"
        } else {
            "resourceTemplates"
        };
        let item = if kind == "resources" {
            json!([{"uri":"a://x","name":"x"}])
        } else {
            json!([])
        };
        r.from_child(
            0,
            json!({"jsonrpc":"2.0","id":m["id"],"result":{kind: item}}),
            now,
        );
    }
    let a = r.from_client(
        modern(
            json!("r"),
            "resources/read",
            json!({"uri":"a://x"}),
            json!({}),
        ),
        now,
    );
    let (_, t) = &to_child(&a)[0];
    assert_eq!(t["method"], "resources/templates/list");
    let a = r.from_child(
        0,
        json!({"jsonrpc":"2.0","id":t["id"],"result":{"resourceTemplates":[]}}),
        now,
    );
    let (_, m) = &to_child(&a)[0];
    assert_eq!(m["method"], "resources/read");
    let v = raw(
        &mut r,
        0,
        format!(
            r#"{{"jsonrpc":"2.0","id":{},"result":{{"contents":[]}}}}"#,
            m["id"]
        ),
        now,
    );
    assert_eq!(
        (
            v["result"]["ttlMs"].clone(),
            v["result"]["cacheScope"].clone()
        ),
        (json!(0), json!("private"))
    );
    let a = r.from_client(
        modern(
            json!("r2"),
            "resources/read",
            json!({"uri":"a://x"}),
            json!({}),
        ),
        now,
    );
    let (_, m) = &to_child(&a)[0];
    let v = raw(
        &mut r,
        0,
        format!(
            r#"{{"jsonrpc":"2.0","id":{},"error":{{"code":-32002,"message":"gone"}}}}"#,
            m["id"]
        ),
        now,
    );
    assert_eq!(v["error"]["code"], INVALID_PARAMS);
    assert!(r.ids.is_empty());
}

#[test]
fn every_modern_request_is_checked_and_removed_methods_are_refused() {
    let now = Instant::now();
    let mut r = router(1);
    discover(&mut r, json!({"tools":{}}), now);
    let err = |r: &mut Router, m: Value| to_client(&r.from_client(m, now))[0]["error"].clone();
    let e = err(
        &mut r,
        json!({"jsonrpc":"2.0","id":1,"method":"tools/list"}),
    );
    assert_eq!(e["code"], INVALID_PARAMS);
    assert!(e["message"].as_str().unwrap().contains("protocolVersion"));
    let mut no_caps = modern(json!(2), "tools/list", json!({}), json!({}));
    no_caps["params"]["_meta"]
        .as_object_mut()
        .unwrap()
        .remove("io.modelcontextprotocol/clientCapabilities");
    let e = err(&mut r, no_caps);
    assert_eq!(e["code"], INVALID_PARAMS);
    assert!(
        e["message"]
            .as_str()
            .unwrap()
            .contains("clientCapabilities")
    );
    let e = err(
        &mut r,
        modern(
            json!(3),
            "tools/list",
            json!({}),
            json!({"io.modelcontextprotocol/protocolVersion": "1900-01-01"}),
        ),
    );
    assert_eq!(e["code"], UNSUPPORTED_VERSION);
    assert_eq!(
        e["data"],
        json!({"supported": [MODERN], "requested": "1900-01-01"})
    );
    let e = err(
        &mut r,
        modern(
            json!(4),
            "tools/list",
            json!({}),
            json!({"io.modelcontextprotocol/logLevel": "loud"}),
        ),
    );
    assert_eq!(e["code"], INVALID_PARAMS);
    let e = err(
        &mut r,
        json!({"jsonrpc":"2.0","id":5,"method":"tools/list","params":{"_meta":"x"}}),
    );
    assert_eq!(e["code"], INVALID_PARAMS);
    for removed in [
        "ping",
        "logging/setLevel",
        "resources/subscribe",
        "resources/unsubscribe",
        "tasks/result",
    ] {
        let e = err(&mut r, modern(json!(6), removed, json!({}), json!({})));
        assert_eq!(e["code"], METHOD_NOT_FOUND, "{removed}");
        assert!(
            e["message"]
                .as_str()
                .unwrap()
                .contains("removed in 2026-07-28")
        );
    }
    // The session goes on, and notifications of the legacy era are dropped.
    assert!(
        r.from_client(
            json!({"jsonrpc":"2.0","method":"notifications/roots/list_changed"}),
            now
        )
        .is_empty()
    );
    let a = r.from_client(modern(json!(7), "tools/list", json!({}), json!({})), now);
    assert_eq!(to_child(&a)[0].1["method"], "tools/list");
}

#[test]
fn before_the_lock_a_bad_version_lists_every_era_and_does_not_lock() {
    let now = Instant::now();
    let mut r = router(1);
    let a = r.from_client(
        modern(
            json!(1),
            "server/discover",
            json!({}),
            json!({"io.modelcontextprotocol/protocolVersion": "2025-11-25"}),
        ),
        now,
    );
    let e = &to_client(&a)[0]["error"];
    assert_eq!(e["code"], UNSUPPORTED_VERSION);
    let supported = e["data"]["supported"].as_array().unwrap();
    assert!(supported.contains(&json!(MODERN)) && supported.contains(&json!("2025-11-25")));
    assert!(to_child(&a).is_empty(), "nothing initialized");
    let a = r.from_client(json!({"jsonrpc":"2.0","id":2,"method":"tools/list"}), now);
    let m = to_client(&a)[0]["error"]["message"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(m.contains("initialize") && m.contains("_meta"), "{m}");
    // initialize still works, and locks legacy: modern requests are refused.
    init(&mut r, json!({"tools":{}}), now);
    for m in [
        modern(json!(3), "server/discover", json!({}), json!({})),
        modern(json!(4), "tools/list", json!({}), json!({})),
    ] {
        let a = r.from_client(m, now);
        let e = &to_client(&a)[0]["error"];
        assert_eq!(e["code"], INVALID_REQUEST);
        let msg = e["message"].as_str().unwrap();
        assert!(
            msg.contains("locked to the initialize era (2025-06-18)"),
            "{msg}"
        );
    }
    // A legacy result gets no stamps.
    let a = list_tools(&mut r, now, |_| json!([]));
    assert!(to_client(&a)[0]["result"].get("resultType").is_none());
}

#[test]
fn a_childs_log_messages_reach_a_modern_client_only_for_requests_that_asked() {
    let now = Instant::now();
    let mut r = router(1);
    discover(&mut r, json!({"tools":{},"logging":{}}), now);
    list_tools(&mut r, now, |_| json!([{"name":"t"}]));
    let log = |lvl: &str| json!({"jsonrpc":"2.0","method":"notifications/message","params":{"level":lvl,"data":"d"}});
    // No logLevel: nothing passes, and no setLevel is sent.
    let a = r.from_client(
        modern(json!(1), "tools/call", json!({"name":"t"}), json!({})),
        now,
    );
    assert_eq!(to_child(&a).len(), 1);
    assert!(to_client(&r.from_child(0, log("emergency"), now)).is_empty());
    let first = to_child(&a)[0].1["id"].clone();
    // logLevel warning: the child is told, and only >= warning passes.
    let a = r.from_client(
        modern(
            json!(2),
            "tools/call",
            json!({"name":"t"}),
            json!({"io.modelcontextprotocol/logLevel":"warning"}),
        ),
        now,
    );
    let sent = to_child(&a);
    assert_eq!(sent[0].1["method"], "logging/setLevel");
    assert_eq!(sent[0].1["params"]["level"], "warning");
    assert!(to_client(&r.from_child(0, log("info"), now)).is_empty());
    assert_eq!(to_client(&r.from_child(0, log("error"), now)).len(), 1);
    // Its answer to setLevel is dropped; after the call ends, nothing passes.
    assert!(
        r.from_child(
            0,
            json!({"jsonrpc":"2.0","id":sent[0].1["id"],"result":{}}),
            now
        )
        .is_empty()
    );
    r.from_child(
        0,
        json!({"jsonrpc":"2.0","id":sent[1].1["id"],"result":{"content":[]}}),
        now,
    );
    r.from_child(
        0,
        json!({"jsonrpc":"2.0","id":first,"result":{"content":[]}}),
        now,
    );
    assert!(to_client(&r.from_child(0, log("error"), now)).is_empty());
    // A less verbose level later sends no second setLevel.
    let a = r.from_client(
        modern(
            json!(3),
            "tools/call",
            json!({"name":"t"}),
            json!({"io.modelcontextprotocol/logLevel":"error"}),
        ),
        now,
    );
    assert_eq!(to_child(&a).len(), 1);
}

#[test]
fn a_legacy_childs_requests_are_refused_for_a_modern_client_and_errors_use_modern_codes() {
    let now = Instant::now();
    let mut r = router(1);
    discover(&mut r, json!({"tools":{}}), now);
    let a = r.from_child(
        0,
        json!({"jsonrpc":"2.0","id":"k","method":"roots/list"}),
        now,
    );
    assert!(
        to_client(&a).is_empty(),
        "never a request to a modern client"
    );
    let (_, e) = &to_child(&a)[0];
    assert_eq!(e["id"], "k");
    assert!(
        e["error"]["message"]
            .as_str()
            .unwrap()
            .contains("2026-07-28")
    );
    let a = r.from_child(0, json!({"jsonrpc":"2.0","id":"p","method":"ping"}), now);
    assert_eq!(to_child(&a)[0].1["result"], json!({}));
    // The gateway's timeout is -32603 with the reason in data.
    list_tools(&mut r, now, |_| json!([{"name":"t"}]));
    r.from_client(
        modern(json!(9), "tools/call", json!({"name":"t"}), json!({})),
        now,
    );
    let a = r.tick(now + Duration::from_secs(11));
    let e = &to_client(&a)[0]["error"];
    assert_eq!(e["code"], jsonrpc::INTERNAL_ERROR);
    assert_eq!(e["data"]["reason"], "timeout");
}

// ---- 2026-07-28 children (ERAS §2.2, §4 columns B and C) ----

/// Child 1 of two speaks 2026-07-28 (its discover result).
fn with_modern_child() -> Router {
    let mut r = router(2);
    r.child_modern(
        1,
        &json!({"supportedVersions":[MODERN],"capabilities":{"tools":{},"logging":{},"extensions":{"io.modelcontextprotocol/tasks":{}}},"instructions":"m"}),
    );
    r
}

#[test]
fn a_legacy_client_reaches_a_modern_child_with_meta_built_from_its_initialize() {
    let now = Instant::now();
    let mut r = with_modern_child();
    let a = r.from_client(
        json!({"jsonrpc":"2.0","id":0,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{"roots":{"listChanged":true},"tasks":{},"sampling":{}},"clientInfo":{"name":"lc","version":"3"}}}),
        now,
    );
    let sent = to_child(&a);
    assert_eq!(sent.len(), 1, "no initialize for the modern child");
    assert_eq!(sent[0].0, 0);
    let a = r.from_child(
        0,
        json!({"jsonrpc":"2.0","id":sent[0].1["id"],"result":{"capabilities":{"logging":{}}}}),
        now,
    );
    let init = &to_client(&a)[0]["result"];
    assert!(
        init["capabilities"]["tools"].is_object(),
        "the modern child's tools count: {init}"
    );
    assert!(
        init["capabilities"].get("extensions").is_none(),
        "no extensions in legacy"
    );
    assert!(init["instructions"].as_str().unwrap().contains("[s1] m"));
    let a = r.from_client(
        json!({"jsonrpc":"2.0","method":"notifications/initialized"}),
        now,
    );
    assert_eq!(
        to_child(&a).iter().map(|(i, _)| *i).collect::<Vec<_>>(),
        [0],
        "not to the modern child"
    );
    // setLevel: answered for the legacy child, remembered for the modern one.
    let a = r.from_client(
        json!({"jsonrpc":"2.0","id":1,"method":"logging/setLevel","params":{"level":"notice"}}),
        now,
    );
    let sent = to_child(&a);
    assert_eq!(sent.iter().map(|(i, _)| *i).collect::<Vec<_>>(), [0]);
    r.from_child(
        0,
        json!({"jsonrpc":"2.0","id":sent[0].1["id"],"result":{}}),
        now,
    );
    // The list fan-out to the modern child carries the mapped _meta.
    let a = r.from_client(json!({"jsonrpc":"2.0","id":2,"method":"tools/list"}), now);
    let (i, m) = to_child(&a)[0].clone();
    assert_eq!(i, 1, "only the modern child has tools");
    let meta = &m["params"]["_meta"];
    assert_eq!(meta["io.modelcontextprotocol/protocolVersion"], MODERN);
    assert_eq!(
        meta["io.modelcontextprotocol/clientCapabilities"],
        json!({"roots":{},"sampling":{}})
    );
    assert_eq!(meta["io.modelcontextprotocol/clientInfo"]["name"], "lc");
    assert_eq!(meta["io.modelcontextprotocol/logLevel"], "notice");
    r.from_child(1, json!({"jsonrpc":"2.0","id":m["id"],"result":{"resultType":"complete","tools":[{"name":"now"}],"ttlMs":60000,"cacheScope":"public"}}), now);
    // A call: the client's progressToken stays next to the added keys.
    let a = r.from_client(json!({"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"now","_meta":{"progressToken":5}}}), now);
    let (_, m) = &to_child(&a)[0];
    assert_eq!(m["params"]["_meta"]["progressToken"], 5);
    assert_eq!(
        m["params"]["_meta"]["io.modelcontextprotocol/protocolVersion"],
        MODERN
    );
    let v = raw(
        &mut r,
        1,
        format!(
            r#"{{"jsonrpc":"2.0","id":{},"result":{{"resultType":"complete","content":[]}}}}"#,
            m["id"]
        ),
        now,
    );
    assert_eq!(v["id"], 3);
    assert_eq!(v["result"]["content"], json!([]));
    // A restart needs no initialize either.
    let a = r.child_restarted(1, now);
    assert!(to_child(&a).is_empty());
    assert_eq!(
        to_client(&a)[0]["method"],
        "notifications/tools/list_changed"
    );
}

#[test]
fn a_modern_client_and_a_modern_child_pass_meta_and_input_required_through() {
    let now = Instant::now();
    let mut r = with_modern_child();
    let d = discover_with_modern(&mut r, now);
    assert_eq!(
        d["capabilities"]["extensions"],
        json!({"io.modelcontextprotocol/tasks":{}})
    );
    list_tools(&mut r, now, |i| json!([{"name": format!("t{i}")}]));
    let call = modern(
        json!("c"),
        "tools/call",
        json!({"name":"t1"}),
        json!({"io.modelcontextprotocol/logLevel":"debug"}),
    );
    let a = r.from_client(call.clone(), now);
    let sent = to_child(&a);
    assert_eq!(sent.len(), 1, "no setLevel for a modern child");
    let (i, m) = &sent[0];
    assert_eq!(*i, 1);
    assert_eq!(
        m["params"]["_meta"], call["params"]["_meta"],
        "the client's own _meta"
    );
    let v = raw(
        &mut r,
        1,
        format!(
            r#"{{"jsonrpc":"2.0","id":{},"result":{{"resultType":"input_required","inputRequests":{{"k":{{"method":"roots/list","params":{{}}}}}},"requestState":"s1"}}}}"#,
            m["id"]
        ),
        now,
    );
    assert_eq!(v["result"]["resultType"], "input_required");
    let handle = v["result"]["requestState"].clone();
    assert_ne!(
        handle, "s1",
        "the child's state goes out under a handle of ours"
    );
    assert!(v["result"].get("ttlMs").is_none());
    let retry = |id: &str, state: &Value, name: &str| {
        modern(
            json!(id),
            "tools/call",
            json!({"name":name,"inputResponses":{"k":{"roots":[]}},"requestState":state}),
            json!({}),
        )
    };
    // The child's own state, another tool's retry: refused, nothing sent.
    for (bad, why) in [
        (retry("x1", &json!("s1"), "t1"), "unknown, used or expired"),
        (retry("x2", &handle, "t0"), "another request"),
    ] {
        let a = r.from_client(bad, now);
        assert!(to_child(&a).is_empty());
        let e = &to_client(&a)[0]["error"];
        assert!(e["message"].as_str().unwrap().contains(why), "{e}");
    }
    // The retry reaches the same child with its state as it came.
    let a = r.from_client(retry("c2", &handle, "t1"), now);
    let (i, m) = &to_child(&a)[0];
    assert_eq!(*i, 1);
    assert_eq!(m["params"]["requestState"], "s1");
    assert_eq!(m["params"]["inputResponses"]["k"], json!({"roots":[]}));
    // Used once.
    let a = r.from_client(retry("c3", &handle, "t1"), now);
    assert_eq!(to_client(&a)[0]["error"]["code"], INVALID_PARAMS);
}

/// `server/discover` when child 0 is legacy and child 1 modern.
fn discover_with_modern(r: &mut Router, now: Instant) -> Value {
    let a = r.from_client(
        modern(json!("d"), "server/discover", json!({}), json!({})),
        now,
    );
    let sent = to_child(&a);
    assert_eq!(sent.len(), 1, "only the legacy child is initialized");
    let a = r.from_child(
        0,
        json!({"jsonrpc":"2.0","id":sent[0].1["id"],"result":{"capabilities":{"tools":{}}}}),
        now,
    );
    let initialized: Vec<usize> = to_child(&a).iter().map(|(i, _)| *i).collect();
    assert_eq!(initialized, [0]);
    to_client(&a)[0]["result"].clone()
}

#[test]
fn a_child_that_refuses_initialize_with_32022_is_asked_discover_and_served_modern() {
    let now = Instant::now();
    let mut r = router(1);
    let a = r.from_client(
        json!({"jsonrpc":"2.0","id":0,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{}}}),
        now,
    );
    let (_, m) = &to_child(&a)[0];
    let a = r.from_child(0, json!({"jsonrpc":"2.0","id":m["id"],"error":{"code":-32022,"message":"locked","data":{"supported":[MODERN]}}}), now);
    assert!(to_client(&a).is_empty(), "initialize still waits");
    let (_, d) = &to_child(&a)[0];
    assert_eq!(d["method"], "server/discover");
    assert_eq!(
        d["params"]["_meta"]["io.modelcontextprotocol/protocolVersion"],
        MODERN
    );
    let a = r.from_child(0, json!({"jsonrpc":"2.0","id":d["id"],"result":{"resultType":"complete","supportedVersions":[MODERN],"capabilities":{"tools":{}}}}), now);
    assert!(to_client(&a)[0]["result"]["capabilities"]["tools"].is_object());
    assert_eq!(r.ready_children(), ["s0"]);
    let a = r.from_client(
        json!({"jsonrpc":"2.0","method":"notifications/initialized"}),
        now,
    );
    assert!(a.is_empty(), "a modern child gets no initialized");
}

// ---- MRTR: a legacy child's requests for a 2026-07-28 client (ERAS §4.1) ----

/// A modern client (declaring `sampling` and `roots`) with tool `t` of a
/// legacy child open as call "c1"; returns the call as the child got it.
fn open_call(r: &mut Router, now: Instant) -> Value {
    discover(r, json!({"tools":{}}), now);
    list_tools(r, now, |_| json!([{"name":"t"}]));
    let mut call = modern(
        json!("c1"),
        "tools/call",
        json!({"name":"t","arguments":{}}),
        json!({}),
    );
    call["params"]["_meta"]["io.modelcontextprotocol/clientCapabilities"] =
        json!({"sampling":{},"roots":{}});
    let a = r.from_client(call, now);
    to_child(&a)[0].1.clone()
}

fn retry(id: &str, state: &Value, responses: Value) -> Value {
    let mut m = modern(
        json!(id),
        "tools/call",
        json!({"name":"t","arguments":{}}),
        json!({}),
    );
    m["params"]["requestState"] = state.clone();
    m["params"]["inputResponses"] = responses;
    m
}

#[test]
fn a_legacy_childs_request_becomes_input_required_and_the_retry_answers_it() {
    let now = Instant::now();
    let mut r = router(1);
    let call = open_call(&mut r, now);
    let a = r.from_child(0, json!({"jsonrpc":"2.0","id":"s1","method":"sampling/createMessage","params":{"messages":[],"maxTokens":5}}), now);
    let ir = &to_client(&a)[0];
    assert_eq!(ir["id"], "c1");
    let res = &ir["result"];
    assert_eq!(res["resultType"], "input_required");
    let (key, req) = res["inputRequests"]
        .as_object()
        .unwrap()
        .iter()
        .next()
        .unwrap();
    assert_eq!(req["method"], "sampling/createMessage");
    assert_eq!(req["params"]["maxTokens"], 5);
    let state = res["requestState"].clone();
    assert_eq!(state.as_str().unwrap().len(), 32, "128 random bits");
    assert!(to_child(&a).is_empty(), "the child's call stays open");
    // Cancelling the answered id is ignored.
    let a = r.from_client(
        json!({"jsonrpc":"2.0","method":"notifications/cancelled","params":{"requestId":"c1"}}),
        now,
    );
    assert!(a.is_empty());
    // The retry answers the child's request under its own id.
    let a = r.from_client(
        retry(
            "c2",
            &state,
            json!({key: {"role":"assistant","content":{"type":"text","text":"hi"},"model":"m"}}),
        ),
        now,
    );
    let (_, answer) = &to_child(&a)[0];
    assert_eq!(answer["id"], "s1");
    assert_eq!(answer["result"]["model"], "m");
    // A second request of the child: input_required again, on the retry.
    let a = r.from_child(
        0,
        json!({"jsonrpc":"2.0","id":"s2","method":"roots/list"}),
        now,
    );
    let ir = &to_client(&a)[0];
    assert_eq!(ir["id"], "c2");
    let (key2, _) = ir["result"]["inputRequests"]
        .as_object()
        .unwrap()
        .iter()
        .next()
        .unwrap();
    let state2 = ir["result"]["requestState"].clone();
    assert_ne!(state2, state);
    // Replayed, tampered and unknown keys are refused; the session goes on.
    for (bad, why) in [
        (retry("x1", &state, json!({})), "unknown, used or expired"),
        (
            retry("x2", &json!("0123456789abcdef0123456789abcdef"), json!({})),
            "unknown, used or expired",
        ),
        (
            retry("x3", &state2, json!({"nobody-asked": {}})),
            "nobody-asked",
        ),
        (
            retry("x4", &state2, json!({key2.clone(): 5})),
            "must be an object",
        ),
    ] {
        let a = r.from_client(bad, now);
        let e = &to_client(&a)[0];
        assert_eq!(e["error"]["code"], INVALID_PARAMS, "{e}");
        assert!(e["error"]["message"].as_str().unwrap().contains(why), "{e}");
        assert!(to_child(&a).is_empty());
    }
    let mut other = retry("x5", &state2, json!({}));
    other["params"]["name"] = json!("u");
    let a = r.from_client(other, now);
    assert!(
        to_client(&a)[0]["error"]["message"]
            .as_str()
            .unwrap()
            .contains("another request")
    );
    // The real retry: the child's final answer answers it, stamped.
    let a = r.from_client(
        retry("c3", &state2, json!({key2.clone(): {"roots":[]}})),
        now,
    );
    assert_eq!(to_child(&a)[0].1["id"], "s2");
    let v = raw(
        &mut r,
        0,
        format!(
            r#"{{"jsonrpc":"2.0","id":{},"result":{{"content":[{{"type":"text","text":"ok"}}]}}}}"#,
            call["id"]
        ),
        now,
    );
    assert_eq!(v["id"], "c3");
    assert_eq!(v["result"]["resultType"], "complete");
    assert!(r.ids.is_empty() && r.mrtr.is_empty() && r.mrtr.handles() == 0);
}

#[test]
fn a_client_that_never_retries_gets_the_childs_call_cancelled_at_the_timeout() {
    let now = Instant::now();
    let mut r = router(1);
    let call = open_call(&mut r, now);
    let t5 = now + Duration::from_secs(5);
    let a = r.from_child(
        0,
        json!({"jsonrpc":"2.0","id":"q","method":"roots/list"}),
        t5,
    );
    let state = to_client(&a)[0]["result"]["requestState"].clone();
    assert!(
        r.tick(now + Duration::from_secs(14)).is_empty(),
        "the wait starts at input_required"
    );
    let a = r.tick(t5 + Duration::from_secs(10));
    assert!(
        to_client(&a).is_empty(),
        "the client's request was answered already"
    );
    let sent = to_child(&a);
    assert!(
        sent.iter()
            .any(|(_, m)| m["method"] == "notifications/cancelled"
                && m["params"]["requestId"] == call["id"])
    );
    let e = sent.iter().find(|(_, m)| m["id"] == "q").unwrap();
    assert!(
        e.1["error"]["message"]
            .as_str()
            .unwrap()
            .contains("did not retry")
    );
    assert!(r.ids.is_empty() && r.mrtr.is_empty());
    let a = r.from_client(
        retry("late", &state, json!({})),
        t5 + Duration::from_secs(11),
    );
    assert_eq!(to_client(&a)[0]["error"]["code"], INVALID_PARAMS);
}

#[test]
fn input_the_client_did_not_declare_or_outside_a_call_is_refused_to_the_child() {
    let now = Instant::now();
    let mut r = router(1);
    let call = open_call(&mut r, now);
    let a = r.from_child(
        0,
        json!({"jsonrpc":"2.0","id":"e","method":"elicitation/create","params":{"message":"?"}}),
        now,
    );
    assert!(to_client(&a).is_empty(), "not listed in inputRequests");
    let (_, e) = &to_child(&a)[0];
    assert_eq!(e["error"]["code"], METHOD_NOT_FOUND);
    assert!(
        e["error"]["message"]
            .as_str()
            .unwrap()
            .contains("elicitation")
    );
    // The call ends; a request outside any call gets an error.
    r.from_child(
        0,
        json!({"jsonrpc":"2.0","id":call["id"],"result":{"content":[]}}),
        now,
    );
    let a = r.from_child(
        0,
        json!({"jsonrpc":"2.0","id":"late","method":"roots/list"}),
        now,
    );
    assert_eq!(to_child(&a)[0].1["error"]["code"], jsonrpc::INTERNAL_ERROR);
    // A requestState the gateway never issued, for a legacy child: refused.
    let a = r.from_client(retry("f", &json!("foreign"), json!({})), now);
    assert_eq!(to_client(&a)[0]["error"]["code"], INVALID_PARAMS);
    assert!(to_child(&a).is_empty());
    assert!(r.ids.is_empty());
}

// ---- MRTR driven by the gateway for a legacy client (ERAS §4.2) ----

/// A legacy client (declaring `sampling` and form elicitation) with the
/// modern child 1's tool `now` listed; returns the router.
fn legacy_with_modern_child(now: Instant) -> Router {
    let mut r = with_modern_child();
    let a = r.from_client(
        json!({"jsonrpc":"2.0","id":0,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{"sampling":{},"elicitation":{}},"clientInfo":{"name":"lc","version":"1"}}}),
        now,
    );
    let (_, m) = &to_child(&a)[0];
    r.from_child(
        0,
        json!({"jsonrpc":"2.0","id":m["id"],"result":{"capabilities":{}}}),
        now,
    );
    let a = r.from_client(json!({"jsonrpc":"2.0","id":"L","method":"tools/list"}), now);
    let (_, m) = &to_child(&a)[0];
    r.from_child(1, json!({"jsonrpc":"2.0","id":m["id"],"result":{"resultType":"complete","tools":[{"name":"now"}]}}), now);
    r
}

fn input_required_line(id: &Value, requests: Value, state: &str) -> String {
    json!({"jsonrpc":"2.0","id":id,"result":{"resultType":"input_required","inputRequests":requests,"requestState":state}}).to_string()
}

#[test]
fn a_modern_childs_input_required_becomes_requests_to_a_legacy_client_and_a_retry() {
    let now = Instant::now();
    let mut r = legacy_with_modern_child(now);
    let a = r.from_client(json!({"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"now","arguments":{"a":1},"_meta":{"progressToken":"p"}}}), now);
    let (_, first) = to_child(&a)[0].clone();
    let state = "opaque \"state\" \u{e9}";
    let line = input_required_line(
        &first["id"],
        json!({"s": {"method":"sampling/createMessage","params":{"messages":[],"maxTokens":3}},
               "e": {"method":"elicitation/create","params":{"message":"name?","requestedSchema":{"type":"object"}}}}),
        state,
    );
    let a = r.from_child_incoming(1, jsonrpc::parse_child_line(line.as_bytes()).unwrap(), now);
    let asks = to_client(&a);
    assert_eq!(asks.len(), 2, "{asks:?}");
    let by_method = |m: &str| asks.iter().find(|x| x["method"] == m).unwrap().clone();
    let (s, e) = (
        by_method("sampling/createMessage"),
        by_method("elicitation/create"),
    );
    assert_eq!(s["params"]["maxTokens"], 3);
    assert!(r.from_client(json!({"jsonrpc":"2.0","id":s["id"],"result":{"role":"assistant","content":{"type":"text","text":"x"},"model":"m"}}), now).is_empty());
    let a = r.from_client(
        json!({"jsonrpc":"2.0","id":e["id"],"result":{"action":"accept","content":{"n":"z"}}}),
        now,
    );
    let (i, again) = to_child(&a)[0].clone();
    assert_eq!(i, 1);
    assert_ne!(again["id"], first["id"], "a new id");
    assert_eq!(again["params"]["name"], "now");
    assert_eq!(again["params"]["arguments"], json!({"a":1}));
    assert_eq!(again["params"]["requestState"], state, "echoed as it came");
    assert_eq!(again["params"]["inputResponses"]["s"]["model"], "m");
    assert_eq!(again["params"]["inputResponses"]["e"]["action"], "accept");
    assert_eq!(again["params"]["_meta"]["progressToken"], "p");
    assert_eq!(
        again["params"]["_meta"]["io.modelcontextprotocol/protocolVersion"],
        MODERN
    );
    let v = raw(
        &mut r,
        1,
        format!(
            r#"{{"jsonrpc":"2.0","id":{},"result":{{"resultType":"complete","content":[{{"type":"text","text":"t"}}]}}}}"#,
            again["id"]
        ),
        now,
    );
    assert_eq!(v["id"], 7, "the original id");
    assert_eq!(v["result"]["content"][0]["text"], "t");
    assert!(r.ids.is_empty() && r.drives.is_empty());
}

#[test]
fn input_a_legacy_client_did_not_declare_or_answered_with_an_error_fails_its_call() {
    let now = Instant::now();
    let mut r = legacy_with_modern_child(now);
    r.opts.audit = true; // each failed call is recorded once, with its code
    let outcomes =
        |a: &[Action]| -> Vec<Outcome> { audits(a).into_iter().map(|x| x.outcome).collect() };
    let call = |r: &mut Router, id: i64| {
        let a = r.from_client(
            json!({"jsonrpc":"2.0","id":id,"method":"tools/call","params":{"name":"now"}}),
            now,
        );
        to_child(&a)[0].1["id"].clone()
    };
    let cid = call(&mut r, 1);
    let line = input_required_line(&cid, json!({"r": {"method":"roots/list","params":{}}}), "s");
    let a = r.from_child_incoming(1, jsonrpc::parse_child_line(line.as_bytes()).unwrap(), now);
    let e = &to_client(&a)[0];
    assert_eq!(e["id"], 1);
    assert_eq!(e["error"]["code"], -32021);
    assert_eq!(
        e["error"]["data"]["requiredCapabilities"],
        json!({"roots":{}})
    );
    let m = e["error"]["message"].as_str().unwrap();
    assert!(m.contains("s1") && m.contains("roots"), "{m}");
    assert_eq!(outcomes(&a), [Outcome::Error(-32021)]);
    // url elicitation needs elicitation.url.
    let cid = call(&mut r, 2);
    let line = input_required_line(
        &cid,
        json!({"u": {"method":"elicitation/create","params":{"mode":"url","url":"https://x","message":"m"}}}),
        "s",
    );
    let a = r.from_child_incoming(1, jsonrpc::parse_child_line(line.as_bytes()).unwrap(), now);
    assert!(
        to_client(&a)[0]["error"]["message"]
            .as_str()
            .unwrap()
            .contains("elicitation.url")
    );
    // The client answers with an error: the call fails with it.
    let cid = call(&mut r, 3);
    let line = input_required_line(
        &cid,
        json!({"s": {"method":"sampling/createMessage","params":{"messages":[]}}}),
        "s",
    );
    let a = r.from_child_incoming(1, jsonrpc::parse_child_line(line.as_bytes()).unwrap(), now);
    let ask = &to_client(&a)[0];
    let a = r.from_client(
        json!({"jsonrpc":"2.0","id":ask["id"],"error":{"code":-1,"message":"user declined"}}),
        now,
    );
    let e = &to_client(&a)[0];
    assert_eq!(
        (e["id"].clone(), e["error"]["message"].clone()),
        (json!(3), json!("user declined"))
    );
    assert_eq!(outcomes(&a), [Outcome::Error(-1)]);
    assert!(to_child(&a).is_empty());
    // A child that keeps asking gives up after ten rounds.
    let mut cid = call(&mut r, 4);
    let mut last = Vec::new();
    for _ in 0..11 {
        let line = input_required_line(&cid, json!({}), "again");
        last = r.from_child_incoming(1, jsonrpc::parse_child_line(line.as_bytes()).unwrap(), now);
        if let Some((_, m)) = to_child(&last).first() {
            cid = m["id"].clone();
        }
    }
    let e = &to_client(&last)[0];
    assert_eq!(e["id"], 4);
    assert!(e["error"]["message"].as_str().unwrap().contains("10 times"));
    assert_eq!(outcomes(&last), [Outcome::Error(jsonrpc::INTERNAL_ERROR)]);
    assert!(r.ids.is_empty() && r.drives.is_empty());
}

#[test]
fn a_modern_childs_stateless_input_required_is_retried_with_answers_only() {
    let now = Instant::now();
    let mut r = with_modern_child();
    discover_with_modern(&mut r, now);
    list_tools(&mut r, now, |i| json!([{"name": format!("t{i}")}]));
    let retry = modern(
        json!("c2"),
        "tools/call",
        json!({"name":"t1","inputResponses":{"k":{"roots":[]}}}),
        json!({}),
    );
    let a = r.from_client(retry.clone(), now);
    let (i, m) = &to_child(&a)[0];
    assert_eq!(*i, 1);
    assert_eq!(
        m["params"]["inputResponses"],
        retry["params"]["inputResponses"]
    );
    // To a legacy child, answers nobody asked for are refused.
    let mut to_legacy = retry;
    to_legacy["params"]["name"] = json!("t0");
    let a = r.from_client(to_legacy, now);
    assert_eq!(to_client(&a)[0]["error"]["code"], INVALID_PARAMS);
}

#[test]
fn a_driven_call_whose_client_never_answers_fails_at_the_childs_timeout() {
    let now = Instant::now();
    let mut r = legacy_with_modern_child(now);
    let call = |r: &mut Router, id: i64, at: Instant| {
        let a = r.from_client(
            json!({"jsonrpc":"2.0","id":id,"method":"tools/call","params":{"name":"now"}}),
            at,
        );
        let cid = to_child(&a)[0].1["id"].clone();
        let line = input_required_line(
            &cid,
            json!({"s": {"method":"sampling/createMessage","params":{"messages":[]}}}),
            "s",
        );
        let a = r.from_child_incoming(1, jsonrpc::parse_child_line(line.as_bytes()).unwrap(), at);
        to_client(&a)[0]["id"].clone()
    };
    let ask = call(&mut r, 1, now);
    assert!(r.ids.is_empty(), "the call left the request table");
    let due = r.next_deadline().expect("the run has a deadline");
    assert_eq!(due, now + Duration::from_secs(10), "the child's timeout");
    assert!(r.tick(due - Duration::from_millis(1)).is_empty());
    let a = r.tick(due);
    let out = to_client(&a);
    assert_eq!(out.len(), 2, "{out:?}");
    assert_eq!(out[0]["method"], "notifications/cancelled");
    assert_eq!(out[0]["params"]["requestId"], ask);
    assert_eq!(out[1]["id"], 1);
    assert_eq!(out[1]["error"]["code"], jsonrpc::REQUEST_TIMEOUT);
    assert!(to_child(&a).is_empty());
    assert!(r.drives.is_empty() && r.next_deadline().is_none());
    // A late answer goes nowhere.
    let a = r.from_client(
        json!({"jsonrpc":"2.0","id":ask,"result":{"model":"m"}}),
        due,
    );
    assert!(to_child(&a).is_empty() && to_client(&a).is_empty());

    // The child exits while the client is asked: the call fails at once.
    call(&mut r, 2, due);
    let a = r.child_closed(1, due);
    let out = to_client(&a);
    let e = out.iter().find(|v| v["id"] == 2).expect("the call fails");
    assert_eq!(e["error"]["code"], jsonrpc::SERVER_UNAVAILABLE);
    assert!(r.drives.is_empty() && r.next_deadline().is_none());
}

#[test]
fn a_driven_call_is_not_sent_again_to_a_child_that_is_not_serving() {
    let now = Instant::now();
    let mut r = legacy_with_modern_child(now);
    let a = r.from_client(
        json!({"jsonrpc":"2.0","id":5,"method":"tools/call","params":{"name":"now"}}),
        now,
    );
    let cid = to_child(&a)[0].1["id"].clone();
    let line = input_required_line(
        &cid,
        json!({"s": {"method":"sampling/createMessage","params":{"messages":[]}}}),
        "s",
    );
    let a = r.from_child_incoming(1, jsonrpc::parse_child_line(line.as_bytes()).unwrap(), now);
    let ask = to_client(&a)[0]["id"].clone();
    r.children[1].status = Status::Initializing; // as if it were being replaced
    let a = r.from_client(
        json!({"jsonrpc":"2.0","id":ask,"result":{"model":"m"}}),
        now,
    );
    assert!(to_child(&a).is_empty(), "{a:?}");
    let e = &to_client(&a)[0];
    assert_eq!(
        (e["id"].clone(), e["error"]["code"].clone()),
        (json!(5), json!(jsonrpc::SERVER_UNAVAILABLE))
    );
    assert!(r.drives.is_empty() && r.ids.is_empty());
}

/// A modern client with `t1` of the modern child 1 listed, asked for
/// input: the router and the `requestState` handle it issued.
fn modern_input_required(audit: bool, now: Instant) -> (Router, Value) {
    let mut r = with_modern_child();
    r.opts.audit = audit;
    discover_with_modern(&mut r, now);
    list_tools(&mut r, now, |i| json!([{"name": format!("t{i}")}]));
    let a = r.from_client(
        modern(json!("c"), "tools/call", json!({"name":"t1"}), json!({})),
        now,
    );
    let (_, m) = to_child(&a)[0].clone();
    let line = input_required_line(
        &m["id"],
        json!({"k": {"method":"roots/list","params":{}}}),
        "s1",
    );
    let a = r.from_child_incoming(1, jsonrpc::parse_child_line(line.as_bytes()).unwrap(), now);
    let v = match a.iter().find(|x| matches!(x, Action::ToClientRaw(_))) {
        Some(Action::ToClientRaw(b)) => serde_json::from_slice::<Value>(b).unwrap(),
        _ => to_client(&a)[0].clone(),
    };
    let handle = v["result"]["requestState"].clone();
    assert!(handle.is_string() && handle != "s1");
    (r, handle)
}

fn modern_retry(id: &str, state: &Value) -> Value {
    modern(
        json!(id),
        "tools/call",
        json!({"name":"t1","inputResponses":{"k":{"roots":[]}},"requestState":state}),
        json!({}),
    )
}

#[test]
fn a_request_state_handle_of_one_connection_is_refused_by_another() {
    let now = Instant::now();
    let (mut one, handle) = modern_input_required(false, now);
    let (mut other, own) = modern_input_required(false, now);
    assert_ne!(handle, own);
    let a = other.from_client(modern_retry("x", &handle), now);
    assert!(to_child(&a).is_empty(), "nothing reaches the child");
    let e = &to_client(&a)[0]["error"];
    assert_eq!(e["code"], INVALID_PARAMS);
    assert!(
        e["message"]
            .as_str()
            .unwrap()
            .contains("unknown, used or expired"),
        "{e}"
    );
    // Each connection's own handle still works there.
    let a = one.from_client(modern_retry("y", &handle), now);
    assert_eq!(to_child(&a)[0].1["params"]["requestState"], "s1");
    let a = other.from_client(modern_retry("z", &own), now);
    assert_eq!(to_child(&a)[0].1["params"]["requestState"], "s1");
}

#[test]
fn a_refused_request_state_is_recorded_and_leaves_no_pending_audit() {
    let now = Instant::now();
    let (mut r, handle) = modern_input_required(true, now);
    let mut other = modern_retry("x", &handle);
    other["params"]["name"] = json!("t0"); // another request's retry
    let a = r.from_client(other, now);
    assert!(to_child(&a).is_empty());
    assert_eq!(to_client(&a)[0]["error"]["code"], INVALID_PARAMS);
    let rec = audits(&a);
    assert_eq!(rec.len(), 1, "{a:?}");
    assert_eq!(rec[0].outcome, Outcome::Error(INVALID_PARAMS));
    assert_eq!(rec[0].server, None, "refused by the gateway");
    assert!(r.opening.is_none(), "no stale record for a later request");
}

#[test]
fn a_repeated_meta_text_is_read_from_the_cache_and_means_the_same() {
    let now = Instant::now();
    let mut r = with_modern_child(); // s0 legacy, s1 modern
    let line = |id: &str, name: &str, extra: Value| {
        serde_json::to_vec(&modern(
            json!(id),
            "tools/call",
            json!({"name": name}),
            extra,
        ))
        .unwrap()
    };
    let d = serde_json::to_vec(&modern(json!("d"), "server/discover", json!({}), json!({})));
    let a = r.from_client_line(&d.unwrap(), now);
    let (_, init) = &to_child(&a)[0];
    let a = r.from_child(
        0,
        json!({"jsonrpc":"2.0","id":init["id"],"result":{"capabilities":{"tools":{}}}}),
        now,
    );
    assert_eq!(to_client(&a)[0]["id"], "d");
    let kept = r
        .era
        .meta_cache
        .as_ref()
        .expect("a valid _meta of the four keys is kept");
    assert_eq!(Value::Object(kept.map.clone()), meta(json!({})));
    assert!(kept.inputs.sampling && !kept.inputs.elicitation);
    // A cached text on a call that waits for the name maps: deferred with
    // its `_meta` put back, checked again and routed once the maps come.
    let a = r.from_client_line(&line("c0", "t0", json!({})), now);
    let lists = to_child(&a);
    assert_eq!(lists.len(), 2, "the name maps are fetched first");
    let mut last = Vec::new();
    for (i, m) in lists {
        let tools = json!([{"name": format!("t{i}")}]);
        last = r.from_child(
            i,
            json!({"jsonrpc":"2.0","id":m["id"],"result":{"tools":tools}}),
            now,
        );
    }
    let (i, m) = &to_child(&last)[0];
    assert_eq!((*i, &m["params"]["name"]), (0, &json!("t0")));
    assert!(m["params"].get("_meta").is_none(), "no 2026 keys for s0");
    // Cached, to each child: the legacy one gets none of it, the modern
    // one the client's whole `_meta`.
    let a = r.from_client_line(&line("c1", "t0", json!({})), now);
    let (i, m) = &to_child(&a)[0];
    assert_eq!(*i, 0);
    assert!(m["params"].get("_meta").is_none());
    let a = r.from_client_line(&line("c2", "t1", json!({})), now);
    let (i, m) = &to_child(&a)[0];
    assert_eq!(*i, 1);
    assert_eq!(m["params"]["_meta"], meta(json!({})));
    // A `_meta` with a per-request key is read as usual and not kept.
    let a = r.from_client_line(&line("c3", "t0", json!({"progressToken": "p"})), now);
    let (_, m) = &to_child(&a)[0];
    assert_eq!(m["params"]["_meta"], json!({"progressToken": "p"}));
    let kept = r.era.meta_cache.as_ref().unwrap();
    assert_eq!(Value::Object(kept.map.clone()), meta(json!({})));
    // Any other text is checked again: another version is refused, then
    // a log level is honoured and becomes the kept text.
    let mut old = modern(json!("c4"), "tools/call", json!({"name": "t0"}), json!({}));
    old["params"]["_meta"][era::PROTOCOL_VERSION] = json!("2025-11-25");
    let a = r.from_client_line(&serde_json::to_vec(&old).unwrap(), now);
    assert!(to_child(&a).is_empty());
    assert_eq!(to_client(&a)[0]["error"]["code"], UNSUPPORTED_VERSION);
    let level = json!({"io.modelcontextprotocol/logLevel": "error"});
    for id in ["c5", "c6"] {
        let a = r.from_client_line(&line(id, "t1", level.clone()), now);
        let (_, m) = &to_child(&a)[0];
        assert_eq!(m["params"]["_meta"], meta(level.clone()), "{id}");
        assert_eq!(r.era.meta_cache.as_ref().unwrap().level, Some(4));
    }
}

#[test]
fn a_refused_retry_of_a_legacy_childs_input_is_recorded() {
    let now = Instant::now();
    let mut r = router(1);
    r.opts.audit = true;
    open_call(&mut r, now);
    let a = r.from_child(
        0,
        json!({"jsonrpc":"2.0","id":"s1","method":"roots/list"}),
        now,
    );
    let state = to_client(&a)[0]["result"]["requestState"].clone();
    let a = r.from_client(retry("c2", &state, json!({"nobody-asked": {}})), now);
    assert!(to_child(&a).is_empty());
    assert_eq!(to_client(&a)[0]["error"]["code"], INVALID_PARAMS);
    let rec = audits(&a);
    assert_eq!(rec.len(), 1, "{a:?}");
    assert_eq!(rec[0].outcome, Outcome::Error(INVALID_PARAMS));
    assert!(r.opening.is_none());
}
