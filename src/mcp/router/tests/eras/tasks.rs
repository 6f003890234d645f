//! Tasks routed by task id, within one era (ERAS §3).

use super::*;

/// Two legacy children with the 2025 tasks; returns the `initialize` result.
fn init_tasks(r: &mut Router, now: Instant) -> Value {
    let a = r.from_client(
        json!({"jsonrpc":"2.0","id":0,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{"tasks":{"requests":{"sampling":{"createMessage":{}}}},"sampling":{}},"clientInfo":{"name":"t","version":"1"}}}),
        now,
    );
    let caps = [
        json!({"tools":{},"tasks":{"list":{},"cancel":{}}}),
        json!({"tools":{},"tasks":{"list":{},"requests":{"tools":{"call":{}}}}}),
    ];
    let mut last = Vec::new();
    for (i, m) in to_child(&a) {
        assert!(
            m["params"]["capabilities"].get("tasks").is_none(),
            "the client's own task capability stays with the gateway"
        );
        last = r.from_child(
            i,
            json!({"jsonrpc":"2.0","id":m["id"],"result":{"protocolVersion":"2025-11-25","capabilities":caps[i],"serverInfo":{"name":"x","version":"1"}}}),
            now,
        );
    }
    to_client(&last)[0]["result"].clone()
}

/// Sends `req` to the client side; the one child message it causes.
fn one_to_child(r: &mut Router, req: Value, now: Instant) -> (usize, Value) {
    let sent = to_child(&r.from_client(req, now));
    assert_eq!(sent.len(), 1, "{sent:?}");
    sent[0].clone()
}

fn answer(r: &mut Router, child: usize, id: &Value, result: Value, now: Instant) -> Value {
    let line = json!({"jsonrpc":"2.0","id":id,"result":result}).to_string();
    raw(r, child, line, now)
}

#[test]
fn legacy_tasks_of_two_children_with_the_same_id_route_back_to_their_creator() {
    let now = Instant::now();
    let mut r = router(2);
    let init = init_tasks(&mut r, now);
    assert_eq!(
        init["capabilities"]["tasks"],
        json!({"list":{},"cancel":{},"requests":{"tools":{"call":{}}}}),
        "the union of the children's task capabilities"
    );
    list_tools(&mut r, now, |i| json!([{"name": format!("t{i}")}]));
    let mut ids = Vec::new();
    for i in 0..2 {
        let call = json!({"jsonrpc":"2.0","id":format!("c{i}"),"method":"tools/call","params":{"name":format!("t{i}"),"task":{"ttl":1000}}});
        let (child, m) = one_to_child(&mut r, call, now);
        assert_eq!(child, i);
        assert_eq!(m["params"]["task"], json!({"ttl":1000}));
        let v = answer(
            &mut r,
            i,
            &m["id"],
            json!({"task":{"taskId":"1","status":"working"}}),
            now,
        );
        assert_eq!(v["id"], format!("c{i}"));
        ids.push(v["result"]["task"]["taskId"].as_str().unwrap().to_owned());
    }
    assert_eq!(ids, ["0~1", "1~1"]);
    assert_eq!(r.tasks.len(), 2);

    // tasks/get and tasks/result go to the creator with its own id.
    let get = json!({"jsonrpc":"2.0","id":"g","method":"tasks/get","params":{"taskId":"1~1"}});
    let (child, m) = one_to_child(&mut r, get, now);
    assert_eq!((child, &m["params"]["taskId"]), (1, &json!("1")));
    let v = answer(
        &mut r,
        1,
        &m["id"],
        json!({"taskId":"1","status":"completed"}),
        now,
    );
    assert_eq!(v["result"]["taskId"], "1~1");
    let res = json!({"jsonrpc":"2.0","id":"r","method":"tasks/result","params":{"taskId":"0~1"}});
    let (child, m) = one_to_child(&mut r, res, now);
    assert_eq!((child, &m["params"]["taskId"]), (0, &json!("1")));
    let v = answer(
        &mut r,
        0,
        &m["id"],
        json!({"content":[],"_meta":{"io.modelcontextprotocol/related-task":{"taskId":"1"}}}),
        now,
    );
    assert_eq!(
        v["result"]["_meta"]["io.modelcontextprotocol/related-task"]["taskId"],
        "0~1"
    );

    // Status notifications and a task's requests to the client carry ours.
    let a = r.from_child(
        1,
        json!({"jsonrpc":"2.0","method":"notifications/tasks/status","params":{"taskId":"1","status":"completed"}}),
        now,
    );
    assert_eq!(to_client(&a)[0]["params"]["taskId"], "1~1");
    let a = r.from_child(
        0,
        json!({"jsonrpc":"2.0","id":7,"method":"elicitation/create","params":{"message":"?","_meta":{"io.modelcontextprotocol/related-task":{"taskId":"1"}}}}),
        now,
    );
    assert_eq!(
        to_client(&a)[0]["params"]["_meta"]["io.modelcontextprotocol/related-task"]["taskId"],
        "0~1"
    );

    // Unknown, forged and missing ids are refused, naming the id.
    for (tid, want) in [
        (json!("2~1"), "unknown task: 2~1"),
        (json!("1"), "unknown task: 1"),
        (json!("0~9"), "unknown task: 0~9"),
        (Value::Null, "missing params.taskId"),
    ] {
        let req = json!({"jsonrpc":"2.0","id":"u","method":"tasks/cancel","params":{"taskId":tid}});
        let a = r.from_client(req, now);
        assert!(to_child(&a).is_empty());
        let e = &to_client(&a)[0]["error"];
        assert_eq!(e["code"], INVALID_PARAMS);
        assert!(e["message"].as_str().unwrap().contains(want), "{e}");
    }
}

#[test]
fn legacy_tasks_list_fans_out_and_names_each_childs_tasks_apart() {
    let now = Instant::now();
    let mut r = router(2);
    init_tasks(&mut r, now);
    let a = r.from_client(json!({"jsonrpc":"2.0","id":"l","method":"tasks/list"}), now);
    let sent = to_child(&a);
    assert_eq!(sent.len(), 2);
    let mut last = Vec::new();
    for (i, m) in sent {
        assert_eq!(m["method"], "tasks/list");
        last = r.from_child(
            i,
            json!({"jsonrpc":"2.0","id":m["id"],"result":{"tasks":[{"taskId":"1","status":"working"}]}}),
            now,
        );
    }
    let ids: Vec<Value> = to_client(&last)[0]["result"]["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["taskId"].clone())
        .collect();
    assert_eq!(ids, [json!("0~1"), json!("1~1")]);
}

/// A legacy child 0 with 2025 tasks and a modern child 1 with the
/// extension, discovered by a modern client; child 1's tool `t1` made task
/// "1". Returns the discover result and the call's answer.
fn modern_task(r: &mut Router, now: Instant) -> (Value, Value) {
    r.child_modern(
        1,
        &json!({"supportedVersions":[MODERN],"capabilities":{"tools":{},"extensions":{"io.modelcontextprotocol/tasks":{}}}}),
    );
    let a = r.from_client(
        modern(json!("d"), "server/discover", json!({}), json!({})),
        now,
    );
    let (_, m) = &to_child(&a)[0];
    let a = r.from_child(
        0,
        json!({"jsonrpc":"2.0","id":m["id"],"result":{"capabilities":{"tools":{},"tasks":{"list":{}},"extensions":{"io.modelcontextprotocol/tasks":{}}}}}),
        now,
    );
    let d = to_client(&a)[0]["result"].clone();
    list_tools(r, now, |i| json!([{"name": format!("t{i}")}]));
    let call = modern(json!("c"), "tools/call", json!({"name":"t1"}), json!({}));
    let (child, m) = one_to_child(r, call, now);
    assert_eq!(child, 1);
    let v = answer(
        r,
        1,
        &m["id"],
        json!({"resultType":"task","taskId":"1","status":"working","ttlMs":null}),
        now,
    );
    (d, v)
}

#[test]
fn modern_tasks_route_to_their_modern_child_and_do_not_cross_eras() {
    let now = Instant::now();
    let mut r = router(2);
    let (d, v) = modern_task(&mut r, now);
    assert!(
        d["capabilities"].get("tasks").is_none(),
        "legacy tasks hidden"
    );
    assert_eq!(
        d["capabilities"]["extensions"],
        json!({"io.modelcontextprotocol/tasks":{}})
    );
    assert_eq!(v["result"]["resultType"], "task");
    assert_eq!(v["result"]["taskId"], "1~1");
    let ext = json!({"io.modelcontextprotocol/clientCapabilities":
        {"extensions": {"io.modelcontextprotocol/tasks": {}}}});
    for method in ["tasks/get", "tasks/update", "tasks/cancel"] {
        let req = modern(json!("g"), method, json!({"taskId":"1~1"}), ext.clone());
        let (child, m) = one_to_child(&mut r, req, now);
        assert_eq!((child, &m["params"]["taskId"]), (1, &json!("1")));
        let v = answer(
            &mut r,
            1,
            &m["id"],
            json!({"resultType":"complete","taskId":"1","status":"working"}),
            now,
        );
        assert_eq!(v["result"]["taskId"], "1~1");
    }
    let req = modern(
        json!("u"),
        "tasks/get",
        json!({"taskId":"0~1"}),
        ext.clone(),
    );
    let a = r.from_client(req, now);
    assert_eq!(to_client(&a)[0]["error"]["code"], INVALID_PARAMS);
    let mut bare = modern(json!("b"), "tasks/get", json!({"taskId":"1~1"}), json!({}));
    bare["params"]["_meta"]["io.modelcontextprotocol/clientCapabilities"] = json!({});
    let a = r.from_client(bare, now);
    assert!(to_child(&a).is_empty());
    let e = &to_client(&a)[0]["error"];
    assert_eq!(e["code"], -32021);
    assert_eq!(
        e["data"]["requiredCapabilities"]["extensions"],
        json!({"io.modelcontextprotocol/tasks":{}})
    );
    for method in ["tasks/result", "tasks/list"] {
        let req = modern(json!("x"), method, json!({"taskId":"1~1"}), json!({}));
        let a = r.from_client(req, now);
        assert_eq!(to_client(&a)[0]["error"]["code"], METHOD_NOT_FOUND);
    }
}

#[test]
fn a_legacy_client_gets_no_modern_tasks_and_its_task_caps_stay_behind() {
    let now = Instant::now();
    let mut r = with_modern_child();
    let a = r.from_client(
        json!({"jsonrpc":"2.0","id":0,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{"tasks":{},"extensions":{"io.modelcontextprotocol/tasks":{}}}}}),
        now,
    );
    let (_, m) = &to_child(&a)[0];
    let a = r.from_child(
        0,
        json!({"jsonrpc":"2.0","id":m["id"],"result":{"capabilities":{"tools":{}}}}),
        now,
    );
    let init = to_client(&a)[0]["result"].clone();
    assert!(init["capabilities"].get("tasks").is_none());
    assert!(init["capabilities"].get("extensions").is_none());
    let caps = &r.era.client_meta()[era::CLIENT_CAPABILITIES];
    assert!(caps.get("tasks").is_none());
    assert_eq!(
        caps["extensions"],
        json!({}),
        "no task extension for a modern child"
    );
}

#[test]
fn the_task_table_is_bounded_and_forgets_the_oldest() {
    let mut r = router(1);
    for i in 0..4097 {
        let mut msg = json!({"result":{"task":{"taskId":i.to_string()}}});
        r.task_ids_from_child(0, &mut msg);
        assert_eq!(msg["result"]["task"]["taskId"], format!("0~{i}"));
    }
    assert_eq!(r.tasks.len(), 4096);
    assert!(r.tasks.route("0~0").is_none(), "the oldest is forgotten");
    assert_eq!(r.tasks.route("0~1"), Some((0, "1".into())));
    assert_eq!(r.tasks.route("0~4096"), Some((0, "4096".into())));
}

#[test]
fn a_restarted_or_exited_child_takes_its_task_ids_along() {
    let now = Instant::now();
    let mut r = router(11);
    for child in [1, 10] {
        let mut msg = json!({"result":{"task":{"taskId":"1"}}});
        r.task_ids_from_child(child, &mut msg);
    }
    r.child_restarted(1, now);
    assert!(r.tasks.route("1~1").is_none(), "a new process counts anew");
    assert_eq!(r.tasks.route("10~1"), Some((10, "1".into())), "10 is not 1");
    r.child_closed(10, now);
    assert_eq!(r.tasks.len(), 0);
}

#[test]
fn a_child_without_tasks_never_gets_a_task_param() {
    let now = Instant::now();
    let mut r = router(1);
    init(&mut r, json!({"tools":{}}), now);
    list_tools(&mut r, now, |_| json!([{"name": "t"}]));
    let call =
        json!({"jsonrpc":"2.0","id":"c","method":"tools/call","params":{"name":"t","task":{}}});
    let (_, m) = one_to_child(&mut r, call, now);
    assert!(m["params"].get("task").is_none(), "{m}");
    let a = r.from_client(json!({"jsonrpc":"2.0","id":"l","method":"tasks/list"}), now);
    assert!(to_child(&a).is_empty(), "no child lists tasks");
    assert_eq!(to_client(&a)[0]["result"]["tasks"], json!([]));
}

#[test]
fn a_modern_tasks_status_reaches_the_streams_that_named_it() {
    let now = Instant::now();
    let mut r = router(2);
    modern_task(&mut r, now);
    let ext = json!({"io.modelcontextprotocol/clientCapabilities":
        {"extensions": {"io.modelcontextprotocol/tasks": {}}}});
    let listen = |r: &mut Router, id: &str, ids: Value, extra: &Value| {
        let m = modern(
            json!(id),
            "subscriptions/listen",
            json!({"notifications":{"taskIds": ids}}),
            extra.clone(),
        );
        r.from_client(m, now)
    };
    // Without the extension declared: -32021, nothing opened.
    let a = listen(&mut r, "l0", json!(["1~1"]), &json!({}));
    assert!(to_child(&a).is_empty());
    assert_eq!(to_client(&a)[0]["error"]["code"], -32021);
    let a = listen(&mut r, "l0", json!("1~1"), &ext);
    assert_eq!(to_client(&a)[0]["error"]["code"], INVALID_PARAMS);
    // One child listen follows the task, with the child's own id; an
    // unknown id and a legacy child's are not honoured.
    let a = listen(&mut r, "l1", json!(["1~1", "0~1", "1~9"]), &ext);
    let (child, cl) = to_child(&a).remove(0);
    assert_eq!(child, 1);
    assert_eq!(cl["method"], "subscriptions/listen");
    assert_eq!(cl["params"]["notifications"], json!({"taskIds":["1"]}));
    let ack = &to_client(&a)[0];
    assert_eq!(ack["method"], "notifications/subscriptions/acknowledged");
    assert_eq!(ack["params"]["notifications"], json!({"taskIds":["1~1"]}));
    let a = listen(&mut r, "l2", json!(["1~1"]), &ext);
    assert!(to_child(&a).is_empty(), "shared by the streams naming it");
    // The child's status reaches both streams under the gateway's id.
    let tag = json!({"io.modelcontextprotocol/subscriptionId": cl["id"]});
    let status = json!({"jsonrpc":"2.0","method":"notifications/tasks","params":{"taskId":"1","status":"completed","result":{"content":[],"_meta":{"io.modelcontextprotocol/related-task":{"taskId":"1"}}},"_meta":tag}});
    let n = to_client(&r.from_child(1, status.clone(), now));
    assert_eq!(n.len(), 2);
    for (m, id) in n.iter().zip(["l1", "l2"]) {
        assert_eq!(m["params"]["taskId"], "1~1");
        assert_eq!(m["params"]["status"], "completed");
        assert_eq!(
            m["params"]["result"]["_meta"]["io.modelcontextprotocol/related-task"]["taskId"],
            "1~1"
        );
        assert_eq!(
            m["params"]["_meta"]["io.modelcontextprotocol/subscriptionId"],
            id
        );
    }
    // Cancelled with the last stream naming it.
    let cancel = |id: &str| json!({"jsonrpc":"2.0","method":"notifications/cancelled","params":{"requestId":id}});
    assert!(to_child(&r.from_client(cancel("l1"), now)).is_empty());
    let a = r.from_client(cancel("l2"), now);
    let (_, c) = &to_child(&a)[0];
    assert_eq!(c["params"]["requestId"], cl["id"]);
    assert!(to_client(&r.from_child(1, status, now)).is_empty());
}

#[test]
fn a_legacy_tasks_result_waits_past_the_request_timeout_up_to_the_total_bound() {
    let now = Instant::now();
    let mut r = router(2);
    init_tasks(&mut r, now);
    list_tools(&mut r, now, |i| json!([{"name": format!("t{i}")}]));
    let call = json!({"jsonrpc":"2.0","id":"c","method":"tools/call","params":{"name":"t0","task":{"ttl":1000}}});
    let (_, m) = one_to_child(&mut r, call, now);
    answer(
        &mut r,
        0,
        &m["id"],
        json!({"task":{"taskId":"1","status":"working"}}),
        now,
    );
    let res = json!({"jsonrpc":"2.0","id":"r","method":"tasks/result","params":{"taskId":"0~1"}});
    let (_, m) = one_to_child(&mut r, res, now);
    let get = json!({"jsonrpc":"2.0","id":"g","method":"tasks/get","params":{"taskId":"0~1"}});
    one_to_child(&mut r, get, now);
    // The child's timeout is 10 s: the tasks/get fails then, the result waits.
    let a = r.tick(now + Duration::from_secs(11));
    let failed: Vec<Value> = to_client(&a).iter().map(|m| m["id"].clone()).collect();
    assert_eq!(failed, [json!("g")]);
    assert!(r.tick(now + Duration::from_secs(59)).is_empty());
    let a = r.tick(now + Duration::from_secs(61)); // max_total is 60 s here
    let e = &to_client(&a)[0];
    assert_eq!(
        (&e["id"], &e["error"]["code"]),
        (&json!("r"), &json!(jsonrpc::REQUEST_TIMEOUT))
    );
    let (_, cancel) = &to_child(&a)[0];
    assert_eq!(cancel["params"]["requestId"], m["id"]);
}

#[test]
fn a_stream_following_a_task_of_a_restarted_child_does_not_follow_its_new_task_of_the_same_id() {
    let now = Instant::now();
    let mut r = router(2);
    modern_task(&mut r, now);
    let ext = json!({"io.modelcontextprotocol/clientCapabilities":
        {"extensions": {"io.modelcontextprotocol/tasks": {}}}});
    let listen = |r: &mut Router, id: &str| {
        let m = modern(
            json!(id),
            "subscriptions/listen",
            json!({"notifications":{"taskIds": ["1~1"]}}),
            ext.clone(),
        );
        r.from_client(m, now)
    };
    assert_eq!(to_child(&listen(&mut r, "l1")).len(), 1);
    // The child restarts: task "1" died with it, and the new process
    // counts anew, so its next task is "1" again, the same gateway id.
    r.child_closed(1, now);
    r.child_restarted(1, now);
    list_tools(&mut r, now, |i| json!([{"name": format!("t{i}")}]));
    let call = modern(json!("c2"), "tools/call", json!({"name":"t1"}), json!({}));
    let (_, m) = one_to_child(&mut r, call, now);
    let v = answer(
        &mut r,
        1,
        &m["id"],
        json!({"resultType":"task","taskId":"1","status":"working"}),
        now,
    );
    assert_eq!(v["result"]["taskId"], "1~1");
    let a = listen(&mut r, "l2");
    let (_, cl) = to_child(&a).remove(0);
    assert_eq!(cl["method"], "subscriptions/listen");
    // The new task's status is for the stream that named it, not for the
    // one that named the dead task.
    let status = json!({"jsonrpc":"2.0","method":"notifications/tasks","params":{"taskId":"1","status":"completed"}});
    let n = to_client(&r.from_child(1, status, now));
    let to: Vec<&Value> = n
        .iter()
        .map(|m| &m["params"]["_meta"]["io.modelcontextprotocol/subscriptionId"])
        .collect();
    assert_eq!(to, [&json!("l2")]);
    // And the child listen ends with l2, the only stream following it.
    let cancel =
        json!({"jsonrpc":"2.0","method":"notifications/cancelled","params":{"requestId":"l2"}});
    let a = r.from_client(cancel, now);
    let sent = to_child(&a);
    assert_eq!(sent.len(), 1, "{a:?}");
    assert_eq!(sent[0].1["params"]["requestId"], cl["id"]);
}
