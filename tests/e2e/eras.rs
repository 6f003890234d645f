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

/// Checks that a subscribe step saw `uri` updated: a legacy peer's
/// `notifications/resources/updated`, or a modern peer's listen event.
fn assert_updated(s: &Value, uri: &str) {
    let on_listen = s["events"].as_array().is_some_and(|e| {
        e.iter()
            .any(|e| e["type"] == "ResourceUpdated" && e["uri"] == uri)
    });
    assert!(s["updated"] == uri || on_listen, "no update of {uri}: {s}");
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
/// handlers, progress, a cancelled call, and a resource subscription.
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
        {"op": "subscribe", "uri": "fixture://fx/info", "trigger": {"name": "fx.notify"}},
        {"op": "subscribe", "uri": "demo://resource/static/document/features.md",
            "trigger": {"name": "ev.toggle-subscriber-updates"}},
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

    assert_updated(step(&r, 12), "fixture://fx/info");
    assert_updated(step(&r, 13), "demo://resource/static/document/features.md");
    assert_eq!(
        step(&r, 14)["result"]["contents"][0]["text"],
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
