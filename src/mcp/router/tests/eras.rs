//! The 2026-07-28 rules: the era lock, `_meta`, discover, modern children
//! (ERAS §2, §4); input across eras, the `_meta` cache, listen streams and
//! tasks in the submodules.

use super::*;

mod input;
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

/// Answers the resource map fetches among actions `a` (child `child`
/// serves `uris`; a modern child stamps its results); the actions after
/// the last answer, or `a`.
fn answer_maps(
    r: &mut Router,
    a: Vec<Action>,
    child: usize,
    uris: &[&str],
    now: Instant,
) -> Vec<Action> {
    let items: Vec<Value> = uris.iter().map(|u| json!({"uri":u,"name":u})).collect();
    let mut last = a.clone();
    for (i, m) in to_child(&a) {
        let mut result = match m["method"].as_str() {
            Some("resources/list") if i == child => json!({"resources":items}),
            Some("resources/list") => json!({"resources":[]}),
            Some("resources/templates/list") => json!({"resourceTemplates":[]}),
            _ => continue,
        };
        if r.children[i].modern {
            result["resultType"] = json!("complete");
        }
        last = r.from_child(
            i,
            json!({"jsonrpc":"2.0","id":m["id"],"result":result}),
            now,
        );
    }
    last
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
    answer_maps(&mut r, a, 0, &["a://x"], now);
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
