#!/usr/bin/python3
"""appserver.py: an XEP-0357 app server as an XEP-0114 component (slixmpp).

It connects to the router's component port, answers every pubsub publish
IQ it gets according to --mode and prints one JSON line per publish on
stdout as it arrives (flushed). It runs until killed: SIGTERM or SIGINT
exit 0 (EOF on stdin only ends the command reader).

argv: --host H (router, default 127.0.0.1) --component-port CP
      --component DOMAIN --secret S
      [--mode ok|wait|cancel|wait-then-ok] (default ok)
      [--decrypt-key B64] (AES key of an encrypted push, to decrypt it)
      [--reconnect] (reconnect after the router went away, else exit 1)
      [--debug]

Modes (how a publish is answered):
  ok            <iq type='result'/>
  wait          <error type='wait'><resource-constraint/></error>
  cancel        <error type='cancel'><item-not-found/></error>
  wait-then-ok  wait for the first publish, result for every later one

stdin commands (one per line; each answered by one event line):
  mode M        switch mode at run time  -> {"event":"mode","mode":M}
  ping          liveness                 -> {"event":"pong","publishes":N}

stdout, one JSON object per line:
  {"event":"connected","jid":DOMAIN}        handshake accepted (each connect)
  {"event":"disconnected","reason":...}     link lost
  {"event":"stream_error","condition":...}  e.g. not-authorized (bad secret)
  {"event":"disco","from":...,"node":...}   a disco#info query was answered
  {"event":"other","kind":"iq|message|presence","raw":...}  anything else
  {"event":"publish", "seq": n (1-based),
   "from", "to", "id", "node" (publish node), "answer" ("result"|"wait"|"cancel"),
   "form_type" (FORM_TYPE of the notification form or null),
   "fields": {var: value, or [values] when several, or null when none}
             (FORM_TYPE left out), "field_list": [{"var","type","values"}] in
             document order (FORM_TYPE included),
   "publish_options": {var: value...} (FORM_TYPE left out) or null,
   "publish_options_form_type", "publish_options_list": [...] like field_list,
   "encrypted": {"xmlns","iv","payload"} or null (the tigase:push:encrypt
             element of the notification), "decrypted": text or null,
   "notification_children": ["{ns}name", ...] children of <notification/>,
   "raw": the whole IQ as XML}
"""
import asyncio
import base64
import json
import logging
import os
import signal
import sys
import xml.etree.ElementTree as ET
from xml.sax.saxutils import escape as xml_escape

import slixmpp
from slixmpp.xmlstream.handler import Callback
from slixmpp.xmlstream.matcher import MatchXPath

import peerlib

NS_PUBSUB = "http://jabber.org/protocol/pubsub"
NS_PUSH = "urn:xmpp:push:0"
NS_DATA = "jabber:x:data"
NS_DISCO_INFO = "http://jabber.org/protocol/disco#info"
NS_STANZAS = "urn:ietf:params:xml:ns:xmpp-stanzas"
MODES = ("ok", "wait", "cancel", "wait-then-ok")


def out(obj):
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def local(tag):
    return tag.rsplit("}", 1)[-1]


def ns_of(tag):
    return tag[1:].split("}", 1)[0] if tag.startswith("{") else ""


def parse_form(x):
    """(form_type, {var: value}, [{var, type, values}]) of a jabber:x:data form."""
    if x is None:
        return None, None, None
    form_type, fields, flist = None, {}, []
    for f in x.findall("{%s}field" % NS_DATA):
        var = f.get("var")
        values = [v.text or "" for v in f.findall("{%s}value" % NS_DATA)]
        flist.append({"var": var, "type": f.get("type"), "values": values})
        if var == "FORM_TYPE":
            form_type = values[0] if values else None
            continue
        fields[var] = values[0] if len(values) == 1 else (values if values else None)
    return form_type, fields, flist


def decrypt(key_b64, iv_b64, payload_b64):
    try:
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM
        key = base64.b64decode(key_b64)
        plain = AESGCM(key).decrypt(base64.b64decode(iv_b64), base64.b64decode(payload_b64), None)
        return plain.decode("utf-8", "replace")
    except Exception as e:  # noqa: BLE001 - reported, not fatal
        return "decrypt failed: %s: %s" % (type(e).__name__, e)


class AppServer:
    def __init__(self, a):
        self.a = a
        self.mode = a.mode
        self.count = 0
        self.comp = None

    def answer_for(self):
        if self.mode == "wait-then-ok":
            return "wait" if self.count == 1 else "result"
        return {"ok": "result", "wait": "wait", "cancel": "cancel"}[self.mode]

    def on_publish(self, iq):
        self.count += 1
        x = iq.xml
        pubsub = x.find("{%s}pubsub" % NS_PUBSUB)
        publish = pubsub.find("{%s}publish" % NS_PUBSUB) if pubsub is not None else None
        if publish is None or iq["type"] != "set":
            self.other(iq, "iq")
            return
        item = publish.find("{%s}item" % NS_PUBSUB)
        notif = item.find("{%s}notification" % NS_PUSH) if item is not None else None
        form = notif.find("{%s}x" % NS_DATA) if notif is not None else None
        form_type, fields, flist = parse_form(form)
        popts = pubsub.find("{%s}publish-options" % NS_PUBSUB)
        pform = popts.find("{%s}x" % NS_DATA) if popts is not None else None
        p_type, p_fields, p_list = parse_form(pform)
        enc = None
        if notif is not None:
            for c in notif:
                if local(c.tag) == "encrypted" and ns_of(c.tag).startswith("tigase:push:encrypt"):
                    enc = {"xmlns": ns_of(c.tag), "iv": c.get("iv"), "payload": (c.text or "").strip()}
        decrypted = None
        if enc and self.a.decrypt_key:
            decrypted = decrypt(self.a.decrypt_key, enc["iv"], enc["payload"])
        answer = self.answer_for()
        if answer == "result":
            iq.reply(clear=True).send()
        else:
            self.error_reply(iq, answer, "resource-constraint" if answer == "wait" else "item-not-found")
        out({
            "event": "publish",
            "seq": self.count,
            "from": iq["from"].full,
            "to": iq["to"].full,
            "id": iq["id"],
            "node": publish.get("node"),
            "answer": answer,
            "form_type": form_type,
            "fields": fields,
            "field_list": flist,
            "publish_options": p_fields,
            "publish_options_form_type": p_type,
            "publish_options_list": p_list,
            "encrypted": enc,
            "decrypted": decrypted,
            "notification_children": [c.tag for c in notif] if notif is not None else [],
            "raw": str(iq),
        })

    def on_disco(self, iq):
        if iq["type"] != "get":
            self.other(iq, "iq")
            return
        q = iq.xml.find("{%s}query" % NS_DISCO_INFO)
        r = iq.reply(clear=True)
        res = ET.Element("{%s}query" % NS_DISCO_INFO)
        if q is not None and q.get("node"):
            res.set("node", q.get("node"))
        ET.SubElement(res, "{%s}identity" % NS_DISCO_INFO, {"category": "pubsub", "type": "push", "name": "pushd test app server"})
        for f in (NS_DISCO_INFO, NS_PUSH):
            ET.SubElement(res, "{%s}feature" % NS_DISCO_INFO, {"var": f})
        r.append(res)
        r.send()
        out({"event": "disco", "from": iq["from"].full, "node": q.get("node") if q is not None else None})

    def other(self, stanza, kind):
        out({"event": "other", "kind": kind, "raw": str(stanza)})
        if kind == "iq" and stanza["type"] in ("get", "set"):
            self.error_reply(stanza, "cancel", "service-unavailable")

    def error_reply(self, iq, etype, condition):
        # Written by hand: slixmpp 1.8 puts <error/> in jabber:client even
        # on a component stream, and Prosody then reads neither its type
        # nor its condition (and counts it as a non-wait error).
        q = lambda v: xml_escape(v, {'"': "&quot;"})
        self.comp.send('<iq type="error" id="%s" from="%s" to="%s"><error type="%s"><%s xmlns="%s"/></error></iq>' % (
            q(iq["id"]), q(iq["to"].full), q(iq["from"].full), etype, condition, NS_STANZAS))

    def make_component(self):
        a = self.a
        comp = slixmpp.ComponentXMPP(a.component, a.secret, a.host, a.component_port)
        ns = comp.default_ns
        comp.register_handler(Callback("push publish", MatchXPath("{%s}iq/{%s}pubsub" % (ns, NS_PUBSUB)), self.on_publish))
        comp.register_handler(Callback("disco info", MatchXPath("{%s}iq/{%s}query" % (ns, NS_DISCO_INFO)), self.on_disco))
        comp.add_event_handler("session_start", lambda _: out({"event": "connected", "jid": comp.boundjid.full}))
        comp.add_event_handler("stream_error", lambda e: out({"event": "stream_error", "condition": e["condition"], "text": e["text"] or None}))
        comp.add_event_handler("message", lambda m: self.other(m, "message"))
        comp.add_event_handler("presence", lambda p: self.other(p, "presence"))
        return comp

    async def serve(self):
        a = self.a
        delay = 0.05
        while True:
            self.comp = self.make_component()
            lost = peerlib.event_future(self.comp, "disconnected")
            failed = peerlib.event_future(self.comp, "connection_failed")
            self.comp.connect()
            done, _ = await asyncio.wait({lost, failed}, return_when=asyncio.FIRST_COMPLETED)
            reason = str(self.comp.disconnect_reason or "") or ("connection failed" if failed in done else "closed")
            out({"event": "disconnected", "reason": reason})
            if not a.reconnect:
                os._exit(1)
            try:
                self.comp.abort()
            except Exception:  # noqa: BLE001
                pass
            await asyncio.sleep(delay)  # reconnect backoff, not a readiness wait
            delay = min(delay * 2, 1.0)

    async def commands(self):
        loop = asyncio.get_event_loop()
        reader = asyncio.StreamReader()
        try:
            await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
        except Exception:  # noqa: BLE001 - no usable stdin: serve without commands
            return
        while True:
            line = await reader.readline()
            if not line:
                return  # EOF: no more commands; keep serving until killed
            parts = line.decode().split()
            if not parts:
                continue
            if parts[0] == "mode" and len(parts) == 2 and parts[1] in MODES:
                self.mode = parts[1]
                if self.mode == "wait-then-ok":
                    self.count = 0
                out({"event": "mode", "mode": self.mode})
            elif parts[0] == "ping":
                out({"event": "pong", "publishes": self.count})
            else:
                out({"event": "bad_command", "line": line.decode().strip()})


async def main(a):
    srv = AppServer(a)
    loop = asyncio.get_event_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, lambda: os._exit(0))
    await asyncio.gather(srv.serve(), srv.commands())


if __name__ == "__main__":
    p = peerlib.base_args("XEP-0357 app server (XEP-0114 component)")
    p.add_argument("--component-port", type=int, required=True)
    p.add_argument("--component", required=True)
    p.add_argument("--secret", required=True)
    p.add_argument("--mode", choices=MODES, default="ok")
    p.add_argument("--decrypt-key", default=None)
    p.add_argument("--reconnect", action="store_true")
    args = p.parse_args()
    peerlib.setup_logging(args.debug)
    lp = asyncio.new_event_loop()
    asyncio.set_event_loop(lp)
    try:
        lp.run_until_complete(main(args))
    except Exception as e:  # noqa: BLE001
        logging.exception("appserver failed")
        out({"event": "fatal", "error": "%s: %s" % (type(e).__name__, e)})
        sys.stdout.flush()
        os._exit(1)
