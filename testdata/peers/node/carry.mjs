// carry.mjs: a live stream kept across the death of the user's node, with
// @xmpp/client (same scenario as carry.py).
//
// argv: --host H --port P --domain D --alice JID --alice-password PW
//       --bob JID --bob-password PW --kill-url URL [--messages N=5]
//       [--before K=2] [--timeout S=30]
// JSON: {"ok", "disconnected", "alice", "bob", "acked", "sent"} as in carry.py.
import { args, body, connectClient, run, stopAll, waitFor, xml } from "./lib.mjs";

async function main() {
  const a = args({
    alice: { type: "string" },
    "alice-password": { type: "string" },
    bob: { type: "string" },
    "bob-password": { type: "string" },
    "kill-url": { type: "string" },
    messages: { type: "string", default: "5" },
    before: { type: "string", default: "2" },
  });
  const n = parseInt(a.messages, 10);
  const k = parseInt(a.before, 10);
  const obs = { alice: [], bob: [], disconnected: false };
  const into = (list) => (st) => {
    const b = body(st);
    if (b !== null) list.push(b);
  };
  const alice = await connectClient({
    host: a.host, port: a.port, domain: a.domain, jid: a.alice, password: a["alice-password"],
    resource: "phone", onStanza: into(obs.alice),
  });
  const sm = alice.streamManagement;
  await waitFor(() => sm.enabled && sm.id, a.timeoutMs, "sm enabled");
  await alice.send(xml("presence"));
  const bob = await connectClient({
    host: a.host, port: a.port, domain: a.domain, jid: a.bob, password: a["bob-password"],
    resource: "desk", onStanza: into(obs.bob),
  });
  await bob.send(xml("presence"));
  alice.on("disconnect", () => {
    obs.disconnected = true;
  });
  let sent = 1; // her presence
  const exchange = async (prefix, count) => {
    for (let i = 0; i < count; i++) {
      await bob.send(xml("message", { to: a.alice, type: "chat" }, xml("body", {}, `${prefix} ${i}`)));
      await alice.send(xml("message", { to: bob.jid.toString(), type: "chat" }, xml("body", {}, `a ${prefix} ${i}`)));
      sent++;
    }
  };
  // @xmpp/client asks for an acknowledgement shortly after it sends.
  await exchange("before", k);
  await waitFor(() => obs.alice.length >= k && obs.bob.length >= k, a.timeoutMs, "messages before");
  await waitFor(() => sm.outbound === sent, a.timeoutMs, "acknowledgement before");

  const res = await fetch(a["kill-url"]);
  await res.text();
  await exchange("window", n);
  let ok = true;
  try {
    await waitFor(() => obs.alice.length >= k + n && obs.bob.length >= k + n, a.timeoutMs, "messages in the window");
    await waitFor(() => sm.outbound === sent, a.timeoutMs, "acknowledgement after");
  } catch {
    ok = false;
  }
  obs.acked = sm.outbound;
  obs.sent = sent;
  const dropped = obs.disconnected;
  await stopAll(alice, bob);
  obs.disconnected = dropped;
  return [obs, ok];
}

run(main);
