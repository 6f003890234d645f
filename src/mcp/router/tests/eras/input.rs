//! Input across eras (MRTR, ERAS §4.1 and §4.2): a legacy child's
//! requests for a 2026-07-28 client as `input_required` and its retry, a
//! modern child's `input_required` driven by the gateway for a legacy
//! client, and the `requestState` handles the gateway issues.

use super::*;

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
