//! The merged MCP server a session gets: every method through two fixture
//! children, routing by name, errors, and the messages that children and
//! client send each other.

use crate::common::*;
use serde_json::{Value, json};

/// A gateway over alpha and beta and an initialized session on it.
fn merged() -> (Server, Mcp) {
    Server::with_session(two_children(), &[])
}

#[test]
fn initialize_answers_as_the_gateway_with_merged_capabilities_and_instructions() {
    let srv = Server::start(two_children(), &[]);
    let init = srv.connect().initialize();
    assert_eq!(init["result"]["protocolVersion"], "2025-06-18");
    assert_eq!(
        init["result"]["serverInfo"]["name"],
        "m2m-mcp-server-ssh-server"
    );
    let caps = &init["result"]["capabilities"];
    assert_eq!(caps["tools"]["listChanged"], true, "{init}");
    assert_eq!(caps["resources"]["subscribe"], true, "{init}");
    let instr = init["result"]["instructions"].as_str().unwrap();
    assert!(
        instr.contains("[alpha] fixture alpha; client said \"itest\""),
        "{instr}"
    );
}

#[test]
fn tools_list_merges_every_page_of_each_child_and_renames_duplicates_in_config_order() {
    let (_srv, mut c) = merged();
    let tools = c.request("tools/list", json!({}));
    let t = names(&tools, "tools");
    assert_eq!(
        t,
        [
            "echo",
            "add",
            "whoami",
            "progress",
            "sample",
            "slow",
            "crash",
            "echo_1",
            "add_1",
            "whoami_1",
            "progress_1",
            "sample_1",
            "slow_1",
            "crash_1"
        ]
    );
    assert!(tools["result"].get("nextCursor").is_none(), "{tools}");
}

#[test]
fn tools_call_reaches_the_child_that_owns_the_name_and_its_result_passes_through() {
    let (_srv, mut c) = merged();
    let r = c.call("whoami_1", json!({}));
    assert!(text(&r).starts_with("beta "), "{r}");
    let r = c.call("echo", json!({"text": "hi"}));
    assert_eq!(text(&r), "hi");
    assert_eq!(r["result"]["_meta"]["from"], "alpha", "{r}");
}

#[test]
fn a_string_request_id_comes_back_unchanged() {
    let (_srv, mut c) = merged();
    c.send(
        &json!({"jsonrpc": "2.0", "id": "str-id", "method": "tools/call",
        "params": {"name": "add_1", "arguments": {"a": 2, "b": 3}}}),
    );
    let r = c.recv();
    assert_eq!(r["id"], "str-id");
    assert_eq!(text(&r), "5");
}

#[test]
fn prompts_are_merged_renamed_and_fetched_from_their_child() {
    let (_srv, mut c) = merged();
    let p = c.request("prompts/list", json!({}));
    assert_eq!(names(&p, "prompts"), ["greet", "greet_1"]);
    assert_eq!(greeting(&mut c, "greet_1", "bob"), "hello bob from beta");
}

/// The text of prompt `name` (a fixture's `greet`) for `who`.
fn greeting(c: &mut Mcp, name: &str, who: &str) -> Value {
    let g = c.request(
        "prompts/get",
        json!({"name": name, "arguments": {"who": who}}),
    );
    g["result"]["messages"][0]["content"]["text"].clone()
}

#[test]
fn resources_and_templates_of_every_child_are_listed() {
    let (_srv, mut c) = merged();
    let rl = c.request("resources/list", json!({}));
    assert_eq!(rl["result"]["resources"].as_array().unwrap().len(), 2);
    let tl = c.request("resources/templates/list", json!({}));
    assert_eq!(
        tl["result"]["resourceTemplates"].as_array().unwrap().len(),
        2
    );
}

#[test]
fn resources_read_goes_to_the_child_that_owns_the_uri_or_its_template() {
    let (_srv, mut c) = merged();
    for (uri, owner) in [
        ("fixture://beta/info", "beta"),
        ("fixture://alpha/items/42", "alpha"),
    ] {
        let rr = c.request("resources/read", json!({"uri": uri}));
        assert_eq!(
            rr["result"]["contents"][0]["text"],
            format!("{uri} served by {owner}")
        );
    }
}

#[test]
fn resource_subscribe_and_unsubscribe_are_answered() {
    let (_srv, mut c) = merged();
    for m in ["resources/subscribe", "resources/unsubscribe"] {
        let r = c.request(m, json!({"uri": "fixture://beta/info"}));
        assert_eq!(r["result"], json!({}), "{m}: {r}");
    }
}

#[test]
fn completion_is_routed_by_prompt_ref_and_by_resource_template_ref() {
    let (_srv, mut c) = merged();
    let cp = c.request(
        "completion/complete",
        json!({"ref": {"type": "ref/prompt", "name": "greet_1"},
        "argument": {"name": "who", "value": ""}}),
    );
    assert_eq!(cp["result"]["completion"]["values"][0], "beta-1");
    let cr = c.request(
        "completion/complete",
        json!({"ref": {"type": "ref/resource", "uri": "fixture://alpha/items/{id}"},
        "argument": {"name": "id", "value": ""}}),
    );
    assert_eq!(cr["result"]["completion"]["values"][0], "alpha-1");
}

#[test]
fn logging_set_level_and_ping_get_empty_results() {
    let (_srv, mut c) = merged();
    let r = c.request("logging/setLevel", json!({"level": "debug"}));
    assert_eq!(r["result"], json!({}), "{r}");
    assert_eq!(c.request("ping", json!({}))["result"], json!({}));
}

#[test]
fn unknown_tool_prompt_and_resource_names_get_invalid_params() {
    let (_srv, mut c) = merged();
    for (m, p, needle) in [
        ("tools/call", json!({"name": "nope"}), "unknown tool: nope"),
        (
            "prompts/get",
            json!({"name": "nope"}),
            "unknown prompt: nope",
        ),
        (
            "resources/read",
            json!({"uri": "nope://x"}),
            "unknown resource: nope://x",
        ),
    ] {
        assert_error(&c.request(m, p), -32602, needle);
    }
}

#[test]
fn an_unknown_method_and_a_made_up_cursor_get_json_rpc_errors() {
    let (_srv, mut c) = merged();
    assert_error(&c.request("made/up", json!({})), -32601, "made/up");
    // server/discover on an initialize-era connection: eras_core.
    let e = c.request("tools/list", json!({"cursor": "made-up"}));
    assert_error(&e, -32602, "");
}

#[test]
fn child_notifications_reach_the_client_and_progress_keeps_the_clients_token() {
    let (_srv, mut c) = merged();
    let mut others = Vec::new();
    let r = c.request_with(
        "tools/call",
        json!({"name": "progress_1", "arguments": {}, "_meta": {"progressToken": "tok-7"}}),
        &mut others,
    );
    assert_eq!(text(&r), "done");
    assert!(
        others
            .iter()
            .any(|m| m["method"] == "notifications/message"
                && m["params"]["data"] == "hello from beta"),
        "{others:?}"
    );
    let progress: Vec<&Value> = others
        .iter()
        .filter(|m| m["method"] == "notifications/progress")
        .collect();
    assert_eq!(progress.len(), 3, "{others:?}");
    assert!(
        progress
            .iter()
            .all(|m| m["params"]["progressToken"] == "tok-7"),
        "{progress:?}"
    );
}

#[test]
fn sampling_and_roots_requests_of_a_child_round_trip_through_the_client() {
    let (_srv, mut c) = merged();
    c.send(&json!({"jsonrpc": "2.0", "id": 77, "method": "tools/call", "params": {"name": "sample_1", "arguments": {}}}));
    let s = c.recv();
    assert_eq!(s["method"], "sampling/createMessage");
    assert!(s["id"].is_u64(), "{s}");
    c.send(
        &json!({"jsonrpc": "2.0", "id": s["id"], "result": {"role": "assistant",
        "content": {"type": "text", "text": "from client"}, "model": "m"}}),
    );
    let roots = c.recv();
    assert_eq!(roots["method"], "roots/list");
    c.send(
        &json!({"jsonrpc": "2.0", "id": roots["id"], "result": {"roots": [{"uri": "file:///w"}]}}),
    );
    let done = c.recv();
    assert_eq!(done["id"], 77);
    let sc = &done["result"]["structuredContent"];
    assert_eq!(sc["sampling"]["id"], "s1", "child sees its own id");
    assert_eq!(sc["sampling"]["result"]["content"]["text"], "from client");
    assert_eq!(sc["roots"]["result"]["roots"][0]["uri"], "file:///w");
}

/// Sends call 90 to beta's `slow` (answered after 300 ms), then cancels it.
/// The tools are listed first so the call goes to beta at once: a call made
/// before any tools/list waits for the gateway's own listing, and a
/// cancellation that arrives meanwhile is not applied to it.
fn call_slow_1_and_cancel_it(c: &mut Mcp) {
    c.request("tools/list", json!({}));
    c.send(&json!({"jsonrpc": "2.0", "id": 90, "method": "tools/call", "params": {"name": "slow_1", "arguments": {"ms": 300}}}));
    c.send(&json!({"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": 90}}));
}

/// What each child receives is recorded on its stdin: the cancellation goes
/// to beta, under the id beta knows the call by, and nothing to alpha.
#[test]
fn cancellation_goes_only_to_the_child_that_holds_the_request_under_its_id() {
    let dir = TempDir::new("wire");
    let (a, b) = (dir.path().join("alpha.in"), dir.path().join("beta.in"));
    let (_srv, mut c) = Server::with_session(
        json!({"alpha": recorded_fixture("alpha", &a), "beta": recorded_fixture("beta", &b)}),
        &[],
    );
    call_slow_1_and_cancel_it(&mut c);
    let cancelled = |m: &Value| m["method"] == "notifications/cancelled";
    assert!(
        eventually(|| recorded_lines(&b).iter().any(cancelled)),
        "beta got no cancellation: {:?}",
        recorded_lines(&b)
    );
    let to_beta = recorded_lines(&b);
    let call = to_beta
        .iter()
        .find(|m| m["method"] == "tools/call" && m["params"]["name"] == "slow")
        .expect("beta got the call");
    let note = to_beta.iter().find(|m| cancelled(m)).unwrap();
    assert_eq!(note["params"]["requestId"], call["id"], "{to_beta:?}");
    // alpha reads its stdin in order: once it has this call, it would have
    // had a cancellation sent before it.
    assert_eq!(text(&c.call("echo", json!({"text": "after"}))), "after");
    let to_alpha = recorded_lines(&a);
    assert!(
        to_alpha
            .iter()
            .any(|m| m["params"]["arguments"]["text"] == "after"),
        "{to_alpha:?}"
    );
    assert!(!to_alpha.iter().any(cancelled), "{to_alpha:?}");
}

#[test]
fn a_cancelled_request_gets_no_answer_even_when_the_child_sends_one() {
    let (_srv, mut c) = merged();
    // The fixture ignores cancellation and answers anyway.
    call_slow_1_and_cancel_it(&mut c);
    // beta answers this later call after it answered the cancelled one, on
    // the same pipe, so a forwarded late answer would arrive first.
    let mut others = Vec::new();
    let r = c.request_with(
        "tools/call",
        json!({"name": "slow_1", "arguments": {"ms": 600}}),
        &mut others,
    );
    assert_eq!(text(&r), "slept");
    assert!(!others.iter().any(|m| m["id"] == 90), "{others:?}");
}

/// alpha and beta work; `broken` refuses to initialize, `missing` cannot start.
fn with_failing_children() -> Value {
    json!({
        "alpha": fixture("alpha", &[]),
        "broken": fixture("broken", &["--fail-init"]),
        "missing": {"command": "/nonexistent/mcp-server"},
        "beta": fixture("beta", &[]),
    })
}

#[test]
fn children_that_fail_to_start_or_initialize_are_left_out_and_the_rest_serve() {
    let srv = Server::start(with_failing_children(), &[]);
    let mut c = srv.connect();
    let init = c.initialize();
    assert!(init["result"].is_object(), "{init}");
    let t = names(&c.request("tools/list", json!({})), "tools");
    assert_eq!(t.len(), 14, "only alpha's and beta's: {t:?}");
    let r = c.call("echo_1", json!({"text": "beta lives"}));
    assert_eq!(text(&r), "beta lives");
}

/// The log is where the operator learns why a server was left out (the
/// client only sees fewer tools), so the log line is the behaviour here.
#[test]
fn a_left_out_child_is_logged_with_its_reason_and_stderr() {
    let srv = Server::start(with_failing_children(), &[]);
    srv.session();
    assert!(srv.wait_log("server missing failed to start"));
    assert!(srv.wait_log(
        "server broken left out: initialize failed: fixture refuses to initialize; stderr: fixture broken starting"
    ));
}

#[test]
fn a_crashed_child_fails_only_its_own_requests() {
    let (_srv, mut c) = merged();
    assert_error(&c.call("crash", json!({})), -32002, "alpha");
    assert_eq!(
        text(&c.call("echo_1", json!({"text": "beta lives"}))),
        "beta lives"
    );
    let e = c.call("echo", json!({}));
    assert!(
        e["error"]["message"].as_str().unwrap().contains("alpha"),
        "{e}"
    );
}

#[test]
fn env_and_cwd_from_the_config_reach_the_child() {
    let dir = TempDir::new("cwd");
    let mut spec = fixture("alpha", &[]);
    spec["env"] = json!({"FIXTURE_ENV": "from-config"});
    spec["cwd"] = json!(dir.path());
    let (_srv, mut c) = Server::with_session(json!({"alpha": spec}), &[]);
    let r = c.call("whoami", json!({}));
    let who = text(&r);
    assert!(who.contains("env=from-config"), "{who}");
    assert!(
        who.contains(&format!("cwd={}", dir.path().display())),
        "{who}"
    );
}

#[test]
fn name_prefix_exposes_a_servers_tools_and_prompts_under_it() {
    let mut beta = fixture("beta", &["--echo-only"]);
    beta["namePrefix"] = json!("beta.");
    let (_srv, mut c) = Server::with_session(
        json!({"alpha": fixture("alpha", &["--echo-only"]), "beta": beta}),
        &[],
    );
    assert_eq!(
        names(&c.request("tools/list", json!({})), "tools"),
        ["echo", "beta.echo"]
    );
    assert_eq!(
        names(&c.request("prompts/list", json!({})), "prompts"),
        ["greet", "beta.greet"]
    );
    let r = c.call("beta.echo", json!({"text": "via prefix"}));
    assert_eq!(r["result"]["_meta"]["from"], "beta");
    assert_eq!(greeting(&mut c, "beta.greet", "x"), "hello x from beta");
}

#[test]
fn bad_lines_get_errors_and_the_session_goes_on() {
    let (_srv, mut c) = Server::with_session(alpha(), &["--max-line-bytes", "4096"]);
    c.send_raw(b"this is not json\n");
    let e = c.recv();
    assert_eq!(e["error"]["code"], -32700, "{e}");
    assert_eq!(e["id"], Value::Null);
    c.send_raw(b"{\"id\": 5, \"method\": \"ping\"}\n");
    assert_eq!(c.recv()["error"]["code"], -32600);
    let big = format!(
        "{{\"jsonrpc\":\"2.0\",\"id\":6,\"method\":\"ping\",\"params\":{{\"x\":\"{}\"}}}}\n",
        "a".repeat(10_000)
    );
    c.send_raw(big.as_bytes());
    assert_error(&c.recv(), -32600, "4096");
    let r = c.call("echo", json!({"text": "still here"}));
    assert_eq!(text(&r), "still here");
}

/// A bare CR between the tokens of a call's arguments is whitespace to
/// JSON, but a child that reads lines the Python or Node way ends a line
/// there: the gateway passes arguments on as text, so it must never pass a
/// CR, or a second request could ride inside the first.
#[test]
fn a_request_hidden_behind_a_cr_in_the_arguments_never_reaches_the_child() {
    let dir = TempDir::new("wire");
    let a = dir.path().join("alpha.in");
    let (_srv, mut c) = Server::with_session(json!({"alpha": recorded_fixture("alpha", &a)}), &[]);
    c.request("tools/list", json!({}));
    let line = "{\"jsonrpc\":\"2.0\",\"id\":\"cr\",\"method\":\"tools/call\",\"params\":{\"name\":\"echo\",\"arguments\":{\"text\":\"one\",\"x\":\r{\"jsonrpc\":\"2.0\",\"id\":99,\"method\":\"tools/call\",\"params\":{\"name\":\"crash\",\"arguments\":{}}}\r}}}\n";
    c.send_raw(line.as_bytes());
    let answer = loop {
        let m = c.recv();
        if m["id"] == "cr" {
            break m;
        }
    };
    assert_eq!(text(&answer), "one", "{answer}");
    let raw = std::fs::read(&a).unwrap();
    assert!(!raw.contains(&b'\r'), "{}", String::from_utf8_lossy(&raw));
    let calls: Vec<Value> = recorded_lines(&a)
        .into_iter()
        .filter(|m| m["method"] == "tools/call")
        .collect();
    assert_eq!(calls.len(), 1, "{calls:?}");
    assert_eq!(
        calls[0]["params"]["arguments"]["x"]["params"]["name"],
        "crash"
    );
}
