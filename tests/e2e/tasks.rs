//! Tasks through the gateway (issue 12, item 4): the 2025-11-25 tasks of
//! legacy fixture children to a legacy client, and the
//! `io.modelcontextprotocol/tasks` extension of modern fixture children to a
//! modern client, each routed by task id to the child that made it. Two
//! fixtures behind one gateway both number their tasks from "1".

use crate::common::*;
use serde_json::{Value, json};

const EXT: &str = "io.modelcontextprotocol/tasks";
const RELATED: &str = "io.modelcontextprotocol/related-task";

/// Two fixtures with tasks, `extra` flags for both.
fn two_with_tasks(extra: &[&str]) -> Value {
    let mut flags = vec!["--tasks"];
    flags.extend(extra);
    json!({"alpha": fixture("alpha", &flags), "beta": fixture("beta", &flags)})
}

/// A modern request's params; `tasks` puts the extension in the client's
/// capabilities.
fn modern(mut p: Value, tasks: bool) -> Value {
    let caps = if tasks {
        json!({"extensions": {EXT: {}}})
    } else {
        json!({})
    };
    p["_meta"] = json!({
        "io.modelcontextprotocol/protocolVersion": "2026-07-28",
        "io.modelcontextprotocol/clientCapabilities": caps,
        "io.modelcontextprotocol/clientInfo": {"name": "tasks-e2e", "version": "1"},
    });
    p
}

/// A legacy `initialize` that declares the client's own task support.
fn initialize(c: &mut Mcp) -> Value {
    let r = c.request(
        "initialize",
        json!({"protocolVersion": "2025-11-25",
               "capabilities": {"tasks": {"requests": {"sampling": {"createMessage": {}}}}, "sampling": {}},
               "clientInfo": {"name": "tasks-e2e", "version": "1"}}),
    );
    c.send(&json!({"jsonrpc": "2.0", "method": "notifications/initialized"}));
    r
}

/// Waits for the status notification of `task` (`others` first).
fn status_of(c: &mut Mcp, others: &mut Vec<Value>, task: &str) -> Value {
    loop {
        if let Some(at) = others.iter().position(|m| {
            m["method"] == "notifications/tasks/status" && m["params"]["taskId"] == task
        }) {
            return others.remove(at);
        }
        others.push(c.recv());
    }
}

#[test]
fn legacy_tasks_of_two_children_with_the_same_ids_route_by_task_id() {
    let srv = Server::start(two_with_tasks(&[]), &[]);
    let mut c = srv.connect();
    let init = initialize(&mut c);
    assert_eq!(
        init["result"]["capabilities"]["tasks"],
        json!({"list": {}, "cancel": {}, "requests": {"tools": {"call": {}}}}),
        "{init}"
    );
    let instructions = init["result"]["instructions"].as_str().unwrap();
    assert_eq!(
        instructions.matches("client tasks null").count(),
        2,
        "the client's own task capability never reaches a child: {instructions}"
    );
    let list = c.request("tools/list", json!({}));
    let tools = names(&list, "tools");
    assert!(
        tools.contains(&"task_echo".to_owned()) && tools.contains(&"task_echo_1".to_owned()),
        "{list}"
    );

    // Both children call their first task "1"; the client sees two ids.
    let mut others = Vec::new();
    let mut ids = Vec::new();
    for (tool, text) in [("task_echo", "from alpha"), ("task_echo_1", "from beta")] {
        let r = c.request_with(
            "tools/call",
            json!({"name": tool, "arguments": {"text": text}, "task": {"ttl": 60000}}),
            &mut others,
        );
        assert_eq!(r["result"]["task"]["status"], "working", "{r}");
        ids.push(r["result"]["task"]["taskId"].as_str().unwrap().to_owned());
    }
    assert_eq!(ids, ["0~1", "1~1"]);
    for id in &ids {
        let n = status_of(&mut c, &mut others, id);
        assert_eq!(n["params"]["status"], "completed", "{n}");
    }
    let g = c.request("tasks/get", json!({"taskId": "1~1"}));
    assert_eq!(
        (&g["result"]["taskId"], &g["result"]["status"]),
        (&json!("1~1"), &json!("completed")),
        "{g}"
    );
    for (id, text) in [("0~1", "from alpha"), ("1~1", "from beta")] {
        let r = c.request("tasks/result", json!({"taskId": id}));
        assert_eq!(crate::common::text(&r), text, "{r}");
        assert_eq!(r["result"]["_meta"][RELATED]["taskId"], id, "{r}");
    }

    // A held task is listed and cancelled at its child.
    let r = c.request(
        "tools/call",
        json!({"name": "task_echo_1", "arguments": {"text": "held", "hold": true}, "task": {}}),
    );
    assert_eq!(r["result"]["task"]["taskId"], "1~2", "{r}");
    let l = c.request("tasks/list", json!({}));
    let listed: Vec<&str> = l["result"]["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["taskId"].as_str().unwrap())
        .collect();
    assert_eq!(listed, ["0~1", "1~1", "1~2"], "{l}");
    let mut others = Vec::new();
    let x = c.request_with("tasks/cancel", json!({"taskId": "1~2"}), &mut others);
    assert_eq!(x["result"]["status"], "cancelled", "{x}");
    assert_eq!(x["result"]["taskId"], "1~2", "{x}");
    let n = status_of(&mut c, &mut others, "1~2");
    assert_eq!(n["params"]["status"], "cancelled", "{n}");
    // The child's own refusal passes: task 0~1 is finished.
    let x = c.request("tasks/cancel", json!({"taskId": "0~1"}));
    assert_error(&x, -32602, "already completed");

    // Ids the gateway never issued are refused naming them; the session goes on.
    for id in ["2~1", "1", "0~7"] {
        let r = c.request("tasks/get", json!({"taskId": id}));
        assert_error(&r, -32602, &format!("unknown task: {id}"));
    }
    let r = c.request("tasks/result", json!({}));
    assert_error(&r, -32602, "missing params.taskId");
    assert_eq!(
        text(&c.call("echo", json!({"text": "still here"}))),
        "still here"
    );
}

#[test]
fn modern_tasks_of_two_children_with_the_same_ids_route_by_task_id() {
    let srv = Server::start(two_with_tasks(&["--modern"]), &[]);
    let mut c = srv.connect();
    let d = c.request("server/discover", modern(json!({}), true));
    assert_eq!(
        d["result"]["capabilities"]["extensions"][EXT],
        json!({}),
        "{d}"
    );
    assert!(d["result"]["capabilities"].get("tasks").is_none(), "{d}");
    c.request("tools/list", modern(json!({}), true));
    let mut ids = Vec::new();
    for (tool, text) in [("task_echo", "from alpha"), ("task_echo_1", "from beta")] {
        let r = c.request(
            "tools/call",
            modern(json!({"name": tool, "arguments": {"text": text}}), true),
        );
        assert_eq!(r["result"]["resultType"], "task", "{r}");
        ids.push(r["result"]["taskId"].as_str().unwrap().to_owned());
    }
    assert_eq!(ids, ["0~1", "1~1"]);
    for (id, text) in [("0~1", "from alpha"), ("1~1", "from beta")] {
        let g = c.request("tasks/get", modern(json!({"taskId": id}), true));
        let res = &g["result"];
        assert_eq!(res["resultType"], "complete", "{g}");
        assert_eq!(
            (&res["taskId"], &res["status"]),
            (&json!(id), &json!("completed"))
        );
        assert_eq!(res["result"]["content"][0]["text"], text, "{g}");
    }
    let u = c.request(
        "tasks/update",
        modern(json!({"taskId": "1~1", "inputResponses": {}}), true),
    );
    assert_eq!(u["result"]["resultType"], "complete", "{u}");
    let r = c.request(
        "tools/call",
        modern(
            json!({"name": "task_echo", "arguments": {"text": "h", "hold": true}}),
            true,
        ),
    );
    assert_eq!(r["result"]["taskId"], "0~2", "{r}");
    let x = c.request("tasks/cancel", modern(json!({"taskId": "0~2"}), true));
    assert_eq!(x["result"]["resultType"], "complete", "{x}");
    let g = c.request("tasks/get", modern(json!({"taskId": "0~2"}), true));
    assert_eq!(g["result"]["status"], "cancelled", "{g}");

    let r = c.request("tasks/get", modern(json!({"taskId": "2~1"}), true));
    assert_error(&r, -32602, "unknown task: 2~1");
    for method in ["tasks/result", "tasks/list"] {
        let r = c.request(method, modern(json!({"taskId": "0~1"}), true));
        assert_eq!(r["error"]["code"], -32601, "{r}");
    }
    // Without the extension: no tasks/*, and the same tool answers at once.
    let r = c.request("tasks/get", modern(json!({"taskId": "0~1"}), false));
    assert_error(&r, -32021, EXT);
    let r = c.request(
        "tools/call",
        modern(
            json!({"name": "task_echo", "arguments": {"text": "now"}}),
            false,
        ),
    );
    assert_eq!(r["result"]["resultType"], "complete", "{r}");
    assert_eq!(text(&r), "now");
}

#[test]
fn tasks_do_not_cross_eras() {
    let servers = json!({"legacy": fixture("legacy", &["--tasks"]),
                         "modern": fixture("modern", &["--modern", "--tasks"])});
    let srv = Server::start(servers.clone(), &[]);

    // A legacy client: the legacy child's tasks only; the modern child
    // gets no extension, so it answers the task-asking call at once.
    let mut c = srv.connect();
    let init = initialize(&mut c);
    let caps = &init["result"]["capabilities"];
    assert_eq!(caps["tasks"]["list"], json!({}), "{init}");
    assert!(caps.get("extensions").is_none(), "{init}");
    c.request("tools/list", json!({}));
    let r = c.request(
        "tools/call",
        json!({"name": "task_echo_1", "arguments": {"text": "sync"}, "task": {}}),
    );
    assert_eq!(text(&r), "sync", "{r}");
    assert!(r["result"].get("task").is_none(), "{r}");

    // A modern client: the extension of the modern child only; the legacy
    // child gets no `task` param, so it answers at once.
    let mut m = srv.connect();
    let d = m.request("server/discover", modern(json!({}), true));
    let caps = &d["result"]["capabilities"];
    assert!(caps.get("tasks").is_none(), "{d}");
    assert_eq!(caps["extensions"][EXT], json!({}), "{d}");
    m.request("tools/list", modern(json!({}), true));
    let r = m.request(
        "tools/call",
        modern(
            json!({"name": "task_echo", "arguments": {"text": "sync"}}),
            true,
        ),
    );
    assert_eq!(r["result"]["resultType"], "complete", "{r}");
    assert_eq!(text(&r), "sync");
}

#[test]
fn a_modern_tasks_status_reaches_the_stream_that_named_it() {
    let srv = Server::start(two_with_tasks(&["--modern"]), &[]);
    let mut c = srv.connect();
    c.request("server/discover", modern(json!({}), true));
    c.request("tools/list", modern(json!({}), true));
    let r = c.request(
        "tools/call",
        modern(
            json!({"name": "task_echo_1", "arguments": {"text": "t", "hold": true}}),
            true,
        ),
    );
    assert_eq!(r["result"]["taskId"], "1~1", "{r}");
    // Beta's task, an unknown one, and one never made: only the first.
    c.send(
        &json!({"jsonrpc": "2.0", "id": "L", "method": "subscriptions/listen",
        "params": modern(json!({"notifications": {"taskIds": ["1~1", "0~1", "1~7"]}}), true)}),
    );
    let ack = c.recv();
    assert_eq!(
        ack["method"], "notifications/subscriptions/acknowledged",
        "{ack}"
    );
    assert_eq!(
        ack["params"]["notifications"],
        json!({"taskIds": ["1~1"]}),
        "{ack}"
    );
    // Beta pushes a status on its listen: it reaches the stream with the
    // gateway's task id and the stream's id.
    let mut others = Vec::new();
    let r = c.request_with(
        "tools/call",
        modern(json!({"name": "notify_1", "arguments": {}}), true),
        &mut others,
    );
    assert!(text(&r).starts_with("notified"), "{r}"); // its list changes too
    while !others.iter().any(|m| m["method"] == "notifications/tasks") {
        others.push(c.recv());
    }
    let n = others
        .iter()
        .find(|m| m["method"] == "notifications/tasks")
        .unwrap();
    assert_eq!(n["params"]["taskId"], "1~1", "{n}");
    assert_eq!(
        n["params"]["_meta"]["io.modelcontextprotocol/subscriptionId"], "L",
        "{n}"
    );
    // Asked without the extension declared: -32021 naming it.
    let r = c.request(
        "subscriptions/listen",
        modern(json!({"notifications": {"taskIds": ["1~1"]}}), false),
    );
    assert_error(&r, -32021, EXT);
}
