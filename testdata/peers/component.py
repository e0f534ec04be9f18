#!/usr/bin/python3
"""component.py: an XEP-0114 component (slixmpp ComponentXMPP) and a client.

Mode "echo" (default): the component connects with --secret; the client
sends --messages messages to the component's domain; the component answers
each with "echo: <body>"; the client collects the answers.
Mode "wrong-secret": the component connects with --secret (which should be
wrong) and reports how the server refused it.

argv: --host H --port P (client c2s) --domain D --component-port CP
      --component DOMAIN --secret S [--mode echo|wrong-secret]
      [--user JID --password PW] (echo mode) [--messages N=3] [--timeout S=30]
JSON (echo): {"ok", "component_connected", "component_received" (bodies
  the component got), "client_received" (answers the client got, in order),
  "from" (the from of the first answer)}
JSON (wrong-secret): {"ok" (true when refused), "session_started" (must be
  false), "stream_error" (condition, e.g. "not-authorized", or null),
  "stream_error_text", "disconnected" (bool)}
"""
import asyncio

import slixmpp

import peerlib


async def echo(a):
    comp = slixmpp.ComponentXMPP(a.component, a.secret, a.host, a.component_port)
    obs = {"component_connected": False, "component_received": [], "client_received": [], "from": None}

    def on_comp_msg(m):
        if not m["body"]:
            return
        obs["component_received"].append(m["body"])
        m.reply("echo: " + m["body"]).send()

    comp.add_event_handler("message", on_comp_msg)
    started = peerlib.event_future(comp, "session_start")
    comp.connect()
    await asyncio.wait_for(started, a.timeout)
    obs["component_connected"] = True

    cl = peerlib.client(a.user, a.password, "comp")

    def on_cl_msg(m):
        if m["body"]:
            obs["client_received"].append(m["body"])
            if obs["from"] is None:
                obs["from"] = str(m["from"])

    cl.add_event_handler("message", on_cl_msg)
    await peerlib.connect(cl, a.host, a.port, a.timeout)
    cl.send_presence()
    for i in range(a.messages):
        cl.send_message(mto=a.component, mbody="hello %d" % i, mtype="chat")
    ok = await peerlib.wait_for(lambda: len(obs["client_received"]) >= a.messages, a.timeout)
    obs["client"] = cl.obs
    await peerlib.disconnect(cl, comp)
    return obs, ok


async def wrong_secret(a):
    comp = slixmpp.ComponentXMPP(a.component, a.secret, a.host, a.component_port)
    obs = {"session_started": False, "stream_error": None, "stream_error_text": None, "disconnected": False}

    def on_err(e):
        obs["stream_error"] = e["condition"]
        obs["stream_error_text"] = e["text"] or None

    comp.add_event_handler("stream_error", on_err)
    comp.add_event_handler("session_start", lambda _: obs.update(session_started=True))
    lost = peerlib.event_future(comp, "disconnected")
    started = peerlib.event_future(comp, "session_start")
    comp.connect()
    done, _ = await asyncio.wait({lost, started}, timeout=a.timeout, return_when=asyncio.FIRST_COMPLETED)
    obs["disconnected"] = lost in done
    if started in done:
        await peerlib.disconnect(comp)
    return obs, obs["disconnected"] and not obs["session_started"]


async def main():
    p = peerlib.base_args("XEP-0114 component peer")
    p.add_argument("--component-port", type=int, required=True)
    p.add_argument("--component", required=True)
    p.add_argument("--secret", required=True)
    p.add_argument("--mode", choices=["echo", "wrong-secret"], default="echo")
    p.add_argument("--user")
    p.add_argument("--password")
    p.add_argument("--messages", type=int, default=3)
    a = p.parse_args()
    peerlib.setup_logging(a.debug)
    if a.mode == "echo":
        if not a.user or not a.password:
            p.error("echo mode needs --user and --password")
        return await echo(a)
    return await wrong_secret(a)


if __name__ == "__main__":
    peerlib.run(main)
