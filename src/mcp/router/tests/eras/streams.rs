//! `subscriptions/listen` streams and subscriptions across eras: list
//! changes, resources of legacy and modern children, the limits, and what
//! a child restart keeps (ERAS §4, §6).

use super::*;

#[test]
fn list_changes_reach_a_modern_client_on_its_listen_streams_until_cancelled() {
    let now = Instant::now();
    let mut r = router(1);
    discover(
        &mut r,
        json!({"tools":{"listChanged":true},"prompts":{}}),
        now,
    );
    let changed = json!({"jsonrpc":"2.0","method":"notifications/tools/list_changed"});
    assert!(
        to_client(&r.from_child(0, changed.clone(), now)).is_empty(),
        "no stream open"
    );
    let a = r.from_client(
        modern(
            json!("listen-1"),
            "subscriptions/listen",
            json!({"notifications":{"toolsListChanged":true,"resourceSubscriptions":["a://x"]}}),
            json!({}),
        ),
        now,
    );
    let ack = &to_client(&a)[0];
    assert_eq!(ack["method"], "notifications/subscriptions/acknowledged");
    assert_eq!(
        ack["params"]["_meta"]["io.modelcontextprotocol/subscriptionId"],
        "listen-1"
    );
    assert_eq!(
        ack["params"]["notifications"],
        json!({"toolsListChanged": true}),
        "only what is honoured"
    );
    let n = to_client(&r.from_child(0, changed.clone(), now));
    assert_eq!(n[0]["method"], "notifications/tools/list_changed");
    assert_eq!(
        n[0]["params"]["_meta"]["io.modelcontextprotocol/subscriptionId"],
        "listen-1"
    );
    let prompts = json!({"jsonrpc":"2.0","method":"notifications/prompts/list_changed"});
    assert!(
        to_client(&r.from_child(0, prompts, now)).is_empty(),
        "not asked for"
    );
    let a = r.from_client(json!({"jsonrpc":"2.0","method":"notifications/cancelled","params":{"requestId":"listen-1"}}), now);
    assert!(a.is_empty());
    assert!(to_client(&r.from_child(0, changed, now)).is_empty());
}

/// The client's answer in `a` is -32602 saying `why`.
fn refused_with(a: &[Action], why: &str) {
    let e = &to_client(a)[0];
    assert_eq!(e["error"]["code"], INVALID_PARAMS, "{e}");
    let message = e["error"]["message"].as_str().unwrap_or("");
    assert!(message.contains(why), "{e}");
}

/// A 2026-07-28 client's stream `id` for the resources `uris`.
fn resource_listen(r: &mut Router, id: &str, uris: Value, now: Instant) -> Vec<Action> {
    let filter = json!({"notifications": {"resourceSubscriptions": uris}});
    r.from_client(
        modern(json!(id), "subscriptions/listen", filter, json!({})),
        now,
    )
}

#[test]
fn listen_streams_subscribe_a_legacy_childs_resources_while_any_stream_names_them() {
    let now = Instant::now();
    let mut r = router(1);
    discover(&mut r, json!({"resources":{"subscribe":true}}), now);
    let listen =
        |r: &mut Router, id: &str| resource_listen(r, id, json!(["a://x", "zz://none"]), now);
    // The resource maps are fetched first.
    let a = listen(&mut r, "l1");
    let last = answer_maps(&mut r, a, 0, &["a://x"], now);
    let (_, sub) = to_child(&last)
        .into_iter()
        .find(|(_, m)| m["method"] == "resources/subscribe")
        .unwrap();
    assert_eq!(sub["params"]["uri"], "a://x");
    let ack = &to_client(&last)[0];
    assert_eq!(
        ack["params"]["notifications"],
        json!({"resourceSubscriptions":["a://x"]}),
        "only what a child serves"
    );
    let a = listen(&mut r, "l2");
    assert!(to_child(&a).is_empty(), "subscribed once");
    let updated = |uri: &str| json!({"jsonrpc":"2.0","method":"notifications/resources/updated","params":{"uri":uri}});
    let n = to_client(&r.from_child(0, updated("a://x/part"), now));
    assert_eq!(n.len(), 2, "both streams, a sub-resource too");
    assert_eq!(
        n[0]["params"]["_meta"]["io.modelcontextprotocol/subscriptionId"],
        "l1"
    );
    assert_eq!(n[0]["params"]["uri"], "a://x/part");
    assert!(to_client(&r.from_child(0, updated("b://y"), now)).is_empty());
    // A restarted child is subscribed again, once per resource.
    let a = r.child_restarted(0, now);
    let (_, init) = to_child(&a)[0].clone();
    let a = r.from_child(0, json!({"jsonrpc":"2.0","id":init["id"],"result":{"capabilities":{"resources":{"subscribe":true}}}}), now);
    let subs: Vec<Value> = to_child(&a)
        .into_iter()
        .filter(|(_, m)| m["method"] == "resources/subscribe")
        .map(|(_, m)| m["params"]["uri"].clone())
        .collect();
    assert_eq!(subs, [json!("a://x")]);
    let cancel = |id: &str| json!({"jsonrpc":"2.0","method":"notifications/cancelled","params":{"requestId":id}});
    assert!(
        r.from_client(cancel("l1"), now).is_empty(),
        "l2 still names it"
    );
    let a = r.from_client(cancel("l2"), now);
    assert_eq!(to_child(&a)[0].1["method"], "resources/unsubscribe");
    assert!(to_client(&r.from_child(0, updated("a://x"), now)).is_empty());
}

#[test]
fn a_modern_childs_list_changes_and_subscriptions_come_through_listens_of_the_gateway() {
    let now = Instant::now();
    let mut r = router(1);
    r.child_modern(
        0,
        &json!({"supportedVersions":[MODERN],"capabilities":{"tools":{"listChanged":true},"resources":{"subscribe":true}}}),
    );
    let a = r.from_client(
        json!({"jsonrpc":"2.0","id":0,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"lc","version":"1"}}}),
        now,
    );
    let (_, l) = &to_child(&a)[0];
    assert_eq!(l["method"], "subscriptions/listen");
    assert_eq!(
        l["params"]["notifications"],
        json!({"toolsListChanged": true})
    );
    assert_eq!(
        l["params"]["_meta"]["io.modelcontextprotocol/clientInfo"]["name"],
        "lc"
    );
    assert!(r.next_deadline().is_none(), "no deadline on a listen");
    let tag = json!({"io.modelcontextprotocol/subscriptionId": l["id"]});
    let ack = json!({"jsonrpc":"2.0","method":"notifications/subscriptions/acknowledged","params":{"_meta":tag,"notifications":{"toolsListChanged":true}}});
    assert!(r.from_child(0, ack, now).is_empty());
    let changed =
        json!({"jsonrpc":"2.0","method":"notifications/tools/list_changed","params":{"_meta":tag}});
    let n = &to_client(&r.from_child(0, changed, now))[0];
    assert_eq!(n["method"], "notifications/tools/list_changed");
    assert!(
        n["params"]["_meta"]
            .get("io.modelcontextprotocol/subscriptionId")
            .is_none()
    );
    // resources/subscribe: a child listen naming the URI, answered {}.
    let a = r.from_client(
        json!({"jsonrpc":"2.0","id":1,"method":"resources/list"}),
        now,
    );
    answer_maps(&mut r, a, 0, &["m://r"], now);
    let mut a = r.from_client(
        json!({"jsonrpc":"2.0","id":2,"method":"resources/subscribe","params":{"uri":"m://r"}}),
        now,
    );
    if let Some((_, t)) = to_child(&a)
        .into_iter()
        .find(|(_, m)| m["method"] == "resources/templates/list")
    {
        let done = json!({"jsonrpc":"2.0","id":t["id"],"result":{"resourceTemplates":[]}});
        a = r.from_child(0, done, now);
    }
    let (_, sub) = &to_child(&a)[0];
    assert_eq!(sub["method"], "subscriptions/listen");
    assert_eq!(
        sub["params"]["notifications"],
        json!({"resourceSubscriptions":["m://r"]})
    );
    assert_eq!(to_client(&a)[0]["result"], json!({}));
    let a = r.from_client(
        json!({"jsonrpc":"2.0","id":3,"method":"resources/unsubscribe","params":{"uri":"m://r"}}),
        now,
    );
    let (_, c) = &to_child(&a)[0];
    assert_eq!(
        (c["method"].clone(), c["params"]["requestId"].clone()),
        (json!("notifications/cancelled"), sub["id"].clone())
    );
    assert!(r.ids.is_empty());
}

#[test]
fn listen_streams_and_the_uris_they_name_are_limited_per_connection() {
    let now = Instant::now();
    let mut r = router(1);
    discover(
        &mut r,
        json!({"tools":{"listChanged":true},"resources":{"subscribe":true}}),
        now,
    );
    let listen = |r: &mut Router, id: String, filter: Value| {
        r.from_client(
            modern(
                json!(id),
                "subscriptions/listen",
                json!({"notifications":filter}),
                json!({}),
            ),
            now,
        )
    };
    for i in 0..listen::MAX_STREAMS {
        let a = listen(&mut r, format!("l{i}"), json!({"toolsListChanged":true}));
        assert_eq!(
            to_client(&a)[0]["method"],
            "notifications/subscriptions/acknowledged"
        );
    }
    let a = listen(&mut r, "over".into(), json!({"toolsListChanged":true}));
    let e = &to_client(&a)[0];
    assert_eq!(e["id"], "over");
    assert_eq!(e["error"]["code"], INVALID_PARAMS);
    assert!(
        e["error"]["message"]
            .as_str()
            .unwrap()
            .contains("at most 32 streams")
    );
    let changed = json!({"jsonrpc":"2.0","method":"notifications/tools/list_changed"});
    assert_eq!(
        to_client(&r.from_child(0, changed, now)).len(),
        listen::MAX_STREAMS
    );
    // One closed, one more may open.
    let cancel =
        json!({"jsonrpc":"2.0","method":"notifications/cancelled","params":{"requestId":"l0"}});
    r.from_client(cancel, now);
    let a = listen(&mut r, "again".into(), json!({}));
    assert_eq!(
        to_client(&a)[0]["method"],
        "notifications/subscriptions/acknowledged"
    );
    r.from_client(
        json!({"jsonrpc":"2.0","method":"notifications/cancelled","params":{"requestId":"again"}}),
        now,
    );

    // Too many URIs on one stream: refused before anything is fetched.
    let many: Vec<String> = (0..=listen::MAX_STREAM_URIS)
        .map(|i| format!("a://{i}"))
        .collect();
    let a = listen(&mut r, "big".into(), json!({"resourceSubscriptions":many}));
    assert!(to_child(&a).is_empty());
    refused_with(&a, "at most 256");
    // The same URI named many times counts once and subscribes once.
    let same = vec!["a://x"; listen::MAX_STREAM_URIS];
    let a = listen(&mut r, "same".into(), json!({"resourceSubscriptions":same}));
    let a = answer_maps(&mut r, a, 0, &["a://x"], now);
    let subs = to_child(&a);
    assert_eq!(subs.len(), 1, "{subs:?}");
    assert_eq!(
        to_client(&a)[0]["params"]["notifications"]["resourceSubscriptions"],
        json!(["a://x"])
    );
}

#[test]
fn a_legacy_clients_subscriptions_to_a_modern_child_are_limited() {
    let now = Instant::now();
    let mut r = legacy_with_modern_child(now);
    r.children[1]
        .caps
        .insert("resources".into(), json!({"subscribe": true}));
    let uris: Vec<String> = (0..=listen::MAX_CHILD_SUBS)
        .map(|i| format!("m://{i}"))
        .collect();
    let all: Vec<&str> = uris.iter().map(String::as_str).collect();
    let subscribe = |r: &mut Router, uri: &str| {
        let a = r.from_client(
            json!({"jsonrpc":"2.0","id":uri,"method":"resources/subscribe","params":{"uri":uri}}),
            now,
        );
        answer_maps(r, a, 1, &all, now) // fetched on the first subscribe
    };
    for u in &uris[..listen::MAX_CHILD_SUBS] {
        let a = subscribe(&mut r, u);
        assert_eq!(to_client(&a)[0]["result"], json!({}), "{u}");
        assert_eq!(
            to_child(&a).last().unwrap().1["method"],
            "subscriptions/listen"
        );
    }
    let a = subscribe(&mut r, &uris[listen::MAX_CHILD_SUBS]);
    assert!(to_child(&a).is_empty(), "no child listen");
    refused_with(&a, "at most 256");
    // Subscribing again to one already open is still fine.
    let a = subscribe(&mut r, &uris[0]);
    assert_eq!(to_client(&a)[0]["result"], json!({}));
    assert!(to_child(&a).is_empty());
}

#[test]
fn a_resource_update_reaches_streams_that_named_it_or_a_resource_above_it() {
    use listen::names;
    assert!(names("file:///a", "file:///a"));
    assert!(names("file:///a", "file:///a/b"));
    assert!(names("file:///a", "file:///a?v=2"));
    assert!(names("file:///a", "file:///a#top"));
    assert!(names("file:///a/", "file:///a/b"));
    assert!(!names("file:///a", "file:///ab"));
    assert!(!names("file:///a/b", "file:///a"));
    assert!(!names("a://x", "b://x"));
}

#[test]
fn a_modern_childs_resources_on_a_modern_clients_streams_use_one_child_listen_each() {
    let now = Instant::now();
    let mut r = router(1);
    r.child_modern(
        0,
        &json!({"supportedVersions":[MODERN],"capabilities":{"resources":{"subscribe":true}}}),
    );
    let listen = |r: &mut Router, id: &str| resource_listen(r, id, json!(["m://r"]), now);
    // The resource maps are fetched first, then one child listen names it.
    let a = listen(&mut r, "l1");
    let last = answer_maps(&mut r, a, 0, &["m://r"], now);
    let child_listens: Vec<Value> = to_child(&last)
        .into_iter()
        .filter(|(_, m)| m["method"] == "subscriptions/listen")
        .map(|(_, m)| m)
        .collect();
    assert_eq!(child_listens.len(), 1, "{last:?}");
    let cl = &child_listens[0];
    assert_eq!(
        cl["params"]["notifications"],
        json!({"resourceSubscriptions":["m://r"]})
    );
    let ack = to_client(&last)
        .into_iter()
        .find(|m| m["method"] == "notifications/subscriptions/acknowledged")
        .unwrap();
    assert_eq!(
        ack["params"]["notifications"],
        json!({"resourceSubscriptions":["m://r"]})
    );
    // A second stream shares the child listen.
    let a = listen(&mut r, "l2");
    assert!(to_child(&a).is_empty(), "one child listen per resource");
    // The child's update, tagged with its listen, reaches both streams
    // under their own ids.
    let tag = json!({"io.modelcontextprotocol/subscriptionId": cl["id"]});
    let updated = json!({"jsonrpc":"2.0","method":"notifications/resources/updated","params":{"uri":"m://r","_meta":tag}});
    let n = to_client(&r.from_child(0, updated.clone(), now));
    let ids: Vec<&Value> = n
        .iter()
        .map(|m| &m["params"]["_meta"]["io.modelcontextprotocol/subscriptionId"])
        .collect();
    assert_eq!(ids, [&json!("l1"), &json!("l2")]);
    // The child restarted: its resource listen is opened again, and its
    // updates under the new listen reach both streams.
    r.child_closed(0, now);
    let a = r.child_restarted(0, now);
    let again: Vec<Value> = to_child(&a)
        .into_iter()
        .filter(|(_, m)| m["method"] == "subscriptions/listen")
        .map(|(_, m)| m)
        .collect();
    assert_eq!(again.len(), 1, "{a:?}");
    assert_eq!(
        again[0]["params"]["notifications"],
        json!({"resourceSubscriptions":["m://r"]})
    );
    assert_ne!(again[0]["id"], cl["id"]);
    let cl = &again[0];
    let tag = json!({"io.modelcontextprotocol/subscriptionId": cl["id"]});
    let updated = json!({"jsonrpc":"2.0","method":"notifications/resources/updated","params":{"uri":"m://r","_meta":tag}});
    assert_eq!(to_client(&r.from_child(0, updated.clone(), now)).len(), 2);
    // The child listen is cancelled when the last stream naming it ends.
    let cancel = |id: &str| json!({"jsonrpc":"2.0","method":"notifications/cancelled","params":{"requestId":id}});
    assert!(
        r.from_client(cancel("l1"), now).is_empty(),
        "l2 still names it"
    );
    let a = r.from_client(cancel("l2"), now);
    let (_, c) = &to_child(&a)[0];
    assert_eq!(c["method"], "notifications/cancelled");
    assert_eq!(c["params"]["requestId"], cl["id"]);
    assert!(to_client(&r.from_child(0, updated, now)).is_empty());
}

#[test]
fn a_restarted_child_gets_the_legacy_clients_subscriptions_again() {
    let now = Instant::now();
    // A legacy child: its resources/subscribe is sent again after it is
    // initialized again; an unsubscribed URI is not.
    let mut r = router(1);
    init(&mut r, json!({"resources":{"subscribe":true}}), now);
    let sub = |r: &mut Router, id: &str, method: &str, uri: &str| {
        let m = json!({"jsonrpc":"2.0","id":id,"method":method,"params":{"uri":uri}});
        let a = r.from_client(m, now);
        answer_maps(r, a, 0, &["a://1", "a://2"], now)
    };
    for (id, method, uri) in [
        ("s1", "resources/subscribe", "a://1"),
        ("s2", "resources/subscribe", "a://2"),
        ("u2", "resources/unsubscribe", "a://2"),
    ] {
        let a = sub(&mut r, id, method, uri);
        let (_, m) = to_child(&a).pop().unwrap();
        assert_eq!(
            (m["method"].as_str(), m["params"]["uri"].as_str()),
            (Some(method), Some(uri))
        );
        r.from_child(0, json!({"jsonrpc":"2.0","id":m["id"],"result":{}}), now);
    }
    r.child_closed(0, now);
    let a = r.child_restarted(0, now);
    let (_, init) = &to_child(&a)[0];
    let a = r.from_child(
        0,
        json!({"jsonrpc":"2.0","id":init["id"],"result":{"protocolVersion":"2025-06-18","capabilities":{"resources":{"subscribe":true}}}}),
        now,
    );
    let subs: Vec<Value> = to_child(&a)
        .into_iter()
        .filter(|(_, m)| m["method"] == "resources/subscribe")
        .map(|(_, m)| m["params"]["uri"].clone())
        .collect();
    assert_eq!(subs, [json!("a://1")]);
    // A modern child: the legacy client's subscription is its child
    // listen, opened again at once.
    let mut r = legacy_with_modern_child(now);
    r.children[1]
        .caps
        .insert("resources".into(), json!({"subscribe": true}));
    let a = r.from_client(
        json!({"jsonrpc":"2.0","id":"s","method":"resources/subscribe","params":{"uri":"m://1"}}),
        now,
    );
    let a = answer_maps(&mut r, a, 1, &["m://1"], now);
    let (_, first) = to_child(&a).pop().unwrap();
    assert_eq!(first["method"], "subscriptions/listen");
    r.child_closed(1, now);
    let a = r.child_restarted(1, now);
    let again: Vec<Value> = to_child(&a)
        .into_iter()
        .filter(|(_, m)| m["method"] == "subscriptions/listen")
        .map(|(_, m)| m)
        .collect();
    assert_eq!(again.len(), 1);
    assert_eq!(
        again[0]["params"]["notifications"],
        first["params"]["notifications"]
    );
    assert_ne!(again[0]["id"], first["id"]);
}

#[test]
fn a_subscribe_refused_while_its_child_is_down_is_not_sent_after_the_restart() {
    let now = Instant::now();
    let mut r = router(1);
    init(&mut r, json!({"resources":{"subscribe":true}}), now);
    // The maps exist, then the child exits: the subscribe is refused.
    let a = r.from_client(
        json!({"jsonrpc":"2.0","id":"r","method":"resources/read","params":{"uri":"a://1"}}),
        now,
    );
    answer_maps(&mut r, a, 0, &["a://1"], now);
    r.child_closed(0, now);
    let a = r.from_client(
        json!({"jsonrpc":"2.0","id":"s","method":"resources/subscribe","params":{"uri":"a://1"}}),
        now,
    );
    assert!(to_child(&a).is_empty());
    assert_eq!(
        to_client(&a)[0]["error"]["code"],
        jsonrpc::SERVER_UNAVAILABLE
    );
    let a = r.child_restarted(0, now);
    let (_, init) = &to_child(&a)[0];
    let a = r.from_child(
        0,
        json!({"jsonrpc":"2.0","id":init["id"],"result":{"protocolVersion":"2025-06-18","capabilities":{"resources":{"subscribe":true}}}}),
        now,
    );
    let subs: Vec<(usize, Value)> = to_child(&a)
        .into_iter()
        .filter(|(_, m)| m["method"] == "resources/subscribe")
        .collect();
    assert!(subs.is_empty(), "{subs:?}");
}
