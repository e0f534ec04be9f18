#!/usr/bin/python3
"""carry.py: a live stream kept across the death of the user's node.

alice and bob connect to the same node, which is not alice's primary;
alice enables stream management with resume. They exchange --before
messages each way, all acknowledged. The script then asks the test to kill
alice's primary (GET --kill-url, which returns once it is dead) and at
once both send --messages more, in the detection window. Alice's
connection must stay up: the node she reached carries her stream on.

argv: --host H --port P --domain D --alice JID --alice-password PW
      --bob JID --bob-password PW --kill-url URL [--messages N=5]
      [--before K=2] [--timeout S=30]
JSON: {"ok", "disconnected" (alice's connection dropped), "alice" (bodies
  alice got, in order), "bob" (bodies bob got from alice, in order),
  "acked" (alice's stanzas the server acknowledged, by its last <a h/>),
  "sent" (alice's stanzas counted by her XEP-0198 sequence)}
"""
import asyncio
import urllib.request

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
    await peerlib.disconnect(alice, bob)
    obs["disconnected"] = dropped
    return obs, ok


if __name__ == "__main__":
    peerlib.run(main)
