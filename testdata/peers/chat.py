#!/usr/bin/python3
"""chat.py: alice and bob log in (STARTTLS + SCRAM-SHA-256), subscribe to
each other, exchange presence and --messages messages each way.

argv: --host H --port P --domain D --alice JID --alice-password PW
      --bob JID --bob-password PW [--messages N=3] [--timeout S=30]
JSON: {"ok", "alice": {...}, "bob": {...}} where each side has
  "tls", "session_started", "subscribed_by" (JIDs that accepted our
  subscription), "presence_from" (bare JIDs seen available),
  "bodies" (message bodies received, in order), "roster" ({jid: subscription}).
"""
import asyncio

import peerlib


def bare(j):
    return str(j).split("/")[0]


async def main():
    p = peerlib.base_args("chat between two slixmpp clients")
    p.add_argument("--alice", required=True)
    p.add_argument("--alice-password", required=True)
    p.add_argument("--bob", required=True)
    p.add_argument("--bob-password", required=True)
    p.add_argument("--messages", type=int, default=3)
    a = p.parse_args()
    peerlib.setup_logging(a.debug)

    alice = peerlib.client(a.alice, a.alice_password, "chat")
    bob = peerlib.client(a.bob, a.bob_password, "chat")
    peers = {"alice": alice, "bob": bob}
    for c in peers.values():
        c.auto_authorize = True  # accept subscription requests ...
        c.auto_subscribe = True  # ... and subscribe back
        c.obs.update({"subscribed_by": [], "presence_from": [], "bodies": []})
        c.add_event_handler("presence_subscribed", lambda pr, c=c: c.obs["subscribed_by"].append(bare(pr["from"])))

        def on_avail(pr, c=c):
            f = bare(pr["from"])
            if f != bare(c.boundjid) and f not in c.obs["presence_from"]:
                c.obs["presence_from"].append(f)
        c.add_event_handler("got_online", on_avail)
        c.add_event_handler("message", lambda m, c=c: m["body"] and m["type"] in ("chat", "normal") and c.obs["bodies"].append(m["body"]))

    for c in peers.values():
        await peerlib.connect(c, a.host, a.port, a.timeout)
        await c.get_roster()
        c.send_presence()

    alice.send_presence_subscription(pto=bare(bob.boundjid))
    both = lambda: (bare(bob.boundjid) in alice.obs["subscribed_by"] and bare(alice.boundjid) in bob.obs["subscribed_by"]
                    and bare(bob.boundjid) in alice.obs["presence_from"] and bare(alice.boundjid) in bob.obs["presence_from"])
    subscribed = await peerlib.wait_for(both, a.timeout)

    for i in range(a.messages):
        alice.send_message(mto=bare(bob.boundjid), mbody="a2b %d" % i, mtype="chat")
        bob.send_message(mto=bare(alice.boundjid), mbody="b2a %d" % i, mtype="chat")
    got = await peerlib.wait_for(lambda: len(alice.obs["bodies"]) >= a.messages and len(bob.obs["bodies"]) >= a.messages, a.timeout)

    for c in peers.values():
        await c.get_roster()
        r = c.client_roster
        c.obs["roster"] = {str(j): r[j]["subscription"] for j in r if str(j) != bare(c.boundjid)}
    await peerlib.disconnect(alice, bob)
    return {"alice": alice.obs, "bob": bob.obs, "subscribed": subscribed}, subscribed and got


if __name__ == "__main__":
    peerlib.run(main)
