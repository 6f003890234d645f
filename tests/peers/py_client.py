"""Drives the official Python MCP SDK `Client` (default mode: probe
`server/discover`, fall back to `initialize`) over a stdio command, for the
end-to-end era tests (tests/e2e/eras.rs).

    py_client.py STEPS_JSON COMMAND [ARG...]

COMMAND is the stdio transport: `ssh -T ...`, our client binary, or an MCP
server itself. STEPS_JSON is a list of steps run in order:

    {"op": "list"}                                   tools, prompts, resources, templates
    {"op": "call", "name": N, "args": {...}}         a tool call (progress recorded)
    {"op": "prompt", "name": N, "args": {...}}
    {"op": "read", "uri": U}
    {"op": "cancel", "name": N, "args": {...}}       a call cancelled at its first progress
                                                     (or after "delayMs", default 300)
    {"op": "subscribe", "uri": U, "trigger": {"name": N, "args": {...}}}
        legacy: resources/subscribe; 2026-07-28: a listen on U and the tool list;
        then the trigger call, then waits (bounded) for U's update
    {"op": "list_changed", "trigger": {"name": N, "args": {...}}}
        legacy: notifications/tools/list_changed; 2026-07-28: a listen on the
        tool list; waits (bounded) for the change after the trigger call

Every handler (elicitation, sampling, roots) is installed unless "--bare"
comes first; each records what it was asked. Prints one JSON object:
{protocolVersion, serverInfo, capabilities, connectMs, steps: [...],
handled: [...], notifications: [...]}; a step that fails holds "error".
"""

import json
import sys
import time
import warnings

import anyio
import mcp_types as types
from mcp.client.client import Client
from mcp.client.stdio import StdioServerParameters
from mcp.shared.exceptions import MCPError

WAIT = 15  # seconds, the bound on any one wait for the server

ELICIT_ANSWER = {"action": "accept", "content": {"name": "Ada"}}
SAMPLE_TEXT = "hello from the python peer"
ROOT_URI = "file:///peer/python"

handled = []
notifications = []
updated = {}  # uri -> anyio.Event, for the legacy subscription
tools_changed = []  # anyio.Events, set by notifications/tools/list_changed


def dump(model):
    if model is None:
        return None
    return model.model_dump(mode="json", by_alias=True, exclude_none=True)


def error_of(e):
    if isinstance(e, MCPError):
        return {"code": e.code, "message": str(e.error.message), "data": e.error.data}
    return {"type": type(e).__name__, "message": str(e)}


async def on_elicit(_ctx, params):
    handled.append({"method": "elicitation/create", "params": dump(params)})
    return types.ElicitResult.model_validate(ELICIT_ANSWER)


async def on_sample(_ctx, params):
    handled.append({"method": "sampling/createMessage", "params": dump(params)})
    return types.CreateMessageResult(
        role="assistant",
        content=types.TextContent(type="text", text=SAMPLE_TEXT),
        model="python-peer",
    )


async def on_roots(_ctx):
    handled.append({"method": "roots/list"})
    return types.ListRootsResult(roots=[types.Root(uri=ROOT_URI, name="python peer")])


async def on_message(message):
    if isinstance(message, Exception):
        notifications.append({"exception": str(message)})
        return
    inner = getattr(message, "root", message)
    method = getattr(inner, "method", type(inner).__name__)
    notifications.append(method)
    uri = getattr(getattr(inner, "params", None), "uri", None)
    if method == "notifications/resources/updated" and str(uri) in updated:
        updated[str(uri)].set()
    if method == "notifications/tools/list_changed":
        for event in tools_changed:
            event.set()


async def names(fetch, field, key):
    """Every page of a list, as the `key` of each item."""
    out, cursor = [], None
    try:
        for _ in range(100):
            page = await fetch(cursor=cursor)
            out += [str(getattr(x, key)) for x in getattr(page, field)]
            cursor = page.next_cursor
            if not cursor:
                return out
        raise RuntimeError("more than 100 pages")
    except Exception as e:  # noqa: BLE001 - a list the server lacks is a result too
        return {"error": error_of(e)}


async def run_step(client, step):
    op = step["op"]
    if op == "list":
        return {
            "tools": await names(client.list_tools, "tools", "name"),
            "prompts": await names(client.list_prompts, "prompts", "name"),
            "resources": await names(client.list_resources, "resources", "uri"),
            "templates": await names(client.list_resource_templates, "resource_templates", "uri_template"),
        }
    if op == "call":
        progress = []

        async def on_progress(p, total, message):
            progress.append({"progress": p, "total": total, "message": message})

        result = await client.call_tool(step["name"], step.get("args", {}), progress_callback=on_progress)
        return {"result": dump(result), "progress": progress}
    if op == "prompt":
        return {"result": dump(await client.get_prompt(step["name"], step.get("args", {})))}
    if op == "read":
        return {"result": dump(await client.read_resource(step["uri"]))}
    if op == "cancel":
        out = {"cancelled": False, "progress": 0}
        with anyio.CancelScope() as scope:

            async def on_progress(p, total, message):
                out["progress"] += 1
                scope.cancel()

            if "delayMs" in step or step.get("afterProgress") is False:
                scope.deadline = anyio.current_time() + step.get("delayMs", 300) / 1000
            with anyio.fail_after(WAIT, shield=False):
                out["result"] = dump(await client.call_tool(step["name"], step.get("args", {}), progress_callback=on_progress))
        out["cancelled"] = scope.cancelled_caught
        return out
    if op == "subscribe":
        uri = step["uri"]
        trigger = step["trigger"]
        if client.protocol_version >= "2026":
            events = []
            async with client.listen(tools_list_changed=True, resource_subscriptions=[uri]) as sub:
                honored = dump(sub.honored)
                await client.call_tool(trigger["name"], trigger.get("args", {}))
                with anyio.fail_after(WAIT):
                    async for event in sub:
                        events.append({"type": type(event).__name__, "uri": str(getattr(event, "uri", "")) or None})
                        if getattr(event, "uri", None) is not None and str(event.uri) == uri:
                            break
            return {"honored": honored, "events": events}
        updated[uri] = anyio.Event()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            await client.subscribe_resource(uri)
            await client.call_tool(trigger["name"], trigger.get("args", {}))
            with anyio.fail_after(WAIT):
                await updated[uri].wait()
            await client.unsubscribe_resource(uri)
        return {"updated": uri}
    if op == "list_changed":
        trigger = step["trigger"]
        if client.protocol_version >= "2026":
            async with client.listen(tools_list_changed=True) as sub:
                await client.call_tool(trigger["name"], trigger.get("args", {}))
                with anyio.fail_after(WAIT):
                    async for event in sub:
                        return {"event": type(event).__name__}
            return {"event": None}
        changed = anyio.Event()
        tools_changed.append(changed)
        await client.call_tool(trigger["name"], trigger.get("args", {}))
        with anyio.fail_after(WAIT):
            await changed.wait()
        return {"event": "ToolsListChanged"}
    raise ValueError(f"unknown op {op!r}")


async def main():
    args = sys.argv[1:]
    bare = args[:1] == ["--bare"]
    if bare:
        args = args[1:]
    if len(args) < 2:
        sys.exit(__doc__)
    steps = json.loads(args[0])
    handlers = {} if bare else {
        "elicitation_callback": on_elicit,
        "sampling_callback": on_sample,
        "list_roots_callback": on_roots,
    }
    client = Client(
        StdioServerParameters(command=args[1], args=args[2:]),
        message_handler=on_message,
        client_info=types.Implementation(name="py-peer", version="1"),
        cache=None,
        **handlers,
    )
    out = {}
    start = time.monotonic()
    async with client:
        out["connectMs"] = round((time.monotonic() - start) * 1000)
        out["protocolVersion"] = client.protocol_version
        out["serverInfo"] = dump(client.server_info)
        out["capabilities"] = dump(client.server_capabilities)
        out["steps"] = []
        for step in steps:
            try:
                out["steps"].append(await run_step(client, step))
            except Exception as e:  # noqa: BLE001 - reported, the run goes on
                out["steps"].append({"error": error_of(e)})
    out["handled"] = handled
    out["notifications"] = notifications
    print(json.dumps(out))


if __name__ == "__main__":
    anyio.run(main)
