// resume.mjs: XEP-0198 resumption after an abrupt disconnect, with
// @xmpp/client's stream-management (same scenario as resume.py).
//
// alice enables SM with resume; bob sends --before messages alice receives
// live; alice's TLS socket is destroyed (no </stream:stream>, no
// close_notify); bob sends --messages N; alice reconnects and must resume.
//
// argv: --host H --port P --domain D --alice JID --alice-password PW
//       --bob JID --bob-password PW [--messages N=5] [--before K=2] [--timeout S=30]
// JSON: {"ok", "sm_id", "resumed", "new_session", "before", "lost", "after",
//   "all", "duplicates", "expected"} as in resume.py.
import { args, body, connectClient, log, run, stopAll, waitFor, withTimeout, xml } from "./lib.mjs";

async function main() {
  const a = args({
    alice: { type: "string" },
    "alice-password": { type: "string" },
    bob: { type: "string" },
    "bob-password": { type: "string" },
    messages: { type: "string", default: "5" },
    before: { type: "string", default: "2" },
  });
  const n = parseInt(a.messages, 10);
  const k = parseInt(a.before, 10);
  const obs = { before: [], lost: [], after: [], all: [], resumed: false, new_session: false, sm_id: null };
  let phase = "before";
  const alice = await connectClient({
    host: a.host, port: a.port, domain: a.domain, jid: a.alice, password: a["alice-password"],
    resource: "phone",
    onStanza: (st) => {
      const b = body(st);
      if (b === null) return;
      obs.all.push(b);
      obs[phase].push(b);
    },
  });
  const sm = alice.streamManagement;
  await waitFor(() => sm.enabled && sm.id, a.timeoutMs, "sm enabled");
  obs.sm_id = sm.id;
  await alice.send(xml("presence"));
  const bob = await connectClient({
    host: a.host, port: a.port, domain: a.domain, jid: a.bob, password: a["bob-password"], resource: "desk",
  });
  await bob.send(xml("presence"));
  for (let i = 0; i < k; i++) {
    await bob.send(xml("message", { to: a.alice, type: "chat" }, xml("body", {}, `before ${i}`)));
  }
  // Only bob's "before" messages count: an earlier script's unacknowledged
  // message may come first, from the offline store, at login.
  await waitFor(() => obs.before.filter((b) => b.startsWith("before ")).length >= k, a.timeoutMs, "messages before the drop");

  // Abrupt drop; we reconnect by hand, after bob has sent.
  alice.reconnect.stop();
  phase = "lost";
  const down = new Promise((r) => alice.once("disconnect", r));
  alice.socket.socket.destroy();
  await withTimeout(down, a.timeoutMs, "disconnect");

  obs.expected = Array.from({ length: n }, (_, i) => `away ${i}`);
  for (const b of obs.expected) {
    await bob.send(xml("message", { to: a.alice, type: "chat" }, xml("body", {}, b)));
  }
  // A ping round trip: the server has routed bob's messages before alice returns.
  await bob.iqCaller.get(xml("ping", { xmlns: "urn:xmpp:ping" }), a.domain);

  phase = "after";
  const resumed = new Promise((r) => sm.once("resumed", () => r("resumed")));
  const online = new Promise((r) => alice.once("online", () => r("online")));
  await alice.reconnect.reconnect();
  const how = await withTimeout(Promise.race([resumed, online]), a.timeoutMs, "resume");
  obs.resumed = how === "resumed";
  obs.new_session = how === "online";
  let ok = obs.resumed;
  if (ok) {
    try {
      await waitFor(() => obs.after.length >= n, a.timeoutMs, "messages after resume");
    } catch (e) {
      log(e.message);
      ok = false;
    }
  }
  // One more round trip on alice's resumed stream so a duplicate would show.
  await alice.iqCaller.get(xml("ping", { xmlns: "urn:xmpp:ping" }), a.domain);
  const seen = new Set();
  obs.duplicates = [];
  for (const b of obs.all) {
    if (seen.has(b)) obs.duplicates.push(b);
    seen.add(b);
  }
  await stopAll(alice, bob);
  return [obs, ok];
}

run(main);
