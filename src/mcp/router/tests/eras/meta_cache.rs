//! The `_meta` cache (`era::MetaCache`): a client line whose `_meta` is
//! read from the cache must be handled as the same line parsed whole.

use super::*;

/// Two routers in step: `lines` reads client lines (so it may use the
/// cache), `whole` gets the same messages parsed whole (never cached).
struct Twin {
    lines: Router,
    whole: Router,
    now: Instant,
}

impl Twin {
    fn new(make: impl Fn() -> Router) -> Twin {
        Twin {
            lines: make(),
            whole: make(),
            now: Instant::now(),
        }
    }

    fn client(&mut self, msg: &Value) -> Vec<Action> {
        let line = serde_json::to_vec(msg).unwrap();
        let a = self.lines.from_client_line(&line, self.now);
        let b = self.whole.from_client(msg.clone(), self.now);
        assert_eq!(a, b, "{msg}");
        a
    }

    fn child(&mut self, i: usize, msg: Value) -> Vec<Action> {
        let a = self.lines.from_child(i, msg.clone(), self.now);
        let b = self.whole.from_child(i, msg.clone(), self.now);
        assert_eq!(a, b, "{msg}");
        a
    }

    /// Locked modern with tools `t0` (legacy s0) and `t1` (modern s1)
    /// mapped; the cache holds `meta({})`.
    fn ready(audit: bool) -> Twin {
        let mut t = Twin::new(|| {
            let mut r = with_modern_child();
            r.opts.audit = audit;
            r
        });
        let a = t.client(&modern(json!("d"), "server/discover", json!({}), json!({})));
        let (_, init) = &to_child(&a)[0];
        t.child(
            0,
            json!({"jsonrpc":"2.0","id":init["id"],"result":{"capabilities":{"tools":{}}}}),
        );
        assert!(t.lines.era.meta_cache.is_some());
        let a = t.client(&modern(json!("L"), "tools/list", json!({}), json!({})));
        for (i, m) in to_child(&a) {
            let tools = json!([{"name": format!("t{i}")}]);
            t.child(
                i,
                json!({"jsonrpc":"2.0","id":m["id"],"result":{"tools":tools}}),
            );
        }
        t
    }
}

#[test]
fn a_cached_meta_call_is_audited_as_the_same_call_parsed_whole() {
    let mut t = Twin::ready(true);
    for (id, name) in [("c1", "t1"), ("c0", "t0")] {
        let a = t.client(&modern(
            json!(id),
            "tools/call",
            json!({"name": name}),
            json!({}),
        ));
        let (i, m) = &to_child(&a)[0];
        let a = t.child(
            *i,
            json!({"jsonrpc":"2.0","id":m["id"],"result":{"content":[]}}),
        );
        assert_eq!(audits(&a).len(), 1);
    }
}

#[test]
fn a_cached_meta_notification_reaches_the_child_as_the_same_one_parsed_whole() {
    let mut t = Twin::ready(false);
    let a = t.client(&modern(
        json!("c1"),
        "tools/call",
        json!({"name": "t1"}),
        json!({}),
    ));
    assert_eq!(to_child(&a)[0].0, 1);
    // The TS v2 client stamps its envelope on notifications too (ERAS §1).
    let mut cancel = modern(
        json!(null),
        "notifications/cancelled",
        json!({"requestId": "c1"}),
        json!({}),
    );
    cancel.as_object_mut().unwrap().remove("id");
    let a = t.client(&cancel);
    assert_eq!(to_child(&a).len(), 1, "{a:?}");
}

#[test]
fn a_line_the_whole_parse_refuses_is_a_parse_error_whatever_its_meta() {
    let now = Instant::now();
    let deep = format!("{}{}", "[".repeat(200), "]".repeat(200));
    for m in [deep.as_str(), "{\"x\":1e400}", "{\"x\":\"\\ud800\"}"] {
        let line = format!(
            r#"{{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{{"name":"t","_meta":{m}}}}}"#
        );
        assert!(serde_json::from_slice::<Value>(line.as_bytes()).is_err());
        // Unlocked, and locked modern with a kept `_meta`.
        let mut unlocked = with_modern_child();
        let mut locked = Twin::ready(false).lines;
        for r in [&mut unlocked, &mut locked] {
            let a = r.from_client_line(line.as_bytes(), now);
            let e = &to_client(&a)[0];
            assert_eq!(e["error"]["code"], jsonrpc::PARSE_ERROR, "{m}: {e}");
        }
    }
}

#[test]
fn cached_meta_tasks_and_task_streams_go_as_the_same_requests_parsed_whole() {
    let mut t = Twin::ready(true);
    let ext = json!({"io.modelcontextprotocol/clientCapabilities":
        {"extensions": {"io.modelcontextprotocol/tasks": {}}}});
    let req =
        |id: &str, method: &str, params: Value| modern(json!(id), method, params, ext.clone());
    // Twice: the first text is checked and kept, the second is cached.
    for round in ["a", "b"] {
        let a = t.client(&req(
            &format!("c{round}"),
            "tools/call",
            json!({"name": "t1", "task": {}}),
        ));
        let (i, m) = &to_child(&a)[0];
        assert_eq!(m["params"]["_meta"], meta(ext.clone()));
        let a = t.child(
            *i,
            json!({"jsonrpc":"2.0","id":m["id"],"result":{"resultType":"task","taskId":round,"status":"working"}}),
        );
        assert_eq!(to_client(&a)[0]["result"]["taskId"], format!("1~{round}"));
        let a = t.client(&req(
            &format!("g{round}"),
            "tasks/get",
            json!({"taskId": format!("1~{round}")}),
        ));
        let (_, m) = &to_child(&a)[0];
        assert_eq!(m["params"]["_meta"], meta(ext.clone()));
        let a = t.client(&req(
            &format!("l{round}"),
            "subscriptions/listen",
            json!({"notifications":{"taskIds":[format!("1~{round}")]}}),
        ));
        assert_eq!(to_child(&a).len(), 1, "{a:?}");
    }
    assert!(t.lines.era.meta_cache.as_ref().unwrap().tasks);
    let a = t.child(
        1,
        json!({"jsonrpc":"2.0","method":"notifications/tasks","params":{"taskId":"b","status":"completed"}}),
    );
    assert_eq!(to_client(&a).len(), 1);
    // Without the extension, cached or not: refused alike.
    for id in ["n1", "n2"] {
        let a = t.client(&modern(
            json!(id),
            "subscriptions/listen",
            json!({"notifications":{"taskIds":["1~a"]}}),
            json!({}),
        ));
        assert_eq!(to_client(&a)[0]["error"]["code"], -32021);
    }
}

#[test]
fn a_modern_clients_cancel_reaches_a_legacy_child_without_the_2026_keys() {
    let mut t = Twin::ready(false);
    // Only the client's own keys pass, as on its requests (`strip_meta`).
    for (id, extra, left) in [
        ("c0", json!({}), None),
        ("c1", json!({"k": 1}), Some(json!({"k": 1}))),
    ] {
        let a = t.client(&modern(
            json!(id),
            "tools/call",
            json!({"name": "t0"}),
            json!({}),
        ));
        assert_eq!(to_child(&a)[0].0, 0);
        let mut cancel = modern(
            json!(null),
            "notifications/cancelled",
            json!({"requestId": id}),
            extra,
        );
        cancel.as_object_mut().unwrap().remove("id");
        let a = t.client(&cancel);
        let (i, m) = &to_child(&a)[0];
        assert_eq!(*i, 0);
        assert_eq!(m["params"].get("_meta"), left.as_ref(), "{m}");
    }
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
