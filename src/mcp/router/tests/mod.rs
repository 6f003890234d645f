//! Every routing rule, without SSH or processes.

use super::*;
use crate::mcp::jsonrpc::{INVALID_PARAMS, INVALID_REQUEST, METHOD_NOT_FOUND};
use serde_json::json;

fn router(n: usize) -> Router {
    Router::new(
        (0..n)
            .map(|i| ChildInfo::new(&format!("s{i}"), Duration::from_secs(10)))
            .collect(),
        Options {
            max_total: Duration::from_secs(60),
            server_name: "gw".into(),
            server_version: "0".into(),
            audit: false,
        },
        Access::default(),
    )
}

/// One child `s0` with `prefix`, the key's tool filter, audit on or off.
fn one_child(prefix: &str, tools: Option<NameCheck>, audit: bool) -> Router {
    let mut info = ChildInfo::new("s0", Duration::from_secs(10));
    info.prefix = prefix.into();
    let opts = Options {
        max_total: Duration::from_secs(60),
        server_name: "gw".into(),
        server_version: "0".into(),
        audit,
    };
    let access = Access {
        tools,
        prompts: None,
    };
    Router::new(vec![info], opts, access)
}

/// Lists tools, child `i` answering `tools(i)`; the last actions (the
/// merged list for the client).
fn list_tools(r: &mut Router, now: Instant, tools: impl Fn(usize) -> Value) -> Vec<Action> {
    let mut req = json!({"jsonrpc":"2.0","id":"list","method":"tools/list"});
    if r.era.modern() {
        req["params"] = json!({"_meta": meta(json!({}))});
    }
    let a = r.from_client(req, now);
    let mut last = Vec::new();
    for (i, m) in to_child(&a) {
        let result = json!({"tools": tools(i)});
        last = r.from_child(
            i,
            json!({"jsonrpc":"2.0","id":m["id"],"result":result}),
            now,
        );
    }
    last
}

fn to_child(a: &[Action]) -> Vec<(usize, Value)> {
    a.iter()
        .filter_map(|x| match x {
            Action::ToChild(i, v) => Some((*i, v.clone())),
            _ => None,
        })
        .collect()
}

fn to_client(a: &[Action]) -> Vec<Value> {
    a.iter()
        .filter_map(|x| match x {
            Action::ToClient(v) => Some(v.clone()),
            _ => None,
        })
        .collect()
}

/// Initializes every child with the given capabilities.
fn init(r: &mut Router, caps: Value, now: Instant) {
    let a = r.from_client(
        json!({"jsonrpc":"2.0","id":0,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{"sampling":{}},"clientInfo":{"name":"t","version":"1"}}}),
        now,
    );
    let sent = to_child(&a);
    assert_eq!(sent.len(), r.children.len());
    let mut last = a.clone();
    for (i, m) in sent {
        assert_eq!(m["params"]["capabilities"]["sampling"], json!({}));
        last = r.from_child(
            i,
            json!({"jsonrpc":"2.0","id":m["id"],"result":{"protocolVersion":"2025-06-18","capabilities":caps,"serverInfo":{"name":"x","version":"1"}}}),
            now,
        );
    }
    let reply = to_client(&last);
    assert_eq!(reply[0]["id"], 0);
    assert_eq!(reply[0]["result"]["protocolVersion"], "2025-06-18");
}

#[test]
fn lists_merge_with_pagination_and_duplicates_route_back() {
    let now = Instant::now();
    let mut r = router(2);
    init(&mut r, json!({"tools":{"listChanged":true}}), now);
    let a = r.from_client(json!({"jsonrpc":"2.0","id":"L","method":"tools/list"}), now);
    let sent = to_child(&a);
    assert_eq!(sent.len(), 2);
    // child 0 pages: first page then a second one.
    let a = r.from_child(0, json!({"jsonrpc":"2.0","id":sent[0].1["id"],"result":{"tools":[{"name":"echo"}],"nextCursor":"p2"}}), now);
    let next = to_child(&a);
    assert_eq!(next[0].1["params"]["cursor"], "p2");
    r.from_child(
        0,
        json!({"jsonrpc":"2.0","id":next[0].1["id"],"result":{"tools":[{"name":"add"}]}}),
        now,
    );
    let a = r.from_child(1, json!({"jsonrpc":"2.0","id":sent[1].1["id"],"result":{"tools":[{"name":"echo","extra":{"k":1}}]}}), now);
    let reply = &to_client(&a)[0];
    assert_eq!(reply["id"], "L");
    let names: Vec<&str> = reply["result"]["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["echo", "add", "echo_1"]);
    assert_eq!(reply["result"]["tools"][2]["extra"]["k"], 1);
    assert!(reply["result"].get("nextCursor").is_none());
    // echo_1 goes to child 1 under its own name with a fresh id.
    let a = r.from_client(json!({"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"echo_1","arguments":{}}}), now);
    let (c, m) = &to_child(&a)[0];
    assert_eq!(*c, 1);
    assert_eq!(m["params"]["name"], "echo");
    let a = r.from_child(
        1,
        json!({"jsonrpc":"2.0","id":m["id"],"result":{"content":[]}}),
        now,
    );
    assert_eq!(to_client(&a)[0]["id"], 7);
    // unknown tool
    let a = r.from_client(
        json!({"jsonrpc":"2.0","id":8,"method":"tools/call","params":{"name":"zzz"}}),
        now,
    );
    assert_eq!(to_client(&a)[0]["error"]["code"], INVALID_PARAMS);
    assert!(
        to_client(&a)[0]["error"]["message"]
            .as_str()
            .unwrap()
            .contains("zzz")
    );
    // a cursor the gateway did not mint
    let a = r.from_client(
        json!({"jsonrpc":"2.0","id":9,"method":"tools/list","params":{"cursor":"x"}}),
        now,
    );
    assert_eq!(to_client(&a)[0]["error"]["code"], INVALID_PARAMS);
}

#[test]
fn forwarded_responses_pass_through_as_text_with_the_client_id() {
    let now = Instant::now();
    let mut r = router(1);
    init(&mut r, json!({"tools":{}}), now);
    let a = r.from_client(json!({"jsonrpc":"2.0","id":"L","method":"tools/list"}), now);
    let (_, l) = &to_child(&a)[0];
    // A list answer (a fan-out part) arrives raw and still merges.
    let line = format!(
        r#"{{"jsonrpc":"2.0","id":{},"result":{{"tools":[{{"name":"t"}}]}}}}"#,
        l["id"]
    );
    let a = r.from_child_incoming(0, jsonrpc::parse_child_line(line.as_bytes()).unwrap(), now);
    assert_eq!(to_client(&a)[0]["result"]["tools"][0]["name"], "t");
    let a = r.from_client(
        json!({"jsonrpc":"2.0","id":"c1","method":"tools/call","params":{"name":"t"}}),
        now,
    );
    let (_, call) = &to_child(&a)[0];
    let line = format!(
        r#"{{"jsonrpc":"2.0","id":{},"result":{{"z":1, "a" : [ ]}}}}"#,
        call["id"]
    );
    let a = r.from_child_incoming(0, jsonrpc::parse_child_line(line.as_bytes()).unwrap(), now);
    let Action::ToClientRaw(bytes) = &a[0] else {
        panic!("{a:?}")
    };
    assert_eq!(
        std::str::from_utf8(bytes).unwrap(),
        "{\"jsonrpc\":\"2.0\",\"id\":\"c1\",\"result\":{\"z\":1, \"a\" : [ ]}}\n"
    );
    assert!(r.next_deadline().is_none());
    // A late duplicate is dropped.
    let a = r.from_child_incoming(0, jsonrpc::parse_child_line(line.as_bytes()).unwrap(), now);
    assert!(a.is_empty());
}

#[test]
fn call_before_list_fetches_the_map_first() {
    let now = Instant::now();
    let mut r = router(1);
    init(&mut r, json!({"tools":{}}), now);
    let a = r.from_client(
        json!({"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo"}}),
        now,
    );
    let (_, list) = &to_child(&a)[0];
    assert_eq!(list["method"], "tools/list");
    let a = r.from_child(
        0,
        json!({"jsonrpc":"2.0","id":list["id"],"result":{"tools":[{"name":"echo"}]}}),
        now,
    );
    let (_, call) = &to_child(&a)[0];
    assert_eq!(call["method"], "tools/call");
    assert!(to_client(&a).is_empty());
}

#[test]
fn child_requests_get_fresh_ids_and_answers_go_back() {
    let now = Instant::now();
    let mut r = router(2);
    init(&mut r, json!({}), now);
    let a = r.from_child(1, json!({"jsonrpc":"2.0","id":"abc","method":"sampling/createMessage","params":{"_meta":{"progressToken":"t1"}}}), now);
    let m = &to_client(&a)[0];
    let gid = m["id"].clone();
    assert!(gid.is_u64());
    // client progress for that token goes to child 1 only
    let a = r.from_client(json!({"jsonrpc":"2.0","method":"notifications/progress","params":{"progressToken":"t1","progress":1}}), now);
    assert_eq!(to_child(&a)[0].0, 1);
    let a = r.from_client(
        json!({"jsonrpc":"2.0","id":gid,"result":{"role":"assistant"}}),
        now,
    );
    let (c, back) = &to_child(&a)[0];
    assert_eq!(*c, 1);
    assert_eq!(back["id"], "abc");
    // an unknown method is forwarded too: the client decides
    let a = r.from_child(
        0,
        json!({"jsonrpc":"2.0","id":5,"method":"future/thing"}),
        now,
    );
    assert_eq!(to_client(&a)[0]["method"], "future/thing");
}

#[test]
fn cancellation_reaches_the_right_child_with_its_id() {
    let now = Instant::now();
    let mut r = router(2);
    init(&mut r, json!({"prompts":{}}), now);
    let a = r.from_client(json!({"jsonrpc":"2.0","id":1,"method":"prompts/list"}), now);
    for (i, m) in to_child(&a) {
        r.from_child(
            i,
            json!({"jsonrpc":"2.0","id":m["id"],"result":{"prompts":[{"name":format!("p{i}")}]}}),
            now,
        );
    }
    let a = r.from_client(
        json!({"jsonrpc":"2.0","id":"x","method":"prompts/get","params":{"name":"p1"}}),
        now,
    );
    let (c, m) = to_child(&a)[0].clone();
    assert_eq!(c, 1);
    let a = r.from_client(
        json!({"jsonrpc":"2.0","method":"notifications/cancelled","params":{"requestId":"x"}}),
        now,
    );
    let (c2, n) = &to_child(&a)[0];
    assert_eq!(*c2, 1);
    assert_eq!(n["params"]["requestId"], m["id"]);
    // a late answer is dropped
    let a = r.from_child(1, json!({"jsonrpc":"2.0","id":m["id"],"result":{}}), now);
    assert!(to_client(&a).is_empty());
}

#[test]
fn timeouts_fail_the_client_and_cancel_the_child_progress_extends() {
    let now = Instant::now();
    let mut r = router(1);
    init(&mut r, json!({"tools":{}}), now);
    let a = r.from_client(json!({"jsonrpc":"2.0","id":1,"method":"tools/list"}), now);
    let (_, l) = &to_child(&a)[0];
    r.from_child(
        0,
        json!({"jsonrpc":"2.0","id":l["id"],"result":{"tools":[{"name":"slow"}]}}),
        now,
    );
    let a = r.from_client(json!({"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"slow","_meta":{"progressToken":9}}}), now);
    let (_, call) = &to_child(&a)[0];
    let t8 = now + Duration::from_secs(8);
    r.from_child(0, json!({"jsonrpc":"2.0","method":"notifications/progress","params":{"progressToken":9,"progress":1}}), t8);
    assert!(
        r.tick(now + Duration::from_secs(11)).is_empty(),
        "progress reset the deadline"
    );
    let a = r.tick(now + Duration::from_secs(19));
    let err = &to_client(&a)[0];
    assert_eq!(err["id"], 2);
    assert_eq!(err["error"]["code"], jsonrpc::REQUEST_TIMEOUT);
    let (_, cancel) = &to_child(&a)[0];
    assert_eq!(cancel["method"], "notifications/cancelled");
    assert_eq!(cancel["params"]["requestId"], call["id"]);
    assert!(r.next_deadline().is_none());
}

#[test]
fn a_dead_child_fails_its_requests_and_the_rest_serve() {
    let now = Instant::now();
    let mut r = router(2);
    init(&mut r, json!({"tools":{}}), now);
    let a = r.from_client(json!({"jsonrpc":"2.0","id":1,"method":"tools/list"}), now);
    for (i, m) in to_child(&a) {
        r.from_child(
            i,
            json!({"jsonrpc":"2.0","id":m["id"],"result":{"tools":[{"name":format!("t{i}")}]}}),
            now,
        );
    }
    r.from_client(
        json!({"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"t0"}}),
        now,
    );
    let a = r.child_closed(0, now);
    let e = &to_client(&a)[0];
    assert_eq!(e["id"], 2);
    assert!(e["error"]["message"].as_str().unwrap().contains("s0"));
    let a = r.from_client(json!({"jsonrpc":"2.0","id":3,"method":"tools/list"}), now);
    assert_eq!(to_child(&a).len(), 1);
}

#[test]
fn init_failure_leaves_the_child_out_and_merges_capabilities() {
    let now = Instant::now();
    let mut r = router(2);
    let a = r.from_client(json!({"jsonrpc":"2.0","id":0,"method":"initialize","params":{"protocolVersion":"2099-01-01"}}), now);
    let sent = to_child(&a);
    let a = r.from_child(
        0,
        json!({"jsonrpc":"2.0","id":sent[0].1["id"],"error":{"code":-1,"message":"boom"}}),
        now,
    );
    assert!(matches!(a[0], Action::ChildFailed(0, _)));
    let a = r.from_child(1, json!({"jsonrpc":"2.0","id":sent[1].1["id"],"result":{"capabilities":{"tools":{"listChanged":true},"tasks":{}},"instructions":"hi"}}), now);
    let reply = &to_client(&a)[0];
    assert_eq!(reply["result"]["protocolVersion"], SUPPORTED_VERSIONS[0]);
    assert_eq!(
        reply["result"]["capabilities"]["tools"]["listChanged"],
        true
    );
    assert!(reply["result"]["capabilities"].get("tasks").is_none());
    assert_eq!(reply["result"]["instructions"], "[s1] hi");
    assert_eq!(r.ready_children(), ["s1"]);
}

#[test]
fn bad_input_gets_json_rpc_errors() {
    let now = Instant::now();
    let mut r = router(0);
    let a = r.from_client_line(b"{not json", now);
    assert_eq!(to_client(&a)[0]["error"]["code"], jsonrpc::PARSE_ERROR);
    let a = r.from_client_line(b"[1,2]", now);
    assert_eq!(to_client(&a)[0]["error"]["code"], INVALID_REQUEST);
    let a = r.from_client_line(br#"{"id":1,"method":"ping"}"#, now);
    assert_eq!(to_client(&a)[0]["error"]["code"], INVALID_REQUEST);
    let a = r.from_client_line(br#"{"jsonrpc":"2.0","id":1.5,"method":"ping"}"#, now);
    assert_eq!(to_client(&a)[0]["error"]["code"], INVALID_REQUEST);
    let a = r.from_client_line(br#"{"jsonrpc":"2.0","id":"p","method":"ping"}"#, now);
    assert_eq!(to_client(&a)[0]["result"], json!({}));
    let a = r.from_client_line(br#"{"jsonrpc":"2.0","id":2,"method":"tools/list"}"#, now);
    assert_eq!(to_client(&a)[0]["error"]["code"], INVALID_REQUEST);
    init(&mut r, json!({}), now);
    let a = r.from_client_line(
        br#"{"jsonrpc":"2.0","id":3,"method":"server/discover"}"#,
        now,
    );
    assert_eq!(
        to_client(&a)[0]["error"]["code"],
        INVALID_REQUEST,
        "locked legacy"
    );
    let a = r.from_client_line(br#"{"jsonrpc":"2.0","id":4,"method":"tools/list"}"#, now);
    assert_eq!(to_client(&a)[0]["result"]["tools"], json!([]));
}

#[test]
fn resources_route_by_uri_and_templates() {
    let now = Instant::now();
    let mut r = router(2);
    init(&mut r, json!({"resources":{"subscribe":true}}), now);
    let a = r.from_client(
        json!({"jsonrpc":"2.0","id":1,"method":"resources/read","params":{"uri":"b://items/3"}}),
        now,
    );
    // internal refresh of both resource lists on both children
    let sent = to_child(&a);
    assert_eq!(sent.len(), 4);
    let mut last = Vec::new();
    for (i, m) in sent {
        let result = match (i, m["method"].as_str().unwrap()) {
            (0, "resources/list") => json!({"resources":[{"uri":"a://x","name":"x"}]}),
            (1, "resources/list") => json!({"resources":[{"uri":"a://x","name":"dup"}]}),
            (1, _) => {
                json!({"resourceTemplates":[{"uriTemplate":"b://items/{id}","name":"t"}]})
            }
            _ => json!({"resourceTemplates":[]}),
        };
        last = r.from_child(
            i,
            json!({"jsonrpc":"2.0","id":m["id"],"result":result}),
            now,
        );
    }
    let (c, m) = &to_child(&last)[0];
    assert_eq!((*c, m["method"].as_str()), (1, Some("resources/read")));
    let a = r.from_client(
        json!({"jsonrpc":"2.0","id":2,"method":"resources/subscribe","params":{"uri":"a://x"}}),
        now,
    );
    assert_eq!(to_child(&a)[0].0, 0);
    let a = r.from_client(json!({"jsonrpc":"2.0","id":3,"method":"completion/complete","params":{"ref":{"type":"ref/resource","uri":"b://items/{id}"},"argument":{"name":"id","value":""}}}), now);
    assert_eq!(to_child(&a)[0].0, 1);
    let a = r.from_client(
        json!({"jsonrpc":"2.0","id":4,"method":"resources/read","params":{"uri":"zz://"}}),
        now,
    );
    assert_eq!(to_client(&a)[0]["error"]["code"], INVALID_PARAMS);
}

#[test]
fn every_way_a_request_ends_leaves_no_id_or_token_behind() {
    let now = Instant::now();
    let mut r = router(2);
    init(&mut r, json!({"tools":{}}), now);
    list_tools(&mut r, now, |i| json!([{"name": format!("t{i}")}]));
    assert!(r.ids.is_empty());
    let call = |r: &mut Router, id: u64, tool: &str| {
        let a = r.from_client(
            json!({"jsonrpc":"2.0","id":id,"method":"tools/call",
                   "params":{"name":tool,"_meta":{"progressToken":id}}}),
            now,
        );
        to_child(&a).remove(0)
    };
    // Answered.
    let (i, m) = call(&mut r, 10, "t0");
    r.from_child(i, json!({"jsonrpc":"2.0","id":m["id"],"result":{}}), now);
    assert!(r.ids.is_empty(), "answered");
    // Cancelled by the client.
    call(&mut r, 11, "t0");
    r.from_client(
        json!({"jsonrpc":"2.0","method":"notifications/cancelled","params":{"requestId":11}}),
        now,
    );
    assert!(r.ids.is_empty(), "cancelled");
    // Timed out.
    call(&mut r, 12, "t1");
    r.tick(now + Duration::from_secs(11));
    assert!(r.ids.is_empty(), "timed out");
    // A child's request to the client, answered; another cut short by the
    // child's exit, with a call in flight.
    let a = r.from_child(
        1,
        json!({"jsonrpc":"2.0","id":"x","method":"roots/list","params":{"_meta":{"progressToken":"rt"}}}),
        now,
    );
    let gid = to_client(&a)[0]["id"].clone();
    r.from_client(json!({"jsonrpc":"2.0","id":gid,"result":{"roots":[]}}), now);
    assert!(r.ids.is_empty(), "child request answered");
    r.from_child(
        1,
        json!({"jsonrpc":"2.0","id":"y","method":"roots/list"}),
        now,
    );
    call(&mut r, 13, "t1");
    let a = r.child_closed(1, now);
    assert_eq!(to_client(&a)[0]["id"], 13);
    assert!(r.ids.is_empty(), "child gone");
}

#[test]
fn a_filtered_tool_is_unlisted_and_refused_exactly_as_an_unknown_one() {
    let now = Instant::now();
    let mut r = one_child("time.", Some(Box::new(|n: &str| n != "time.secret")), false);
    init(&mut r, json!({"tools":{}}), now);
    let a = list_tools(&mut r, now, |_| json!([{"name":"now"},{"name":"secret"}]));
    assert_eq!(
        to_client(&a)[0]["result"]["tools"],
        json!([{"name":"time.now"}])
    );
    let call = |r: &mut Router, name: &str| {
        let a = r.from_client(
            json!({"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":name}}),
            now,
        );
        serde_json::to_string(&to_client(&a)[0]).unwrap()
    };
    let hidden = call(&mut r, "time.secret");
    let missing = call(&mut r, "time.nothing");
    assert_eq!(
        hidden,
        missing.replace("time.nothing", "time.secret"),
        "no hint that it exists"
    );
    assert!(hidden.contains("unknown tool"), "{hidden}");
}

#[test]
fn a_config_filter_hides_a_servers_tool_before_names_are_made_unique() {
    let now = Instant::now();
    let info = |name: &str, tools: Option<&str>| ChildInfo {
        tools: tools.map(|t| crate::keys::pattern::NameFilter::parse(t).unwrap()),
        ..ChildInfo::new(name, Duration::from_secs(10))
    };
    let opts = Options {
        max_total: Duration::from_secs(60),
        server_name: "gw".into(),
        server_version: "0".into(),
        audit: false,
    };
    let mut r = Router::new(
        vec![info("s0", Some("!echo")), info("s1", None)],
        opts,
        Access::default(),
    );
    init(&mut r, json!({"tools":{}}), now);
    let last = list_tools(
        &mut r,
        now,
        |i| json!([{"name":"echo"},{"name": format!("own{i}")}]),
    );
    // s0's echo is filtered out, so s1's echo keeps its own name.
    let reply = to_client(&last).remove(0);
    let names: Vec<&str> = reply["result"]["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["own0", "echo", "own1"]);
    let a = r.from_client(
        json!({"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"echo"}}),
        now,
    );
    assert_eq!(
        to_child(&a)[0].0,
        1,
        "echo routes to the server that offers it"
    );
}

fn audits(a: &[Action]) -> Vec<Record> {
    a.iter()
        .filter_map(|x| match x {
            Action::Audit(r) => Some(r.clone()),
            _ => None,
        })
        .collect()
}

#[test]
fn each_tracked_request_is_recorded_once_with_how_it_ended() {
    let now = Instant::now();
    let mut r = router(2);
    r.opts.audit = true;
    init(&mut r, json!({"tools":{}, "resources":{}}), now);
    list_tools(&mut r, now, |i| json!([{"name": format!("t{i}")}]));
    let call = |r: &mut Router, id: u64, tool: &str| {
        r.from_client(
            json!({"jsonrpc":"2.0","id":id,"method":"tools/call","params":{"name":tool,"arguments":{"secret":"x"}}}),
            now,
        )
    };
    // Ok, through the raw pass-through path.
    let a = call(&mut r, 10, "t1");
    assert!(audits(&a).is_empty(), "nothing until it ends");
    let (i, m) = to_child(&a).remove(0);
    let line = format!(
        r#"{{"jsonrpc":"2.0","id":{},"result":{{"content":[]}}}}"#,
        m["id"]
    );
    let later = now + Duration::from_millis(30);
    let a = r.from_child_incoming(
        i,
        crate::mcp::jsonrpc::parse_child_line(line.as_bytes()).unwrap(),
        later,
    );
    let rec = audits(&a).remove(0);
    assert_eq!(rec.method, "tools/call");
    assert_eq!(rec.server.as_deref(), Some("s1"));
    assert_eq!(rec.target.as_deref(), Some("t1"));
    assert_eq!(
        (rec.outcome, rec.duration),
        (Outcome::Ok, Duration::from_millis(30))
    );
    assert!(rec.bytes_in > 50 && rec.bytes_out > 30, "{rec:?}");
    // An error from the child, with its code.
    let (i, m) = to_child(&call(&mut r, 11, "t0")).remove(0);
    let line = format!(
        r#"{{"jsonrpc":"2.0","id":{},"error":{{"code":-32000,"message":"no"}}}}"#,
        m["id"]
    );
    let a = r.from_child_incoming(
        i,
        crate::mcp::jsonrpc::parse_child_line(line.as_bytes()).unwrap(),
        now,
    );
    assert_eq!(audits(&a)[0].outcome, Outcome::Error(-32000));
    // Unknown: refused by the gateway, no server.
    let rec = audits(&call(&mut r, 12, "nope")).remove(0);
    assert_eq!(
        (rec.outcome, rec.server),
        (Outcome::Error(INVALID_PARAMS), None)
    );
    // Cancelled by the client, and timed out.
    call(&mut r, 13, "t0");
    let a = r.from_client(
        json!({"jsonrpc":"2.0","method":"notifications/cancelled","params":{"requestId":13}}),
        now,
    );
    assert_eq!(audits(&a)[0].outcome, Outcome::Cancelled);
    call(&mut r, 14, "t0");
    let a = r.tick(now + Duration::from_secs(11));
    assert_eq!(audits(&a)[0].outcome, Outcome::Timeout);
    // Lists and pings are not tracked.
    let a = r.from_client(json!({"jsonrpc":"2.0","id":15,"method":"ping"}), now);
    assert!(audits(&a).is_empty());
}

#[test]
fn a_tool_the_key_may_not_use_is_recorded_as_denied() {
    let now = Instant::now();
    let mut r = one_child("", Some(Box::new(|n: &str| n != "secret")), true);
    init(&mut r, json!({"tools":{}}), now);
    list_tools(&mut r, now, |_| json!([{"name":"secret"}]));
    let a = r.from_client(
        json!({"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"secret"}}),
        now,
    );
    assert_eq!(audits(&a)[0].outcome, Outcome::Denied);
}

#[test]
fn a_request_cancelled_while_it_waits_for_a_name_map_is_never_sent() {
    let now = Instant::now();
    let mut r = router(1);
    init(&mut r, json!({"tools":{}}), now);
    let a = r.from_client(
        json!({"jsonrpc":"2.0","id":"x","method":"tools/call","params":{"name":"t"}}),
        now,
    );
    let (_, list) = to_child(&a).remove(0);
    assert_eq!(list["method"], "tools/list", "the call waits for the map");
    r.from_client(
        json!({"jsonrpc":"2.0","method":"notifications/cancelled","params":{"requestId":"x"}}),
        now,
    );
    let a = r.from_child(
        0,
        json!({"jsonrpc":"2.0","id":list["id"],"result":{"tools":[{"name":"t"}]}}),
        now,
    );
    assert!(
        to_child(&a).is_empty(),
        "cancelled before it was sent: {a:?}"
    );
    assert!(to_client(&a).is_empty());
}

#[test]
fn a_restarted_child_is_initialized_again_and_the_client_told_its_lists_changed() {
    let now = Instant::now();
    let mut r = router(2);
    init(&mut r, json!({"tools":{}}), now);
    list_tools(&mut r, now, |i| json!([{"name": format!("t{i}")}]));
    r.child_closed(1, now);
    let a = r.child_restarted(1, now);
    let (i, m) = to_child(&a).remove(0);
    assert_eq!((i, m["method"].clone()), (1, json!("initialize")));
    assert_eq!(
        m["params"]["clientInfo"]["name"], "t",
        "the client's own params"
    );
    // Meanwhile the other child serves at once: no waiting on a restart.
    let a = r.from_client(
        json!({"jsonrpc":"2.0","id":5,"method":"tools/call","params":{"name":"t0"}}),
        now,
    );
    assert_eq!(to_child(&a)[0].0, 0);
    let a = r.from_child(
        1,
        json!({"jsonrpc":"2.0","id":m["id"],"result":{"protocolVersion":"2025-06-18","capabilities":{"tools":{}},"serverInfo":{"name":"x","version":"1"}}}),
        now,
    );
    assert_eq!(to_child(&a)[0].1["method"], "notifications/initialized");
    assert_eq!(
        to_client(&a)[0]["method"],
        "notifications/tools/list_changed"
    );
    let a = r.from_client(
        json!({"jsonrpc":"2.0","id":6,"method":"tools/call","params":{"name":"t1"}}),
        now,
    );
    assert_eq!(
        to_child(&a)[0].1["method"],
        "tools/list",
        "the map is rebuilt first"
    );
}

#[test]
fn a_keys_tool_filter_applies_to_names_after_the_duplicate_rule() {
    let now = Instant::now();
    let mut r = router(2);
    r.access = Access {
        tools: Some(Box::new(|n: &str| n == "echo_1")),
        prompts: None,
    };
    init(&mut r, json!({"tools":{}}), now);
    let a = list_tools(&mut r, now, |_| json!([{"name":"echo"}]));
    assert_eq!(
        to_client(&a)[0]["result"]["tools"],
        json!([{"name":"echo_1"}])
    );
    let call = |r: &mut Router, name: &str| {
        let a = r.from_client(
            json!({"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":name}}),
            now,
        );
        (to_child(&a), to_client(&a))
    };
    let (sent, _) = call(&mut r, "echo_1");
    assert_eq!(
        (sent[0].0, sent[0].1["params"]["name"].clone()),
        (1, json!("echo"))
    );
    let (sent, answered) = call(&mut r, "echo");
    assert!(sent.is_empty());
    assert_eq!(answered[0]["error"]["message"], "unknown tool: echo");
}

// ---- 2026-07-28 clients (ERAS §2.1, §4 column A) ----

mod eras;
use eras::meta;
