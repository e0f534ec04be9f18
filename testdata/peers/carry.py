#!/usr/bin/python3
"""carry.py: a live stream kept across the death of the user's node.

alice and bob connect to the same node, which is not alice's primary;
alice enables stream management with resume. They exchange --before
messages each way, all acknowledged. The script then asks the test to kill
alice's primary (GET --kill-url, which returns once it is dead) and at
once both send --messages more, in the detection window. Alice's
connection must stay up: the node she reached carries her stream on.
With --pushed-url, alice has enabled push (XEP-0357, --push-jid and
--push-node) at the start; after the window her connection is aborted,
bob sends --messages more, the script asks the test whether her new
primary pushed (GET --pushed-url answers 200 once it did), and she
resumes through the same node.

argv: --host H --port P --domain D --alice JID --alice-password PW
      --bob JID --bob-password PW --kill-url URL [--messages N=5]
      [--before K=2] [--pushed-url URL --push-jid JID --push-node NODE]
      [--timeout S=30]
JSON: {"ok", "disconnected" (alice's connection dropped), "alice" (bodies
  alice got, in order), "bob" (bodies bob got from alice, in order),
  "acked" (alice's stanzas the server acknowledged, by its last <a h/>),
  "sent" (alice's stanzas counted by her XEP-0198 sequence), "resumed",
  "after" (bodies after resuming, in order)}
"""
import asyncio
import urllib.request
import xml.etree.ElementTree as ET

import peerlib


async def main():
    p = peerlib.base_args("a stream carried on across a node's death, with slixmpp")
    p.add_argument("--alice", required=True)
    p.add_argument("--alice-password", required=True)
    p.add_argument("--bob", required=True)
    p.add_argument("--bob-password", required=True)
    p.add_argument("--kill-url", required=True)
    p.add_argument("--messages", type=int, default=5)
    p.add_argument("--before", type=int, default=2)
    p.add_argument("--pushed-url")
    p.add_argument("--push-jid")
    p.add_argument("--push-node")
    a = p.parse_args()
    peerlib.setup_logging(a.debug)

    alice = peerlib.client(a.alice, a.alice_password, "phone")
    alice.register_plugin("xep_0198")
    alice["xep_0198"].allow_resume = True
    bob = peerlib.client(a.bob, a.bob_password, "desk")
    obs = {"alice": [], "bob": [], "disconnected": False}

    def body_to(into):
        def on_msg(m):
            if m["body"] and m["type"] in ("chat", "normal"):
                obs[into].append(m["body"])
        return on_msg

    alice.add_event_handler("message", body_to("alice"))
    bob.add_event_handler("message", body_to("bob"))
    enabled = peerlib.event_future(alice, "sm_enabled")
    await peerlib.connect(alice, a.host, a.port, a.timeout)
    alice.send_presence()
    await asyncio.wait_for(enabled, a.timeout)
    if a.pushed_url:
        iq = alice.make_iq_set()
        iq.xml.append(ET.fromstring("<enable xmlns='urn:xmpp:push:0' jid='%s' node='%s'/>" % (a.push_jid, a.push_node)))
        await iq.send(timeout=a.timeout)
    await peerlib.connect(bob, a.host, a.port, a.timeout)
    bob.send_presence()
    alice.add_event_handler("disconnected", lambda _: obs.__setitem__("disconnected", True))

    to_alice, to_bob = str(alice.boundjid.bare), str(bob.boundjid)
    sm = alice["xep_0198"]

    def exchange(prefix, n):
        for i in range(n):
            bob.send_message(mto=to_alice, mbody="%s %d" % (prefix, i), mtype="chat")
            alice.send_message(mto=to_bob, mbody="a %s %d" % (prefix, i), mtype="chat")

    exchange("before", a.before)
    if not await peerlib.wait_for(lambda: len(obs["alice"]) >= a.before and len(obs["bob"]) >= a.before, a.timeout):
        return obs, False
    # Everything alice sent so far acknowledged: none of it may come again.
    sm.request_ack()
    if not await peerlib.wait_for(lambda: sm.last_ack == sm.seq, a.timeout):
        return obs, False

    loop = asyncio.get_event_loop()
    await loop.run_in_executor(None, lambda: urllib.request.urlopen(a.kill_url, timeout=a.timeout).read())
    exchange("window", a.messages)
    want = a.before + a.messages
    ok = await peerlib.wait_for(lambda: len(obs["alice"]) >= want and len(obs["bob"]) >= want, a.timeout)
    sm.request_ack()
    ok = ok and await peerlib.wait_for(lambda: sm.last_ack == sm.seq, a.timeout)
    obs["acked"], obs["sent"] = sm.last_ack, sm.seq
    dropped = obs["disconnected"]
    if ok and a.pushed_url:
        ok = await hibernate_and_resume(a, alice, bob, obs, to_alice)
    await peerlib.disconnect(alice, bob)
    obs["disconnected"] = dropped
    return obs, ok


async def hibernate_and_resume(a, alice, bob, obs, to_alice):
    """Abort alice's connection, have bob write, wait for the push, resume."""
    lost = peerlib.event_future(alice, "disconnected")
    alice.transport.abort()
    await asyncio.wait_for(lost, a.timeout)
    seen = len(obs["alice"])
    for i in range(a.messages):
        bob.send_message(mto=to_alice, mbody="away %d" % i, mtype="chat")
    loop = asyncio.get_event_loop()
    status = await loop.run_in_executor(None, lambda: urllib.request.urlopen(a.pushed_url, timeout=a.timeout).status)
    obs["pushed"] = status == 200
    resumed = peerlib.event_future(alice, "session_resumed")
    alice.connect(address=(a.host, a.port), force_starttls=True)
    try:
        await asyncio.wait_for(resumed, a.timeout)
        obs["resumed"] = True
    except asyncio.TimeoutError:
        obs["resumed"] = False
        return False
    ok = await peerlib.wait_for(lambda: len(obs["alice"]) >= seen + a.messages, a.timeout)
    obs["after"] = obs["alice"][seen:]
    return ok and obs["pushed"]


if __name__ == "__main__":
    peerlib.run(main)
