#!/usr/bin/python3
"""pushclient.py: a slixmpp client driven by line commands on stdin, so a
test can orchestrate multi-step XEP-0357 / XEP-0198 / XEP-0352 scenarios
step by step.

argv: --host H --port P --domain D --jid BAREJID --password PW
      [--auto-approve] [--timeout S=30] [--debug]

Protocol: one command per stdin line, words separated by spaces (a BODY or
STATUS is the rest of the line). Commands run one at a time, in order, and
each prints exactly ONE JSON object line on stdout:
  {"cmd": VERB, "ok": bool, ...; "error": text when ok is false}
Nothing else is ever printed on stdout (logs go to stderr). EOF on stdin
acts like quit. Every command that sends something returns only once the
server has processed it (an XEP-0198 ack, or a ping round trip), so the
next command sees its effect.

Commands and their answers (besides cmd/ok):
  login RESOURCE        STARTTLS, SCRAM-SHA-256, bind RESOURCE, enable
                        XEP-0198 with resume, roster get, initial presence
                        -> {"jid", "sm_id", "mech", "tls"}
  enable APPSERVER NODE SECRET [ENCKEY_B64 ALG]
                        XEP-0357 enable with a publish-options form
                        (FORM_TYPE pubsub#publish-options, field secret) and,
                        with ENCKEY_B64, <encrypt xmlns='tigase:push:encrypt:0'
                        alg=ALG>ENCKEY_B64</encrypt>
                        -> {"type": "result"|"error", "error": condition|null,
                            "error_type": type|null}  (ok = type is result)
  disable APPSERVER [NODE]   XEP-0357 disable -> like enable
  inactive | active     XEP-0352 nonza, then a ping round trip -> {}
  drop [nosync]         abort the TCP connection: no </stream>, no TLS
                        close. By default first makes the server's SM queue
                        empty (ping, then <a h/> + <r/> and wait for the
                        server's <a/>), so what the server holds for the
                        device afterwards is only what arrives later.
                        nosync: abort at once. -> {"handled", "sm_id"}
  resume                reconnect and resume the XEP-0198 session
                        -> {"resumed": bool, "new_session": bool}
                        (ok = resumed)
  rebind RESOURCE       new connection and new session binding the same
                        resource (not a resumption; the old connection is
                        aborted first if still open) -> like login
  send TO BODY...       <message type='chat'>, returns when the server has
                        acked it (XEP-0198) -> {"id", "acked"}
  presence [SHOW [STATUS...]]  SHOW: available|away|chat|dnd|xa|unavailable
  subscribe TO | approve TO | unsubscribe TO   presence subscription stanzas
  auto-approve on|off   accept (and reciprocate) subscriptions automatically
  wait-messages N TIMEOUT
                        wait until N messages (with a body) arrived since the
                        last wait-messages, or TIMEOUT seconds; returns them
                        and forgets them -> {"bodies": [...], "from": [...],
                        "messages": [{"from","body","id","type","delayed"}],
                        "duplicates": bodies already received before (ever,
                        in this process) or twice in this batch}
                        (ok = at least N arrived; N=0 returns at once)
  presences [N TIMEOUT] presence stanzas received since the last call
                        (waiting for N of them when given)
                        -> {"presences": [{"from","type","show","status"}]}
  roster                -> {"items": {jid: subscription}}
  disco JID [NODE]      disco#info -> {"identities": [{"category","type","name"}],
                        "features": [...]}
  ping                  round trip to the server -> {}
  raw XML               send XML as is (then a ping round trip) -> {}
  state                 -> {"connected","jid","sm_id","handled","seq","last_ack"}
  logout                clean close (</stream:stream>) -> {}
  quit                  answer, then exit 0
"""
import asyncio
import json
import logging
import os
import sys
import xml.etree.ElementTree as ET

from slixmpp.exceptions import IqError, IqTimeout
from slixmpp.plugins.xep_0198 import stanza as smst
from slixmpp.xmlstream.handler import Callback
from slixmpp.xmlstream.matcher import MatchXPath

import peerlib

NS_PUSH = "urn:xmpp:push:0"
NS_DATA = "jabber:x:data"
NS_ENC = "tigase:push:encrypt:0"
NS_SM = "urn:xmpp:sm:3"
NS_CSI = "urn:xmpp:csi:0"
NS_DISCO_INFO = "http://jabber.org/protocol/disco#info"
PUBLISH_OPTIONS = "http://jabber.org/protocol/pubsub#publish-options"


class Fail(Exception):
    pass


def out(obj):
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


class PushClient:
    def __init__(self, a):
        self.a = a
        self.c = None
        self.connected = False
        self.auto = a.auto_approve
        self.seen = {}  # body -> times received (whole process)
        self.msgs = []  # since the last wait-messages
        self.pres = []  # since the last presences
        self.acks_in = 0  # <a/> received from the server
        self.sent_seq = {}  # message id -> XEP-0198 sequence number

    # --- client setup -------------------------------------------------
    def make_client(self, resource):
        c = peerlib.client(self.a.jid, self.a.password, resource)
        c.register_plugin("xep_0198")
        c["xep_0198"].allow_resume = True
        c.register_plugin("xep_0199")
        c.auto_authorize = self.auto
        c.auto_subscribe = self.auto
        c.add_event_handler("message", lambda m, c=c: self.on_message(c, m))
        c.add_event_handler("presence", lambda p, c=c: self.on_presence(c, p))
        c.add_event_handler("disconnected", lambda _e, c=c: self.on_disconnected(c))
        c.register_handler(Callback("pushclient ack", MatchXPath(smst.Ack.tag_name()), self.on_ack))

        def track(stanza, c=c):  # runs after xep_0198's out_sync filter
            mid = stanza["id"] if stanza.name == "message" else None
            if mid and mid in self.sent_seq and self.sent_seq[mid] is None:
                self.sent_seq[mid] = c["xep_0198"].seq
            return stanza

        c.add_filter("out_sync", track)
        return c

    def on_message(self, c, m):
        if c is not self.c or not m["body"]:
            return
        if m["type"] not in ("chat", "normal", "groupchat"):
            return
        self.msgs.append({
            "from": m["from"].full,
            "body": m["body"],
            "id": m["id"] or None,
            "type": m["type"],
            "delayed": m.xml.find("{urn:xmpp:delay}delay") is not None,
        })

    def on_presence(self, c, p):
        if c is not self.c:
            return
        self.pres.append({
            "from": p["from"].full,
            "type": p["type"] if p["type"] in ("unavailable", "subscribe", "subscribed", "unsubscribe", "unsubscribed", "probe", "error") else "available",
            "show": p["show"] or None,
            "status": p["status"] or None,
        })

    def on_disconnected(self, c):
        if c is self.c:
            self.connected = False

    def on_ack(self, _a):
        self.acks_in += 1

    def need(self):
        if self.c is None or not self.connected:
            raise Fail("not connected")
        return self.c

    async def ping(self, c=None):
        c = c or self.need()
        iq = c.Iq()
        iq["type"] = "get"
        iq["to"] = self.a.domain
        iq.enable("ping")
        await iq.send(timeout=self.a.timeout)

    async def session(self, resource):
        c = self.make_client(resource)
        self.c = c
        enabled = peerlib.event_future(c, "sm_enabled")
        sm_failed = peerlib.event_future(c, "sm_failed")
        await peerlib.connect(c, self.a.host, self.a.port, self.a.timeout)
        self.connected = True
        done, _ = await asyncio.wait({enabled, sm_failed}, timeout=self.a.timeout, return_when=asyncio.FIRST_COMPLETED)
        if enabled not in done:
            raise Fail("stream management not enabled")
        await c.get_roster(timeout=self.a.timeout)
        c.send_presence()
        await self.ping(c)
        return {"jid": c.boundjid.full, "sm_id": c["xep_0198"].sm_id, "mech": c.obs.get("mech"), "tls": c.obs["tls"]}

    # --- commands -----------------------------------------------------
    async def cmd_login(self, args):
        if len(args) != 1:
            raise Fail("usage: login RESOURCE")
        if self.c is not None and self.connected:
            raise Fail("already logged in")
        return await self.session(args[0])

    async def cmd_rebind(self, args):
        if len(args) != 1:
            raise Fail("usage: rebind RESOURCE")
        old = self.c
        if old is not None and self.connected and old.transport:
            lost = peerlib.event_future(old, "disconnected")
            old.transport.abort()
            await asyncio.wait_for(lost, self.a.timeout)
        self.connected = False
        r = await self.session(args[0])
        r["resumed"] = False
        return r

    async def push_iq(self, el):
        c = self.need()
        iq = c.Iq()
        iq["type"] = "set"
        iq.append(el)
        try:
            await iq.send(timeout=self.a.timeout)
            return {"type": "result", "error": None, "error_type": None}
        except IqError as e:
            return {"type": "error", "error": e.iq["error"]["condition"], "error_type": e.iq["error"]["type"], "ok": False}
        except IqTimeout:
            raise Fail("no answer to the IQ")

    async def cmd_enable(self, args):
        if len(args) not in (3, 5):
            raise Fail("usage: enable APPSERVER NODE SECRET [ENCKEY_B64 ALG]")
        el = ET.Element("{%s}enable" % NS_PUSH, {"jid": args[0], "node": args[1]})
        x = ET.SubElement(el, "{%s}x" % NS_DATA, {"type": "submit"})
        for var, val in (("FORM_TYPE", PUBLISH_OPTIONS), ("secret", args[2])):
            f = ET.SubElement(x, "{%s}field" % NS_DATA, {"var": var})
            ET.SubElement(f, "{%s}value" % NS_DATA).text = val
        if len(args) == 5:
            enc = ET.SubElement(el, "{%s}encrypt" % NS_ENC, {"alg": args[4]})
            enc.text = args[3]
        return await self.push_iq(el)

    async def cmd_disable(self, args):
        if len(args) not in (1, 2):
            raise Fail("usage: disable APPSERVER [NODE]")
        attrs = {"jid": args[0]}
        if len(args) == 2:
            attrs["node"] = args[1]
        return await self.push_iq(ET.Element("{%s}disable" % NS_PUSH, attrs))

    async def nonza(self, xml):
        c = self.need()
        c.send(xml)  # queued in order with stanzas
        await self.ping(c)
        return {}

    async def cmd_inactive(self, _args):
        return await self.nonza("<inactive xmlns='%s'/>" % NS_CSI)

    async def cmd_active(self, _args):
        return await self.nonza("<active xmlns='%s'/>" % NS_CSI)

    async def cmd_raw(self, args):
        if not args:
            raise Fail("usage: raw XML")
        return await self.nonza(" ".join(args))

    async def cmd_drop(self, args):
        c = self.need()
        sm = c["xep_0198"]
        if not args or args[0] != "nosync":
            await self.ping(c)
            n0 = self.acks_in
            c.send("<a xmlns='%s' h='%d'/>" % (NS_SM, sm.handled))
            c.send("<r xmlns='%s'/>" % NS_SM)
            if not await peerlib.wait_for(lambda: self.acks_in > n0, self.a.timeout):
                raise Fail("server did not answer <r/>")
        lost = peerlib.event_future(c, "disconnected")
        c.transport.abort()
        await asyncio.wait_for(lost, self.a.timeout)
        self.connected = False
        return {"handled": sm.handled, "sm_id": sm.sm_id}

    async def cmd_resume(self, _args):
        c = self.c
        if c is None:
            raise Fail("never logged in")
        if self.connected:
            raise Fail("still connected")
        resumed = peerlib.event_future(c, "session_resumed")
        started = peerlib.event_future(c, "session_start")
        c.connect(address=(self.a.host, self.a.port), force_starttls=True)
        done, _ = await asyncio.wait({resumed, started}, timeout=self.a.timeout, return_when=asyncio.FIRST_COMPLETED)
        if not done:
            raise Fail("neither resumed nor a new session")
        self.connected = True
        ok = resumed in done
        return {"resumed": ok, "new_session": started in done, "ok": ok}

    async def cmd_send(self, args):
        if len(args) < 2:
            raise Fail("usage: send TO BODY...")
        c = self.need()
        sm = c["xep_0198"]
        m = c.make_message(mto=args[0], mbody=" ".join(args[1:]), mtype="chat")
        m["id"] = c.new_id()
        mid = m["id"]
        if sm.enabled_out:
            self.sent_seq[mid] = None
            m.send()
            c.send("<r xmlns='%s'/>" % NS_SM)
            acked = await peerlib.wait_for(
                lambda: self.sent_seq[mid] is not None and sm.last_ack >= self.sent_seq[mid], self.a.timeout)
            self.sent_seq.pop(mid, None)
            if not acked:
                raise Fail("message not acked by the server")
        else:
            m.send()
            await self.ping(c)
            acked = False
        return {"id": mid, "acked": acked}

    async def cmd_presence(self, args):
        c = self.need()
        show = args[0] if args else "available"
        status = " ".join(args[1:]) or None
        if show == "unavailable":
            c.send_presence(ptype="unavailable", pstatus=status)
        elif show == "available":
            c.send_presence(pstatus=status)
        elif show in ("away", "chat", "dnd", "xa"):
            c.send_presence(pshow=show, pstatus=status)
        else:
            raise Fail("bad show %r" % show)
        await self.ping(c)
        return {}

    async def sub(self, args, ptype):
        if len(args) != 1:
            raise Fail("usage: %s TO" % ptype)
        c = self.need()
        c.send_presence(pto=args[0], ptype=ptype)
        await self.ping(c)
        return {}

    async def cmd_subscribe(self, args):
        return await self.sub(args, "subscribe")

    async def cmd_approve(self, args):
        return await self.sub(args, "subscribed")

    async def cmd_unsubscribe(self, args):
        return await self.sub(args, "unsubscribe")

    async def cmd_auto_approve(self, args):
        if len(args) != 1 or args[0] not in ("on", "off"):
            raise Fail("usage: auto-approve on|off")
        self.auto = args[0] == "on"
        if self.c is not None:
            self.c.auto_authorize = self.auto
            self.c.auto_subscribe = self.auto
        return {"auto_approve": self.auto}

    async def cmd_wait_messages(self, args):
        if len(args) != 2:
            raise Fail("usage: wait-messages N TIMEOUT")
        n, timeout = int(args[0]), float(args[1])
        got = await peerlib.wait_for(lambda: len(self.msgs) >= n, timeout, step=0.01)
        batch, self.msgs = self.msgs, []
        dups = []
        for m in batch:
            b = m["body"]
            if self.seen.get(b):
                dups.append(b)
            self.seen[b] = self.seen.get(b, 0) + 1
        return {"ok": got, "bodies": [m["body"] for m in batch], "from": [m["from"] for m in batch],
                "messages": batch, "duplicates": dups}

    async def cmd_presences(self, args):
        got = True
        if args:
            if len(args) != 2:
                raise Fail("usage: presences [N TIMEOUT]")
            n, timeout = int(args[0]), float(args[1])
            got = await peerlib.wait_for(lambda: len(self.pres) >= n, timeout, step=0.01)
        batch, self.pres = self.pres, []
        return {"ok": got, "presences": batch}

    async def cmd_roster(self, _args):
        c = self.need()
        await c.get_roster(timeout=self.a.timeout)
        r = c.client_roster
        bare = c.boundjid.bare
        return {"items": {str(j): r[j]["subscription"] for j in r if str(j) != bare}}

    async def cmd_disco(self, args):
        if len(args) not in (1, 2):
            raise Fail("usage: disco JID [NODE]")
        c = self.need()
        iq = c.Iq()
        iq["type"] = "get"
        iq["to"] = args[0]
        q = ET.Element("{%s}query" % NS_DISCO_INFO)
        if len(args) == 2:
            q.set("node", args[1])
        iq.append(q)
        try:
            res = await iq.send(timeout=self.a.timeout)
        except IqError as e:
            return {"ok": False, "error": "disco: %s" % e.iq["error"]["condition"], "identities": [], "features": []}
        except IqTimeout:
            raise Fail("no answer to disco#info")
        x = res.xml.find("{%s}query" % NS_DISCO_INFO)
        ids = [{"category": i.get("category"), "type": i.get("type"), "name": i.get("name")}
               for i in (x.findall("{%s}identity" % NS_DISCO_INFO) if x is not None else [])]
        feats = [f.get("var") for f in (x.findall("{%s}feature" % NS_DISCO_INFO) if x is not None else [])]
        return {"identities": ids, "features": feats}

    async def cmd_ping(self, _args):
        await self.ping()
        return {}

    async def cmd_state(self, _args):
        c = self.c
        sm = c["xep_0198"] if c is not None else None
        return {"connected": self.connected, "jid": c.boundjid.full if c else None,
                "sm_id": sm.sm_id if sm else None, "handled": sm.handled if sm else None,
                "seq": sm.seq if sm else None, "last_ack": sm.last_ack if sm else None}

    async def cmd_logout(self, _args):
        c = self.need()
        c.disconnect(wait=self.a.timeout)
        await asyncio.wait_for(c.disconnected, self.a.timeout + 5)
        self.connected = False
        return {}

    async def run(self):
        loop = asyncio.get_event_loop()
        reader = asyncio.StreamReader()
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
        while True:
            line = await reader.readline()
            if not line:
                os._exit(0)
            text = line.decode().strip()
            if not text:
                continue
            verb, _, rest = text.partition(" ")
            rest = rest.strip()
            if verb in ("send", "presence"):  # first word, then the rest of the line
                first, _, tail = rest.partition(" ")
                args = [w for w in (first, tail.strip()) if w]
            elif verb == "raw":
                args = [rest] if rest else []
            else:
                args = rest.split()
            ans = {"cmd": verb}
            if verb == "quit":
                ans["ok"] = True
                out(ans)
                os._exit(0)
            fn = getattr(self, "cmd_" + verb.replace("-", "_"), None)
            try:
                if fn is None:
                    raise Fail("unknown command %r" % verb)
                res = await fn(args)
                ans["ok"] = True
                ans.update(res)
            except Exception as e:  # noqa: BLE001 - the answer carries it
                logging.debug("command %s failed", verb, exc_info=True)
                ans["ok"] = False
                ans["error"] = "%s: %s" % (type(e).__name__, e) if not isinstance(e, Fail) else str(e)
            out(ans)


def main():
    p = peerlib.base_args("line-driven XEP-0357 test client")
    p.add_argument("--jid", required=True)
    p.add_argument("--password", required=True)
    p.add_argument("--auto-approve", action="store_true")
    a = p.parse_args()
    peerlib.setup_logging(a.debug)
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    try:
        loop.run_until_complete(PushClient(a).run())
    except Exception as e:  # noqa: BLE001
        logging.exception("pushclient failed")
        out({"cmd": None, "ok": False, "error": "fatal: %s: %s" % (type(e).__name__, e)})
        os._exit(1)


if __name__ == "__main__":
    main()
