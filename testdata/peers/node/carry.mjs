// carry.mjs: a live stream kept across the death of the user's node, with
// @xmpp/client (same scenario as carry.py).
//
// argv: --host H --port P --domain D --alice JID --alice-password PW
//       --bob JID --bob-password PW --kill-url URL [--messages N=5]
//       [--before K=2] [--pushed-url URL --push-jid JID --push-node NODE]
//       [--timeout S=30]
// JSON: {"ok", "disconnected", "alice", "bob", "acked", "sent", "pushed",
//   "resumed", "after"} as in carry.py.
import { args, body, connectClient, run, stopAll, waitFor, withTimeout, xml } from "./lib.mjs";

async function main() {
  const a = args({
    alice: { type: "string" },
    "alice-password": { type: "string" },
    bob: { type: "string" },
    "bob-password": { type: "string" },
    "kill-url": { type: "string" },
    messages: { type: "string", default: "5" },
    before: { type: "string", default: "2" },
    "pushed-url": { type: "string" },
    "push-jid": { type: "string" },
    "push-node": { type: "string" },
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
  if (a["pushed-url"]) {
    // Not through iqCaller: in @xmpp/client 0.14 its middleware runs
    // before stream management's and swallows the replies it awaits, so
    // they are not counted for XEP-0198 and the client's <resume h/> is
    // one short (the server then sends the last stanza again).
    const result = new Promise((r) => alice.on("stanza", (st) => st.attrs.id === "push1" && r(st)));
    await alice.send(xml("iq", { type: "set", id: "push1" },
      xml("enable", { xmlns: "urn:xmpp:push:0", jid: a["push-jid"], node: a["push-node"] })));
    await withTimeout(result, a.timeoutMs, "push enabled");
  }
  await alice.send(xml("presence"));
  const bob = await connectClient({
    host: a.host, port: a.port, domain: a.domain, jid: a.bob, password: a["bob-password"],
    resource: "desk", onStanza: into(obs.bob),
  });
  await bob.send(xml("presence"));
  alice.on("disconnect", () => {
    obs.disconnected = true;
  });
  let sent = a["pushed-url"] ? 2 : 1; // her push registration, her presence
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
  if (ok && a["pushed-url"]) {
    // Hibernate: abort her connection; bob writes; her new primary pushes;
    // she resumes through the same node.
    alice.reconnect.stop();
    const down = new Promise((r) => alice.once("disconnect", r));
    alice.socket.socket.destroy();
    await down;
    const seen = obs.alice.length;
    for (let i = 0; i < n; i++) {
      await bob.send(xml("message", { to: a.alice, type: "chat" }, xml("body", {}, `away ${i}`)));
    }
    obs.pushed = (await fetch(a["pushed-url"])).status === 200;
    const resumed = new Promise((r) => sm.once("resumed", () => r(true)));
    const online = new Promise((r) => alice.once("online", () => r(false)));
    await alice.reconnect.reconnect();
    obs.resumed = await Promise.race([resumed, online]);
    try {
      await waitFor(() => obs.alice.length >= seen + n, a.timeoutMs, "messages after resuming");
    } catch {
      ok = false;
    }
    obs.after = obs.alice.slice(seen);
    ok = ok && obs.pushed && obs.resumed;
  }
  await stopAll(alice, bob);
  obs.disconnected = dropped;
  return [obs, ok];
}

run(main);
