#!/usr/bin/python3
"""resume.py: XEP-0198 resumption after an abrupt disconnect.

alice enables stream management with resume; bob sends --before messages
that alice receives live; alice's TCP connection is then aborted (no
</stream:stream>, no TLS close); bob sends --messages N messages; alice
reconnects and resumes (session_resumed, not a new session) and collects
what arrives.

argv: --host H --port P --domain D --alice JID --alice-password PW
      --bob JID --bob-password PW [--messages N=5] [--before K=2] [--timeout S=30]
JSON: {"ok", "sm_id", "resumed" (bool: session_resumed fired),
  "new_session" (bool: a fresh session_start happened instead),
  "before" (bodies received before the drop), "after" (bodies received
  after resuming, in order), "all" (every body in order), "duplicates"
  (bodies received more than once), "expected" (bodies bob sent while
  alice was away)}
"""
import asyncio

import peerlib


async def main():
    p = peerlib.base_args("XEP-0198 resumption with slixmpp")
    p.add_argument("--alice", required=True)
    p.add_argument("--alice-password", required=True)
    p.add_argument("--bob", required=True)
    p.add_argument("--bob-password", required=True)
    p.add_argument("--messages", type=int, default=5)
    p.add_argument("--before", type=int, default=2)
    a = p.parse_args()
    peerlib.setup_logging(a.debug)

    alice = peerlib.client(a.alice, a.alice_password, "phone")
    alice.register_plugin("xep_0198")
    alice["xep_0198"].allow_resume = True
    bob = peerlib.client(a.bob, a.bob_password, "desk")

    obs = {"before": [], "after": [], "all": [], "resumed": False, "new_session": False, "sm_id": None}
    phase = {"v": "before"}

    def on_msg(m):
        if m["body"] and m["type"] in ("chat", "normal"):
            obs["all"].append(m["body"])
            obs[phase["v"]].append(m["body"])

    alice.add_event_handler("message", on_msg)
    enabled = peerlib.event_future(alice, "sm_enabled")
    await peerlib.connect(alice, a.host, a.port, a.timeout)
    alice.send_presence()
    await asyncio.wait_for(enabled, a.timeout)
    obs["sm_id"] = alice["xep_0198"].sm_id
    await peerlib.connect(bob, a.host, a.port, a.timeout)
    bob.send_presence()

    to = str(alice.boundjid.bare)
    for i in range(a.before):
        bob.send_message(mto=to, mbody="before %d" % i, mtype="chat")
    # Only bob's "before" messages count: an earlier script's unacknowledged
    # message may come first, from the offline store, at login.
    if not await peerlib.wait_for(lambda: len([b for b in obs["before"] if b.startswith("before ")]) >= a.before, a.timeout):
        return obs, False

    # Abrupt drop: no stream close, no TLS close_notify, no final <a/>.
    lost = peerlib.event_future(alice, "disconnected")
    phase["v"] = "lost"
    obs["lost"] = []
    alice.transport.abort()
    await asyncio.wait_for(lost, a.timeout)

    expected = ["away %d" % i for i in range(a.messages)]
    obs["expected"] = expected
    for body in expected:
        bob.send_message(mto=to, mbody=body, mtype="chat")
    # A ping round trip makes sure the server has routed bob's messages
    # before alice comes back.
    bob.register_plugin("xep_0199")
    await bob["xep_0199"].ping(jid=a.domain, timeout=a.timeout)

    resumed = peerlib.event_future(alice, "session_resumed")
    started = peerlib.event_future(alice, "session_start")
    phase["v"] = "after"
    alice.connect(address=(a.host, a.port), force_starttls=True)
    done, _ = await asyncio.wait({resumed, started}, timeout=a.timeout, return_when=asyncio.FIRST_COMPLETED)
    obs["resumed"] = resumed in done
    obs["new_session"] = started in done
    ok = obs["resumed"] and await peerlib.wait_for(lambda: len(obs["after"]) >= a.messages, a.timeout)
    # Give a straggler duplicate a chance to show up: one more round trip
    # through the server on alice's resumed stream.
    alice.register_plugin("xep_0199")
    await alice["xep_0199"].ping(jid=a.domain, timeout=a.timeout)
    seen, dups = set(), []
    for b in obs["all"]:
        if b in seen:
            dups.append(b)
        seen.add(b)
    obs["duplicates"] = dups
    await peerlib.disconnect(alice, bob)
    return obs, ok


if __name__ == "__main__":
    peerlib.run(main)
