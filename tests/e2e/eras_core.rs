//! A 2026-07-28 client through the gateway, spoken raw over ssh2: the era
//! locked by its first request, `server/discover`, stamped results, the
//! error codes of the modern era, and `logLevel` per request; against the
//! legacy fixture and against `mcp-server-time` (a dual-era server, here
//! behind the gateway as a legacy child).

use crate::common::*;
use serde_json::{Value, json};
use std::path::PathBuf;

const MODERN: &str = "2026-07-28";
const SERVER_INFO: &str = "io.modelcontextprotocol/serverInfo";

/// A modern request's `params`, its `_meta` carrying `extra` too.
fn params(mut p: Value, extra: Value) -> Value {
    let mut meta = json!({
        "io.modelcontextprotocol/protocolVersion": MODERN,
        "io.modelcontextprotocol/clientCapabilities": {},
        "io.modelcontextprotocol/clientInfo": {"name": "raw-modern", "version": "1"},
    });
    if let (Some(m), Some(e)) = (meta.as_object_mut(), extra.as_object()) {
        m.extend(e.clone());
    }
    p["_meta"] = meta;
    p
}

fn modern(c: &mut Mcp, method: &str, p: Value) -> Value {
    c.request(method, params(p, json!({})))
}

/// Checks a complete modern result and returns it.
fn complete(r: &Value) -> &Value {
    let res = &r["result"];
    assert_eq!(res["resultType"], "complete", "{r}");
    assert_eq!(
        res["_meta"][SERVER_INFO]["name"], "m2m-mcp-server-ssh-server",
        "{r}"
    );
    res
}

fn time_server() -> PathBuf {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/mcp-server-time");
    assert!(
        p.exists(),
        "{} is missing: run scripts/install-mcp-servers.sh",
        p.display()
    );
    p
}

#[test]
fn a_modern_client_is_served_natively_in_front_of_legacy_fixtures() {
    let srv = Server::start(two_children(), &[]);
    let mut c = srv.connect();
    // No discover first (as the TypeScript v2 client after its probe).
    let list = modern(&mut c, "tools/list", json!({}));
    let res = complete(&list);
    assert_eq!(
        (res["ttlMs"].clone(), res["cacheScope"].clone()),
        (json!(0), json!("private"))
    );
    assert!(
        names(&list, "tools").contains(&"echo_1".to_owned()),
        "{list}"
    );
    let d = modern(&mut c, "server/discover", json!({}));
    let res = complete(&d);
    assert_eq!(res["supportedVersions"], json!([MODERN]));
    assert_eq!(res["capabilities"]["tools"]["listChanged"], true);
    assert!(res["instructions"].is_null() || res["instructions"].is_string());
    let r = modern(
        &mut c,
        "tools/call",
        json!({"name": "echo", "arguments": {"text": "hi"}}),
    );
    complete(&r);
    assert_eq!(text(&r), "hi");
    assert_eq!(
        r["result"]["_meta"]["from"], "alpha",
        "the child's own _meta is kept"
    );
    let r = modern(
        &mut c,
        "resources/read",
        json!({"uri": "fixture://beta/info"}),
    );
    assert_eq!(complete(&r)["ttlMs"], 0);
    // The era is locked, and every request is checked; the session goes on.
    let r = c.initialize();
    assert_error(&r, -32022, "locked to 2026-07-28");
    assert_eq!(r["error"]["data"]["supported"], json!([MODERN]));
    assert_error(
        &modern(&mut c, "ping", json!({})),
        -32601,
        "removed in 2026-07-28",
    );
    assert_error(
        &c.request("tools/list", json!({})),
        -32602,
        "protocolVersion",
    );
    let bad = c.request(
        "tools/list",
        params(
            json!({}),
            json!({"io.modelcontextprotocol/protocolVersion": "2099-01-01"}),
        ),
    );
    assert_error(&bad, -32022, "2099-01-01");
    assert_eq!(bad["error"]["data"]["requested"], "2099-01-01");
    // logLevel per request: the child's log message only when asked for.
    let mut others = Vec::new();
    let r = c.request_with(
        "tools/call",
        params(
            json!({"name": "progress", "arguments": {"count": 2}}),
            json!({"progressToken": "p1"}),
        ),
        &mut others,
    );
    complete(&r);
    assert_eq!(text(&r), "done");
    assert!(
        others
            .iter()
            .all(|m| m["method"] != "notifications/message"),
        "{others:?}"
    );
    assert_eq!(
        others
            .iter()
            .filter(|m| m["method"] == "notifications/progress")
            .count(),
        2
    );
    let mut others = Vec::new();
    let r = c.request_with(
        "tools/call",
        params(
            json!({"name": "progress", "arguments": {"count": 1}}),
            json!({"progressToken": "p2", "io.modelcontextprotocol/logLevel": "info"}),
        ),
        &mut others,
    );
    complete(&r);
    let logs: Vec<_> = others
        .iter()
        .filter(|m| m["method"] == "notifications/message")
        .collect();
    assert_eq!(logs.len(), 1, "{others:?}");
    assert_eq!(logs[0]["params"]["data"], "hello from alpha");
}

#[test]
fn a_legacy_connection_refuses_modern_requests_and_a_refused_one_does_not_lock() {
    let srv = Server::start(alpha(), &[]);
    let mut c = srv.connect();
    let bad = c.request(
        "server/discover",
        params(
            json!({}),
            json!({"io.modelcontextprotocol/protocolVersion": "2020-01-01"}),
        ),
    );
    assert_error(&bad, -32022, "2020-01-01");
    let supported = bad["error"]["data"]["supported"]
        .as_array()
        .unwrap()
        .clone();
    assert!(
        supported.contains(&json!("2025-11-25")),
        "legacy versions listed before the lock"
    );
    let init = c.initialize();
    assert!(init["result"]["serverInfo"].is_object(), "{init}");
    assert_error(
        &modern(&mut c, "server/discover", json!({})),
        -32600,
        "locked to the initialize era",
    );
    let r = c.call("echo", json!({"text": "legacy"}));
    assert_eq!(text(&r), "legacy");
    assert!(r["result"].get("resultType").is_none(), "{r}");
}

/// `mcp-server-time` with `"protocol": protocol`.
fn time(protocol: &str) -> Value {
    json!({"time": {"command": time_server(), "args": ["--local-timezone", "UTC"], "protocol": protocol}})
}

#[test]
fn a_modern_client_reaches_mcp_server_time_in_either_of_its_eras() {
    // legacy: initialized by the gateway; auto: probed, found modern.
    for protocol in ["legacy", "auto"] {
        let srv = Server::start(time(protocol), &[]);
        let mut c = srv.connect();
        let d = modern(&mut c, "server/discover", json!({}));
        assert!(complete(&d)["capabilities"]["tools"].is_object(), "{d}");
        let list = modern(&mut c, "tools/list", json!({}));
        complete(&list);
        assert!(
            names(&list, "tools").contains(&"get_current_time".to_owned()),
            "{list}"
        );
        let r = modern(
            &mut c,
            "tools/call",
            json!({"name": "get_current_time", "arguments": {"timezone": "UTC"}}),
        );
        complete(&r);
        assert!(text(&r).contains("UTC"), "{protocol}: {r}");
        // auto: the probe finds it modern, or (a start-up slower than the
        // probe's wait) it answers late, locks itself modern, and refuses
        // initialize with -32022, which switches it to modern too.
        let log = srv.log();
        let modern = log.contains("[time] speaks 2026-07-28")
            || log.contains("[time] refused initialize with -32022");
        assert_eq!(modern, protocol == "auto", "{protocol}");
    }
}

#[test]
fn a_legacy_client_reaches_mcp_server_time_spoken_to_in_2026_07_28() {
    for protocol in ["2026-07-28", "auto"] {
        let srv = Server::start(time(protocol), &["--warm-spares", "0"]);
        let mut c = srv.connect();
        let init = c.initialize();
        assert!(
            init["result"]["capabilities"]["tools"].is_object(),
            "{protocol}: {init}"
        );
        let list = c.request("tools/list", json!({}));
        assert!(
            names(&list, "tools").contains(&"convert_time".to_owned()),
            "{list}"
        );
        let r = c.call("get_current_time", json!({"timezone": "UTC"}));
        assert!(text(&r).contains("UTC"), "{protocol}: {r}");
        // 2026-07-28: probed, with no fallback. auto: a probe that timed out
        // on a slow start-up finds it locked modern at initialize.
        let log = srv.log();
        assert!(
            log.contains("[time] speaks 2026-07-28")
                || log.contains("[time] refused initialize with -32022"),
            "{protocol}"
        );
    }
}

#[test]
fn a_server_that_must_be_modern_and_is_not_is_left_out_with_a_reason() {
    let mut fx = fixture("alpha", &[]);
    fx["protocol"] = json!("2026-07-28");
    let srv = Server::start(
        json!({"alpha": fx, "beta": fixture("beta", &[])}),
        &["--warm-spares", "0"],
    );
    let mut c = srv.connect();
    c.initialize();
    let list = c.request("tools/list", json!({}));
    assert!(
        names(&list, "tools").contains(&"echo".to_owned()),
        "beta serves: {list}"
    );
    assert!(
        srv.wait_log("configured \"protocol\": \"2026-07-28\" but server/discover"),
        "{}",
        srv.log()
    );
}

/// The one entry of an `input_required` result: (key, request, state).
fn input_required(r: &Value) -> (String, Value, Value) {
    let res = &r["result"];
    assert_eq!(res["resultType"], "input_required", "{r}");
    let (k, v) = res["inputRequests"]
        .as_object()
        .unwrap()
        .iter()
        .next()
        .unwrap();
    (k.clone(), v.clone(), res["requestState"].clone())
}

#[test]
fn a_legacy_childs_sampling_and_roots_reach_a_modern_client_as_input_required() {
    let srv = Server::start(alpha(), &[]);
    let mut c = srv.connect();
    let caps = json!({"io.modelcontextprotocol/clientCapabilities": {"sampling": {}, "roots": {}}});
    let call = json!({"name": "sample", "arguments": {}});
    let r = c.request("tools/call", params(call.clone(), caps.clone()));
    let (key, req, state) = input_required(&r);
    assert_eq!(req["method"], "sampling/createMessage");
    // A foreign requestState is refused and the session goes on.
    let mut bad = params(call.clone(), caps.clone());
    bad["requestState"] = json!("not-ours");
    assert_error(&c.request("tools/call", bad), -32602, "requestState");
    let mut retry = params(call.clone(), caps.clone());
    retry["requestState"] = state.clone();
    retry["inputResponses"] =
        json!({key: {"role": "assistant", "content": {"type": "text", "text": "s"}, "model": "m"}});
    let r = c.request("tools/call", retry.clone());
    let (key2, req2, state2) = input_required(&r);
    assert_eq!(req2["method"], "roots/list");
    // The same state again (a replay) is refused.
    assert_error(
        &c.request("tools/call", retry),
        -32602,
        "unknown, used or expired",
    );
    let mut retry = params(call, caps);
    retry["requestState"] = state2;
    retry["inputResponses"] = json!({key2: {"roots": [{"uri": "file:///tmp", "name": "tmp"}]}});
    let r = c.request("tools/call", retry);
    complete(&r);
    assert_eq!(text(&r), "sampled");
    let got = &r["result"]["structuredContent"];
    assert_eq!(got["sampling"]["result"]["model"], "m");
    assert_eq!(got["roots"]["result"]["roots"][0]["uri"], "file:///tmp");
}

#[test]
fn a_listen_stream_gets_its_acknowledgement_and_a_restarted_childs_list_change() {
    let srv = Server::start(alpha(), &[]);
    let mut c = srv.connect();
    let filter = json!({"notifications": {"toolsListChanged": true,
        "resourceSubscriptions": ["fixture://alpha/info", "nobody://x"]}});
    c.send(
        &json!({"jsonrpc": "2.0", "id": "listen-1", "method": "subscriptions/listen",
                   "params": params(filter, json!({}))}),
    );
    let ack = c.recv();
    assert_eq!(
        ack["method"], "notifications/subscriptions/acknowledged",
        "{ack}"
    );
    assert_eq!(
        ack["params"]["_meta"]["io.modelcontextprotocol/subscriptionId"],
        "listen-1"
    );
    assert_eq!(
        ack["params"]["notifications"],
        json!({"toolsListChanged": true, "resourceSubscriptions": ["fixture://alpha/info"]})
    );
    // The child crashes and is restarted: its tools may have changed.
    let r = modern(
        &mut c,
        "tools/call",
        json!({"name": "crash", "arguments": {}}),
    );
    assert!(r.get("error").is_some(), "{r}");
    let n = c.recv();
    assert_eq!(n["method"], "notifications/tools/list_changed", "{n}");
    assert_eq!(
        n["params"]["_meta"]["io.modelcontextprotocol/subscriptionId"],
        "listen-1"
    );
    // The stream never answers; cancelling it ends it quietly.
    c.send(&json!({"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": "listen-1"}}));
    let r = modern(
        &mut c,
        "tools/call",
        json!({"name": "echo", "arguments": {"text": "after"}}),
    );
    assert_eq!(text(&r), "after");
}

/// The modern fixture (2026-07-28 only), found modern by the probe.
fn modern_fixture() -> Value {
    json!({"mf": fixture("mf", &["--modern"])})
}

/// A legacy client's call that the gateway may turn into requests to it:
/// each is answered by `answer(method)`; returns the call's response and
/// the methods asked, in order.
fn call_answering(c: &mut Mcp, name: &str, answer: impl Fn(&str) -> Value) -> (Value, Vec<String>) {
    c.send(
        &json!({"jsonrpc": "2.0", "id": "call", "method": "tools/call",
                   "params": {"name": name, "arguments": {}}}),
    );
    let mut asked = Vec::new();
    loop {
        let m = c.recv();
        if m["id"] == "call" && m.get("method").is_none() {
            return (m, asked);
        }
        if let Some(method) = m["method"].as_str().filter(|_| m.get("id").is_some()) {
            asked.push(method.to_owned());
            c.send(&json!({"jsonrpc": "2.0", "id": m["id"], "result": answer(method)}));
        }
    }
}

#[test]
fn a_legacy_client_answers_a_modern_childs_input_required_as_legacy_requests() {
    let srv = Server::start(modern_fixture(), &[]);
    let mut c = srv.connect();
    let init = c.request(
        "initialize",
        json!({"protocolVersion": "2025-11-25", "capabilities": {"sampling": {}, "elicitation": {}, "roots": {}},
               "clientInfo": {"name": "legacy", "version": "1"}}),
    );
    assert!(
        init["result"]["capabilities"]["tools"].is_object(),
        "{init}"
    );
    c.send(&json!({"jsonrpc": "2.0", "method": "notifications/initialized"}));
    let answer = |m: &str| match m {
        "elicitation/create" => json!({"action": "accept", "content": {"name": "Ada"}}),
        "sampling/createMessage" => {
            json!({"role": "assistant", "content": {"type": "text", "text": "hello"}, "model": "m1"})
        }
        _ => json!({"roots": [{"uri": "file:///srv", "name": "srv"}]}),
    };
    // Two rounds: an elicitation, then a sampling.
    let (r, asked) = call_answering(&mut c, "ask_twice", answer);
    assert_eq!(asked, ["elicitation/create", "sampling/createMessage"]);
    let got = &r["result"]["structuredContent"]["inputResponses"];
    assert_eq!(got["elicit"]["content"]["name"], "Ada", "{r}");
    assert_eq!(got["sample"]["model"], "m1", "{r}");
    // Three at once.
    let (r, mut asked) = call_answering(&mut c, "ask_all", answer);
    asked.sort();
    assert_eq!(
        asked,
        ["elicitation/create", "roots/list", "sampling/createMessage"]
    );
    let got = &r["result"]["structuredContent"]["inputResponses"];
    assert_eq!(got["roots"]["roots"][0]["uri"], "file:///srv", "{r}");
    // A client without elicitation: the call fails naming what is missing.
    let mut c = srv.connect();
    let init = c.initialize(); // sampling and roots only
    assert!(init["result"].is_object());
    let (r, asked) = call_answering(&mut c, "ask_elicit", answer);
    assert!(asked.is_empty());
    assert_error(&r, -32021, "elicitation");
    assert_eq!(
        r["error"]["data"]["requiredCapabilities"],
        json!({"elicitation": {}})
    );
    let (r, _) = call_answering(&mut c, "ask_roots", answer);
    assert!(r["result"]["structuredContent"].is_object(), "{r}");
}

#[test]
fn a_modern_client_retries_a_modern_childs_input_required_through_the_gateway() {
    let srv = Server::start(modern_fixture(), &[]);
    let mut c = srv.connect();
    let caps =
        json!({"io.modelcontextprotocol/clientCapabilities": {"roots": {}, "elicitation": {}}});
    let call = json!({"name": "ask_roots", "arguments": {}});
    let r = c.request("tools/call", params(call.clone(), caps.clone()));
    let (key, req, state) = input_required(&r);
    assert_eq!(req["method"], "roots/list");
    assert_eq!(
        state.as_str().unwrap().len(),
        32,
        "a gateway handle: {state}"
    );
    let mut retry = params(call.clone(), caps.clone());
    retry["requestState"] = state;
    retry["inputResponses"] = json!({key: {"roots": [{"uri": "file:///x"}]}});
    let r = c.request("tools/call", retry.clone());
    complete(&r);
    assert_eq!(
        r["result"]["structuredContent"]["inputResponses"]["roots"]["roots"][0]["uri"],
        "file:///x"
    );
    assert_error(&c.request("tools/call", retry), -32602, "requestState");
    // A prompt that needs a name.
    let p = json!({"name": "ask_greet"});
    let r = c.request("prompts/get", params(p.clone(), caps.clone()));
    let (key, _, state) = input_required(&r);
    let mut retry = params(p, caps);
    retry["requestState"] = state;
    retry["inputResponses"] = json!({key: {"action": "accept", "content": {"name": "Bo"}}});
    let r = c.request("prompts/get", retry);
    complete(&r);
    assert_eq!(
        r["result"]["messages"][0]["content"]["text"],
        "hello Bo from mf"
    );
}

#[test]
fn a_legacy_client_gets_a_modern_childs_list_changes_and_resource_updates() {
    let srv = Server::start(modern_fixture(), &[]);
    let mut c = srv.connect();
    c.initialize();
    let uri = "fixture://mf/info";
    let r = c.request("resources/subscribe", json!({"uri": uri}));
    assert_eq!(r["result"], json!({}), "{r}");
    let mut others = Vec::new();
    let r = c.request_with(
        "tools/call",
        json!({"name": "notify", "arguments": {}}),
        &mut others,
    );
    assert!(r["result"].is_object(), "{r}");
    // Pushed on the gateway's listens, they may trail the call's answer.
    let seen = |others: &[Value], m: &str| others.iter().any(|n| n["method"] == m);
    while !(seen(&others, "notifications/tools/list_changed")
        && seen(&others, "notifications/resources/updated"))
    {
        others.push(c.recv());
    }
    let updated = others
        .iter()
        .find(|n| n["method"] == "notifications/resources/updated")
        .unwrap();
    assert_eq!(updated["params"]["uri"], uri);
    assert!(
        updated["params"]["_meta"]
            .get("io.modelcontextprotocol/subscriptionId")
            .is_none()
    );
}
