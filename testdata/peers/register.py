#!/usr/bin/python3
"""register.py: a phone registering for push with pushd's component.

Mode "register" (default): log in as --user, enable XEP-0198 (resumable),
register the device with ONE XEP-0050 execute of --command
(register-push-apns) carrying token, device-id and a fresh 32-byte key;
enable push on the server (raw XEP-0357 <enable/> with the answer's jid,
node and the secret in publish-options); then hibernate: the TCP
connection is aborted (no stream close), so the server keeps the session
and pushes for it.
Mode "multistep": execute without a form, read the form the component
answers with, submit it in the session, and report the answer; then
cancel a second session. No push enable, no hibernation.
Mode "send": log in as --user and send --body to --to (one message per
--body), then a ping round trip so the server has routed them.

argv: --host H --port P --domain D --user JID --password PW
      [--component JID] [--command register-push-apns] [--token HEX]
      [--device-id ID] [--mode register|multistep|send] [--to JID] [--body B]...
JSON (register): {"ok", "node", "secret", "jid", "key" (base64), "status",
  "enabled" (bool), "hibernated" (bool)}
JSON (multistep): {"ok", "first_status", "form_fields", "sessionid",
  "status", "node", "secret", "jid", "canceled_status"}
JSON (send): {"ok", "sent"}
"""
import asyncio
import base64
import os
import xml.etree.ElementTree as ET


import peerlib

NS_CMD = "http://jabber.org/protocol/commands"
NS_DATA = "jabber:x:data"
NS_PUSH = "urn:xmpp:push:0"


def data_form(typ, fields):
    x = ET.Element("{%s}x" % NS_DATA, {"type": typ})
    for var, values in fields:
        f = ET.SubElement(x, "{%s}field" % NS_DATA, {"var": var})
        for v in values if isinstance(values, list) else [values]:
            ET.SubElement(f, "{%s}value" % NS_DATA).text = v
    return x


def read_form(x):
    out = {}
    if x is None:
        return out
    for f in x.findall("{%s}field" % NS_DATA):
        out[f.get("var")] = [v.text or "" for v in f.findall("{%s}value" % NS_DATA)]
    return out


async def command_iq(c, to, node, action=None, sessionid=None, form=None, timeout=30):
    iq = c.Iq()
    iq["type"] = "set"
    iq["to"] = to
    cmd = ET.Element("{%s}command" % NS_CMD, {"node": node})
    if action:
        cmd.set("action", action)
    if sessionid:
        cmd.set("sessionid", sessionid)
    if form is not None:
        cmd.append(form)
    iq.append(cmd)
    resp = await iq.send(timeout=timeout)
    return resp.xml.find("{%s}command" % NS_CMD)


async def register(a):
    c = peerlib.client(a.user, a.password, "phone")
    c.register_plugin("xep_0198")
    c["xep_0198"].allow_resume = True
    enabled_sm = peerlib.event_future(c, "sm_enabled")
    await peerlib.connect(c, a.host, a.port, a.timeout)
    c.send_presence()
    await asyncio.wait_for(enabled_sm, a.timeout)

    key = os.urandom(32)
    obs = {"key": base64.b64encode(key).decode(), "enabled": False, "hibernated": False}
    form = data_form("submit", [
        ("token", a.token), ("device-id", a.device_id),
        ("key", obs["key"]),
    ])
    cmd = await command_iq(c, a.component, a.command, action="execute", form=form, timeout=a.timeout)
    obs["status"] = cmd.get("status")
    res = read_form(cmd.find("{%s}x" % NS_DATA))
    obs["jid"] = (res.get("jid") or [""])[0]
    obs["node"] = (res.get("node") or [""])[0]
    obs["secret"] = (res.get("secret") or [""])[0]
    if obs["status"] != "completed" or not obs["node"]:
        return obs, False

    iq = c.Iq()
    iq["type"] = "set"
    en = ET.Element("{%s}enable" % NS_PUSH, {"jid": obs["jid"], "node": obs["node"]})
    en.append(data_form("submit", [
        ("FORM_TYPE", "http://jabber.org/protocol/pubsub#publish-options"),
        ("secret", obs["secret"]),
    ]))
    iq.append(en)
    await iq.send(timeout=a.timeout)
    obs["enabled"] = True

    # Make sure the server saw everything (including our SM acks) before
    # the drop.
    c["xep_0198"].request_ack()
    await asyncio.sleep(0.3)
    lost = peerlib.event_future(c, "disconnected")
    c.transport.abort()
    await asyncio.wait_for(lost, a.timeout)
    obs["hibernated"] = True
    return obs, True


async def multistep(a):
    c = peerlib.client(a.user, a.password, "phone2")
    await peerlib.connect(c, a.host, a.port, a.timeout)
    obs = {}
    cmd = await command_iq(c, a.component, a.command, action="execute", timeout=a.timeout)
    obs["first_status"] = cmd.get("status")
    obs["sessionid"] = cmd.get("sessionid")
    x = cmd.find("{%s}x" % NS_DATA)
    obs["form_type"] = x.get("type") if x is not None else None
    obs["form_fields"] = sorted(read_form(x).keys())
    form = data_form("submit", [("token", a.token), ("device-id", a.device_id)])
    cmd = await command_iq(c, a.component, a.command, action="complete", sessionid=obs["sessionid"],
                           form=form, timeout=a.timeout)
    obs["status"] = cmd.get("status")
    res = read_form(cmd.find("{%s}x" % NS_DATA))
    obs["jid"] = (res.get("jid") or [""])[0]
    obs["node"] = (res.get("node") or [""])[0]
    obs["secret"] = (res.get("secret") or [""])[0]
    cmd2 = await command_iq(c, a.component, a.command, action="execute", timeout=a.timeout)
    cmd3 = await command_iq(c, a.component, a.command, action="cancel", sessionid=cmd2.get("sessionid"),
                            timeout=a.timeout)
    obs["canceled_status"] = cmd3.get("status")
    await peerlib.disconnect(c)
    return obs, obs["status"] == "completed"


async def send(a):
    c = peerlib.client(a.user, a.password, "desk")
    await peerlib.connect(c, a.host, a.port, a.timeout)
    c.send_presence()
    for b in a.body:
        c.send_message(mto=a.to, mbody=b, mtype="chat")
    c.register_plugin("xep_0199")
    await c["xep_0199"].ping(jid=a.domain, timeout=a.timeout)
    await peerlib.disconnect(c)
    return {"sent": len(a.body)}, True


async def main():
    p = peerlib.base_args("push registration peer")
    p.add_argument("--user", required=True)
    p.add_argument("--password", required=True)
    p.add_argument("--component", default="push.example.test")
    p.add_argument("--command", default="register-push-apns")
    p.add_argument("--token", default="")
    p.add_argument("--device-id", default="phone-1")
    p.add_argument("--mode", choices=["register", "multistep", "send"], default="register")
    p.add_argument("--to")
    p.add_argument("--body", action="append", default=[])
    a = p.parse_args()
    peerlib.setup_logging(a.debug)
    if a.mode == "register":
        return await register(a)
    if a.mode == "multistep":
        return await multistep(a)
    return await send(a)


if __name__ == "__main__":
    peerlib.run(main)
