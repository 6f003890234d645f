//! The MCP eras end to end, with real peers no one here wrote: the official
//! TypeScript SDK (1.32.2) and Python SDK (2.3.0) clients, driven by the
//! scripts in `tests/peers/`, talk to the gateway through OpenSSH `ssh -T`
//! and through our client binary, with server-everything (legacy only),
//! mcp-server-time (both eras) and the fixture as children. Each peer run
//! prints one JSON object: the negotiated version, then one entry per step.
//!
//! The peers come from `scripts/install-mcp-servers.sh` (`.venv` and
//! `node_modules` in the repository); a missing peer fails the test saying so.

use crate::common::*;
use serde_json::{Value, json};
use std::path::PathBuf;
use std::process::Command;

const INSTALL: &str =
    "run scripts/install-mcp-servers.sh: it installs the SDK peers (.venv, node_modules)";

/// A file the install script puts in the repository; panics naming the fix.
fn installed(rel: &str) -> PathBuf {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(rel);
    assert!(p.exists(), "{} is missing: {INSTALL}", p.display());
    p
}

/// The SDK that drives a peer run.
#[derive(Clone, Copy, Debug)]
enum Sdk {
    /// `mcp` 2.3.0 `Client` in its default mode (probes `server/discover`).
    Python,
    /// `@modelcontextprotocol/sdk` 1.32.2 `Client` (sends `initialize`).
    Ts,
}

impl Sdk {
    /// The interpreter and script, after checking the pinned SDK is there.
    fn command(self) -> Command {
        let peers = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/peers");
        match self {
            Sdk::Python => {
                let python = installed(".venv/bin/python");
                let lib = installed(".venv/lib");
                let has_sdk = std::fs::read_dir(&lib)
                    .unwrap()
                    .flatten()
                    .any(|d| d.path().join("site-packages/mcp-2.3.0.dist-info").exists());
                assert!(has_sdk, "mcp 2.3.0 is not in {}: {INSTALL}", lib.display());
                let mut c = Command::new(python);
                c.arg(peers.join("py_client.py"));
                c
            }
            Sdk::Ts => {
                let pkg = installed("node_modules/@modelcontextprotocol/sdk/package.json");
                let pkg: Value = serde_json::from_slice(&std::fs::read(&pkg).unwrap()).unwrap();
                assert_eq!(pkg["version"], "1.32.2", "{INSTALL}");
                let mut c = Command::new("node");
                c.arg(peers.join("ts_client.mjs"));
                c
            }
        }
    }

    /// Runs `steps` over the stdio `transport` (a command line), bounded at
    /// three minutes; the peer's JSON report.
    fn run(self, steps: Value, transport: &[String]) -> Value {
        self.run_with(&[], steps, transport)
    }

    /// The same with no handlers, so no client capabilities.
    fn run_bare(self, steps: Value, transport: &[String]) -> Value {
        self.run_with(&["--bare"], steps, transport)
    }

    fn run_with(self, flags: &[&str], steps: Value, transport: &[String]) -> Value {
        let mut cmd = Command::new("timeout");
        let sdk = self.command();
        cmd.arg("180")
            .arg(sdk.get_program())
            .args(sdk.get_args())
            .args(flags)
            .arg(steps.to_string())
            .args(transport);
        let out = cmd.output().expect("run the peer");
        let stdout = String::from_utf8_lossy(&out.stdout);
        let report = stdout.lines().rev().find_map(|l| {
            serde_json::from_str::<Value>(l)
                .ok()
                .filter(Value::is_object)
        });
        match report {
            Some(r) if out.status.success() => r,
            _ => panic!(
                "{self:?} peer failed ({}):\n{stdout}\n{}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            ),
        }
    }
}

/// How a peer reaches the gateway.
#[derive(Clone, Copy, Debug)]
enum Via {
    /// OpenSSH `ssh -T`.
    OpenSsh,
    /// Our client binary.
    OurClient,
}

impl Via {
    fn transport(self, srv: &Server) -> Vec<String> {
        let key = srv.key.display().to_string();
        let port = srv.port.to_string();
        let argv: Vec<&str> = match self {
            Via::OpenSsh => vec![
                "ssh",
                "-T",
                "-p",
                &port,
                "-o",
                "StrictHostKeyChecking=no",
                "-o",
                "UserKnownHostsFile=/dev/null",
                "-o",
                "BatchMode=yes",
                "-o",
                "LogLevel=ERROR",
                "-o",
                "IdentitiesOnly=yes",
                "-i",
                &key,
                "mcp@127.0.0.1",
            ],
            Via::OurClient => {
                let kh = srv.path("known_hosts");
                std::fs::write(
                    &kh,
                    format!("[127.0.0.1]:{} {}\n", srv.port, srv.host_pub()),
                )
                .unwrap();
                return [
                    env!("CARGO_BIN_EXE_m2m-mcp-server-ssh-client"),
                    "--host",
                    "127.0.0.1",
                    "--port",
                    &port,
                    "--client-key",
                    &key,
                    "--known-hosts",
                    kh.to_str().unwrap(),
                ]
                .map(String::from)
                .to_vec();
            }
        };
        argv.into_iter().map(String::from).collect()
    }
}

/// server-everything (legacy only), its names under `ev.`.
fn everything() -> Value {
    json!({"command": installed("node_modules/.bin/mcp-server-everything"), "namePrefix": "ev."})
}

/// mcp-server-time (both eras, one per process), its names under `tm.`.
fn time_server() -> Value {
    json!({"command": installed(".venv/bin/mcp-server-time"), "namePrefix": "tm."})
}

/// The legacy fixture with `notify`, named `fx`, its names under `fx.`.
fn legacy_fixture() -> Value {
    let mut f = fixture("fx", &["--notify"]);
    f["namePrefix"] = json!("fx.");
    f
}

/// Step `i` of a report, which must not have failed.
fn step(report: &Value, i: usize) -> &Value {
    let s = &report["steps"][i];
    assert!(
        s.is_object() && s.get("error").is_none(),
        "step {i}: {s}\nreport: {report}"
    );
    s
}

/// The text of a step's tool result, its content blocks joined.
fn result_text(s: &Value) -> String {
    let content = &s["result"]["content"];
    let blocks = content
        .as_array()
        .unwrap_or_else(|| panic!("no content in {s}"));
    blocks
        .iter()
        .filter_map(|b| b["text"].as_str())
        .collect::<Vec<_>>()
        .join("\n")
}

fn list_of<'a>(s: &'a Value, field: &str) -> Vec<&'a str> {
    let items = s[field]
        .as_array()
        .unwrap_or_else(|| panic!("no {field} list in {s}"));
    items.iter().filter_map(Value::as_str).collect()
}

/// Checks that a subscribe step saw `uri` updated the way its SDK's era
/// does: the Python SDK (2026-07-28) as a listen event, the TypeScript SDK
/// (2025-11-25) as `notifications/resources/updated`.
fn assert_updated(sdk: Sdk, s: &Value, uri: &str) {
    match sdk {
        Sdk::Python => {
            let on_listen = s["events"].as_array().is_some_and(|e| {
                e.iter()
                    .any(|e| e["type"] == "ResourceUpdated" && e["uri"] == uri)
            });
            assert!(on_listen, "no listen event for {uri}: {s}");
        }
        Sdk::Ts => assert_eq!(s["updated"], uri, "no resources/updated: {s}"),
    }
}

/// The peer's own name in its answers: `hello from the <peer> peer`, `file:///peer/<peer>`.
fn peer_name(sdk: Sdk) -> &'static str {
    match sdk {
        Sdk::Python => "python",
        Sdk::Ts => "ts",
    }
}

/// The methods the peer's handlers were asked for.
fn handled(report: &Value) -> Vec<&str> {
    report["handled"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|h| h["method"].as_str())
        .collect()
}

/// Every feature of a legacy session through the gateway, against
/// server-everything and the legacy fixture: lists, a call, a prompt, a
/// template read, elicitation, sampling and roots answered by the peer's
/// handlers, progress and a cancelled call.
fn legacy_children_serve_every_feature(sdk: Sdk, via: Via, version: &str) {
    let srv = Server::start(
        json!({"everything": everything(), "fx": legacy_fixture()}),
        &[],
    );
    let steps = json!([
        {"op": "list"},
        {"op": "call", "name": "ev.echo", "args": {"message": "hi"}},
        {"op": "prompt", "name": "ev.args-prompt", "args": {"city": "Paris"}},
        {"op": "read", "uri": "demo://resource/dynamic/text/1"},
        {"op": "call", "name": "ev.trigger-elicitation-request"},
        {"op": "call", "name": "ev.trigger-sampling-request", "args": {"prompt": "hi"}},
        {"op": "call", "name": "ev.get-roots-list"},
        {"op": "call", "name": "fx.sample"},
        {"op": "call", "name": "ev.trigger-long-running-operation", "args": {"duration": 2, "steps": 4}},
        {"op": "cancel", "name": "ev.trigger-long-running-operation", "args": {"duration": 60, "steps": 60}},
        {"op": "cancel", "name": "fx.slow", "args": {"ms": 60000, "progress": true}},
        {"op": "call", "name": "fx.echo", "args": {"text": "still here"}},
        {"op": "read", "uri": "fixture://fx/items/7"},
    ]);
    let r = sdk.run(steps, &via.transport(&srv));
    assert_eq!(r["protocolVersion"], version, "{r}");
    assert_eq!(r["serverInfo"]["name"], "m2m-mcp-server-ssh-server", "{r}");

    let lists = step(&r, 0);
    let tools = list_of(lists, "tools");
    for t in [
        "ev.echo",
        "ev.trigger-long-running-operation",
        "fx.echo",
        "fx.sample",
        "fx.notify",
    ] {
        assert!(tools.contains(&t), "{t} not in {tools:?}");
    }
    assert!(
        list_of(lists, "prompts").contains(&"ev.args-prompt"),
        "{lists}"
    );
    assert!(list_of(lists, "prompts").contains(&"fx.greet"), "{lists}");
    assert!(
        list_of(lists, "resources").contains(&"fixture://fx/info"),
        "{lists}"
    );
    let templates = list_of(lists, "templates");
    assert!(
        templates.contains(&"demo://resource/dynamic/text/{resourceId}"),
        "{templates:?}"
    );
    assert!(
        templates.contains(&"fixture://fx/items/{id}"),
        "{templates:?}"
    );

    assert_eq!(result_text(step(&r, 1)), "Echo: hi");
    let prompt = &step(&r, 2)["result"]["messages"][0]["content"]["text"];
    assert!(prompt.as_str().unwrap_or("").contains("Paris"), "{prompt}");
    let read = &step(&r, 3)["result"]["contents"][0];
    assert_eq!(read["uri"], "demo://resource/dynamic/text/1", "{read}");
    assert!(
        result_text(step(&r, 4)).contains("Name: Ada"),
        "{}",
        r["steps"][4]
    );
    let peer = peer_name(sdk);
    assert!(result_text(step(&r, 5)).contains(&format!("hello from the {peer} peer")));
    assert!(result_text(step(&r, 6)).contains(&format!("file:///peer/{peer}")));
    let sampled = &step(&r, 7)["result"]["structuredContent"];
    assert_eq!(
        sampled["sampling"]["result"]["model"],
        format!("{peer}-peer"),
        "{sampled}"
    );
    assert_eq!(
        sampled["roots"]["result"]["roots"][0]["uri"],
        format!("file:///peer/{peer}")
    );
    let h = handled(&r);
    for m in ["elicitation/create", "sampling/createMessage", "roots/list"] {
        assert!(h.contains(&m), "{m} never reached the peer: {h:?}");
    }

    let progress = step(&r, 8)["progress"].as_array().unwrap();
    assert!(!progress.is_empty(), "no progress: {}", r["steps"][8]);
    let cancel = step(&r, 9);
    assert_eq!(cancel["cancelled"], true, "{cancel}");
    assert!(
        cancel.get("result").is_none(),
        "the cancelled call answered: {cancel}"
    );
    let cancel = step(&r, 10);
    assert_eq!(cancel["cancelled"], true, "{cancel}");
    // The fixture logs the cancellation the gateway passed on.
    assert!(
        srv.wait_log("fixture fx: cancelled"),
        "no cancellation reached the child:\n{}",
        srv.log()
    );
    assert_eq!(result_text(step(&r, 11)), "still here");

    assert_eq!(
        step(&r, 12)["result"]["contents"][0]["text"],
        "fixture://fx/items/7 served by fx"
    );
}

#[test]
fn ts_sdk_through_openssh_gets_2025_11_25_and_every_legacy_feature() {
    legacy_children_serve_every_feature(Sdk::Ts, Via::OpenSsh, "2025-11-25");
}

#[test]
fn ts_sdk_through_our_client_gets_2025_11_25_and_every_legacy_feature() {
    legacy_children_serve_every_feature(Sdk::Ts, Via::OurClient, "2025-11-25");
}

/// mcp-server-time serves both eras; a legacy client reaches it as ever.
#[test]
fn ts_sdk_calls_mcp_server_time_through_the_gateway() {
    let srv = Server::start(json!({"time": time_server()}), &[]);
    let steps = json!([
        {"op": "list"},
        {"op": "call", "name": "tm.convert_time",
            "args": {"source_timezone": "UTC", "time": "12:00", "target_timezone": "Asia/Tokyo"}},
    ]);
    for via in [Via::OpenSsh, Via::OurClient] {
        let r = Sdk::Ts.run(steps.clone(), &via.transport(&srv));
        assert_eq!(r["protocolVersion"], "2025-11-25", "{via:?}: {r}");
        assert!(
            list_of(step(&r, 0), "tools").contains(&"tm.get_current_time"),
            "{r}"
        );
        let converted = &step(&r, 1)["result"]["structuredContent"]["target"];
        assert_eq!(converted["timezone"], "Asia/Tokyo", "{via:?}: {r}");
        assert!(
            converted["datetime"]
                .as_str()
                .unwrap_or("")
                .contains("T21:00:00"),
            "{r}"
        );
    }
}

#[test]
fn python_sdk_through_openssh_ends_on_2026_07_28_with_every_feature_of_legacy_children() {
    legacy_children_serve_every_feature(Sdk::Python, Via::OpenSsh, "2026-07-28");
}

#[test]
fn python_sdk_through_our_client_ends_on_2026_07_28_with_every_feature_of_legacy_children() {
    legacy_children_serve_every_feature(Sdk::Python, Via::OurClient, "2026-07-28");
}

/// The modern fixture, named `mx`, its names under `mx.`.
fn modern_fixture() -> Value {
    let mut f = fixture("mx", &["--modern"]);
    f["namePrefix"] = json!("mx.");
    f
}

/// Every feature of a session against modern children (the modern fixture
/// and mcp-server-time), above all input asked for the 2026 way
/// (`input_required`): each answer of the peer's handlers must make the
/// round trip into the fixture's final result, whatever the client's era.
fn modern_children_serve_every_feature(sdk: Sdk, version: &str) {
    let srv = Server::start(json!({"mx": modern_fixture(), "time": time_server()}), &[]);
    let steps = json!([
        {"op": "list"},
        {"op": "call", "name": "mx.ask_elicit"},
        {"op": "call", "name": "mx.ask_sample"},
        {"op": "call", "name": "mx.ask_roots"},
        {"op": "call", "name": "mx.ask_all"},
        {"op": "call", "name": "mx.ask_twice"},
        {"op": "prompt", "name": "mx.ask_greet"},
        {"op": "read", "uri": "fixture://mx/ask"},
        {"op": "call", "name": "mx.slow", "args": {"ms": 300, "progress": true}},
        {"op": "cancel", "name": "mx.slow", "args": {"ms": 60000, "progress": true}},
        {"op": "call", "name": "mx.echo", "args": {"text": "still here"}},
        {"op": "call", "name": "tm.convert_time",
            "args": {"source_timezone": "UTC", "time": "12:00", "target_timezone": "Asia/Tokyo"}},
        {"op": "read", "uri": "fixture://mx/items/7"},
    ]);
    let peer = peer_name(sdk);
    let elicited = json!({"action": "accept", "content": {"name": "Ada"}});
    let roots = json!([{"uri": format!("file:///peer/{peer}"), "name": format!("{peer} peer")}]);
    for via in [Via::OpenSsh, Via::OurClient] {
        let r = sdk.run(steps.clone(), &via.transport(&srv));
        assert_eq!(r["protocolVersion"], version, "{via:?}: {r}");
        let lists = step(&r, 0);
        let tools = list_of(lists, "tools");
        for t in [
            "mx.ask_elicit",
            "mx.ask_all",
            "mx.notify",
            "tm.get_current_time",
        ] {
            assert!(tools.contains(&t), "{t} not in {tools:?}");
        }
        assert!(
            list_of(lists, "prompts").contains(&"mx.ask_greet"),
            "{lists}"
        );
        assert!(
            list_of(lists, "resources").contains(&"fixture://mx/ask"),
            "{lists}"
        );
        assert!(
            list_of(lists, "templates").contains(&"fixture://mx/items/{id}"),
            "{lists}"
        );

        let answers =
            |i: usize| step(&r, i)["result"]["structuredContent"]["inputResponses"].clone();
        let sampled = format!("hello from the {peer} peer");
        assert_eq!(answers(1)["elicit"], elicited, "{via:?}: {}", r["steps"][1]);
        assert_eq!(
            answers(2)["sample"]["content"]["text"],
            sampled,
            "{}",
            r["steps"][2]
        );
        assert_eq!(answers(3)["roots"]["roots"], roots, "{}", r["steps"][3]);
        let all = answers(4);
        assert_eq!(all["elicit"], elicited, "{all}");
        assert_eq!(all["sample"]["content"]["text"], sampled, "{all}");
        assert_eq!(all["roots"]["roots"], roots, "{all}");
        let twice = answers(5);
        assert_eq!(twice["elicit"], elicited, "{twice}");
        assert_eq!(twice["sample"]["content"]["text"], sampled, "{twice}");
        let greeting = &step(&r, 6)["result"]["messages"][0]["content"]["text"];
        assert_eq!(greeting, "hello Ada from mx", "{}", r["steps"][6]);
        let read = step(&r, 7)["result"]["contents"][0]["text"]
            .as_str()
            .unwrap_or("")
            .to_owned();
        let read: Value =
            serde_json::from_str(&read).unwrap_or_else(|_| panic!("{}", r["steps"][7]));
        assert_eq!(read["roots"]["roots"], roots, "{read}");
        let h = handled(&r);
        for m in ["elicitation/create", "sampling/createMessage", "roots/list"] {
            assert!(h.contains(&m), "{m} never reached the peer: {h:?}");
        }

        assert!(
            !step(&r, 8)["progress"].as_array().unwrap().is_empty(),
            "{}",
            r["steps"][8]
        );
        assert_eq!(step(&r, 9)["cancelled"], true, "{}", r["steps"][9]);
        assert!(
            srv.wait_log("fixture mx: cancelled"),
            "no cancellation reached the child:\n{}",
            srv.log()
        );
        assert_eq!(result_text(step(&r, 10)), "still here");
        let converted = &step(&r, 11)["result"]["structuredContent"]["target"];
        assert_eq!(converted["timezone"], "Asia/Tokyo", "{via:?}: {r}");
        assert_eq!(
            step(&r, 12)["result"]["contents"][0]["text"],
            "fixture://mx/items/7 served by mx"
        );
    }
}

#[test]
fn python_sdk_round_trips_input_with_modern_children_on_2026_07_28() {
    modern_children_serve_every_feature(Sdk::Python, "2026-07-28");
}

#[test]
fn ts_sdk_answers_the_input_modern_children_ask_for_as_legacy_requests() {
    modern_children_serve_every_feature(Sdk::Ts, "2025-11-25");
}

#[test]
fn python_sdk_calls_mcp_server_time_through_the_gateway_on_2026_07_28() {
    let srv = Server::start(json!({"time": time_server()}), &[]);
    let steps = json!([
        {"op": "list"},
        {"op": "call", "name": "tm.convert_time",
            "args": {"source_timezone": "UTC", "time": "12:00", "target_timezone": "Asia/Tokyo"}},
    ]);
    for via in [Via::OpenSsh, Via::OurClient] {
        let r = Sdk::Python.run(steps.clone(), &via.transport(&srv));
        assert_eq!(r["protocolVersion"], "2026-07-28", "{via:?}: {r}");
        assert_eq!(r["serverInfo"]["name"], "m2m-mcp-server-ssh-server", "{r}");
        assert!(
            list_of(step(&r, 0), "tools").contains(&"tm.get_current_time"),
            "{r}"
        );
        let converted = &step(&r, 1)["result"]["structuredContent"]["target"];
        assert_eq!(converted["timezone"], "Asia/Tokyo", "{via:?}: {r}");
    }
}

/// A legacy client that declared no elicitation gets a modern child's
/// request for it as a failed call naming the capability, and goes on.
#[test]
fn a_legacy_client_without_the_capability_gets_the_call_failed_naming_it() {
    let srv = Server::start(json!({"mx": modern_fixture()}), &[]);
    let steps = json!([
        {"op": "call", "name": "mx.ask_elicit"},
        {"op": "call", "name": "mx.echo", "args": {"text": "still here"}},
    ]);
    let r = Sdk::Ts.run_bare(steps, &Via::OpenSsh.transport(&srv));
    let failed = &r["steps"][0]["error"];
    assert_eq!(failed["code"], -32021, "{r}");
    assert_eq!(
        failed["data"]["requiredCapabilities"],
        json!({"elicitation": {}}),
        "{r}"
    );
    let m = failed["message"].as_str().unwrap_or("");
    assert!(m.contains("elicitation"), "{failed}");
    assert_eq!(result_text(step(&r, 1)), "still here");
    assert!(r["handled"].as_array().unwrap().is_empty(), "{r}");
}

/// A modern `tools/call` of `name` declaring `caps`, with `extra` params
/// (a retry's `requestState` and `inputResponses`).
fn modern_call(c: &mut Mcp, name: &str, caps: &Value, extra: Value) -> Value {
    let mut p = json!({"name": name, "arguments": {}, "_meta": {
        "io.modelcontextprotocol/protocolVersion": "2026-07-28",
        "io.modelcontextprotocol/clientCapabilities": caps,
        "io.modelcontextprotocol/clientInfo": {"name": "raw-modern", "version": "1"},
    }});
    if let (Some(p), Some(e)) = (p.as_object_mut(), extra.as_object()) {
        p.extend(e.clone());
    }
    c.request("tools/call", p)
}

/// An `input_required` answer: (its requestState, its one key, that key's method).
fn input_required(r: &Value) -> (String, String, String) {
    let res = &r["result"];
    assert_eq!(res["resultType"], "input_required", "{r}");
    let requests = res["inputRequests"]
        .as_object()
        .unwrap_or_else(|| panic!("{r}"));
    assert_eq!(requests.len(), 1, "{r}");
    let (key, request) = requests.iter().next().unwrap();
    let state = res["requestState"]
        .as_str()
        .unwrap_or_else(|| panic!("{r}"));
    (
        state.into(),
        key.clone(),
        request["method"].as_str().unwrap_or("").into(),
    )
}

/// A modern client in front of the legacy fixture, whose `sample` tool asks
/// for sampling then roots: each request becomes `input_required`, and only
/// this connection's unused, untampered state is taken back; a refused
/// retry is a JSON-RPC error and the session goes on.
#[test]
fn a_foreign_tampered_replayed_or_overfilled_retry_is_refused_and_the_session_goes_on() {
    let srv = Server::start(alpha(), &[]);
    let caps = json!({"sampling": {}, "roots": {}});
    let sampled = json!({"role": "assistant", "content": {"type": "text", "text": "raw"}, "model": "raw-model"});
    let rooted = json!({"roots": [{"uri": "file:///raw", "name": "raw"}]});
    let mut a = srv.connect();
    let mut b = srv.connect();
    assert_eq!(
        modern_call(&mut b, "echo", &caps, json!({}))["result"]["resultType"],
        "complete"
    );

    let (s1, k1, m1) = input_required(&modern_call(&mut a, "sample", &caps, json!({})));
    assert_eq!(m1, "sampling/createMessage");
    let retry =
        |state: &str, responses: Value| json!({"requestState": state, "inputResponses": responses});
    let foreign = modern_call(&mut b, "sample", &caps, retry(&s1, json!({&k1: sampled})));
    assert_error(&foreign, -32602, "requestState");
    let tampered = format!("{s1}x");
    let r = modern_call(
        &mut a,
        "sample",
        &caps,
        retry(&tampered, json!({&k1: sampled})),
    );
    assert_error(&r, -32602, "requestState");

    let (s2, k2, m2) = input_required(&modern_call(
        &mut a,
        "sample",
        &caps,
        retry(&s1, json!({&k1: sampled})),
    ));
    assert_eq!(m2, "roots/list");
    let done = modern_call(&mut a, "sample", &caps, retry(&s2, json!({&k2: rooted})));
    let res = &done["result"];
    assert_eq!(res["resultType"], "complete", "{done}");
    assert_eq!(
        res["structuredContent"]["sampling"]["result"]["model"], "raw-model",
        "{done}"
    );
    assert_eq!(
        res["structuredContent"]["roots"]["result"]["roots"][0]["uri"], "file:///raw",
        "{done}"
    );
    let replayed = modern_call(&mut a, "sample", &caps, retry(&s1, json!({&k1: sampled})));
    assert_error(&replayed, -32602, "requestState");

    let (s3, k3, _) = input_required(&modern_call(&mut a, "sample", &caps, json!({})));
    let overfilled = modern_call(
        &mut a,
        "sample",
        &caps,
        retry(&s3, json!({&k3: sampled, "nobody-asked": {}})),
    );
    assert!(overfilled["error"]["code"].is_i64(), "{overfilled}");
    assert!(
        overfilled["error"]["message"]
            .as_str()
            .unwrap_or("")
            .contains("nobody-asked"),
        "{overfilled}"
    );

    for c in [&mut a, &mut b] {
        let echo = modern_call(c, "echo", &caps, json!({"arguments": {"text": "on"}}));
        assert_eq!(text(&echo), "on", "{echo}");
    }
}

/// A resource subscription through the gateway: the legacy peer's
/// `resources/subscribe`, or the modern peer's listen (its tool list and
/// the URI), sees each `(uri, trigger tool)` updated after the trigger.
fn subscriptions_reach_the_peer(sdk: Sdk, children: Value, subscriptions: &[(&str, &str)]) {
    let srv = Server::start(children, &[]);
    let steps: Vec<Value> = subscriptions
        .iter()
        .map(|(uri, trigger)| json!({"op": "subscribe", "uri": uri, "trigger": {"name": trigger}}))
        .collect();
    for via in [Via::OpenSsh, Via::OurClient] {
        let r = sdk.run(json!(steps), &via.transport(&srv));
        for (i, (uri, _)) in subscriptions.iter().enumerate() {
            assert_updated(sdk, step(&r, i), uri);
        }
    }
}

/// The legacy children's subscriptions: the fixture's `notify`, and
/// server-everything's updates every 5 s once toggled on.
const LEGACY_SUBSCRIPTIONS: [(&str, &str); 2] = [
    ("fixture://fx/info", "fx.notify"),
    (
        "demo://resource/static/document/features.md",
        "ev.toggle-subscriber-updates",
    ),
];

#[test]
fn ts_sdk_subscribes_to_resources_of_legacy_children() {
    let children = json!({"everything": everything(), "fx": legacy_fixture()});
    subscriptions_reach_the_peer(Sdk::Ts, children, &LEGACY_SUBSCRIPTIONS);
}

#[test]
fn python_sdk_listens_to_resources_of_legacy_children() {
    let children = json!({"everything": everything(), "fx": legacy_fixture()});
    subscriptions_reach_the_peer(Sdk::Python, children, &LEGACY_SUBSCRIPTIONS);
}

#[test]
fn ts_sdk_subscribes_to_resources_of_a_modern_child() {
    let children = json!({"mx": modern_fixture()});
    subscriptions_reach_the_peer(Sdk::Ts, children, &[("fixture://mx/info", "mx.notify")]);
}

#[test]
fn python_sdk_listens_to_resources_of_a_modern_child() {
    let children = json!({"mx": modern_fixture()});
    subscriptions_reach_the_peer(Sdk::Python, children, &[("fixture://mx/info", "mx.notify")]);
}

/// A tool-list change of each child in `triggers` (its `notify` tool)
/// reaches the peer: a legacy peer's `notifications/tools/list_changed`, a
/// modern peer's event on its listen stream.
fn list_changes_reach_the_peer(sdk: Sdk, triggers: &[&str]) {
    let srv = Server::start(json!({"fx": legacy_fixture(), "mx": modern_fixture()}), &[]);
    let steps: Vec<Value> = triggers
        .iter()
        .map(|t| json!({"op": "list_changed", "trigger": {"name": t}}))
        .collect();
    for via in [Via::OpenSsh, Via::OurClient] {
        let r = sdk.run(json!(steps), &via.transport(&srv));
        for (i, t) in triggers.iter().enumerate() {
            assert_eq!(
                step(&r, i)["event"],
                "ToolsListChanged",
                "{t} via {via:?}: {r}"
            );
        }
    }
}

#[test]
fn python_sdk_hears_tool_list_changes_of_legacy_and_modern_children_on_its_stream() {
    list_changes_reach_the_peer(Sdk::Python, &["fx.notify", "mx.notify"]);
}

#[test]
fn ts_sdk_hears_tool_list_changes_of_legacy_and_modern_children() {
    list_changes_reach_the_peer(Sdk::Ts, &["fx.notify", "mx.notify"]);
}
