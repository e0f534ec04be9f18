// chat.mjs: two @xmpp/client users log in (STARTTLS + SCRAM-SHA-256),
// subscribe to each other, exchange presence and --messages messages each way.
//
// argv: --host H --port P --domain D --alice JID --alice-password PW
//       --bob JID --bob-password PW [--messages N=3] [--timeout S=30]
// JSON: {"ok", "alice": {...}, "bob": {...}}; each side has "tls", "mech",
//   "subscribed_by", "presence_from", "bodies" (in order), "roster" ({jid: subscription}),
//   "redirects" (see-other-host addresses followed, in order).
import { args, bare, body, connectClient, run, stopAll, waitFor, xml } from "./lib.mjs";

const NS_ROSTER = "jabber:iq:roster";

async function main() {
  const a = args({
    alice: { type: "string" },
    "alice-password": { type: "string" },
    bob: { type: "string" },
    "bob-password": { type: "string" },
    messages: { type: "string", default: "3" },
  });
  const n = parseInt(a.messages, 10);
  const sides = {};
  for (const who of ["alice", "bob"]) {
    const side = { subscribed_by: [], presence_from: [], bodies: [], roster: {} };
    const me = a[who];
    side.onStanza = (st) => {
      const from = bare(st.attrs.from ?? "");
      const b = body(st);
      if (b !== null) side.bodies.push(b);
      if (!st.is("presence") || from === me) return;
      const type = st.attrs.type;
      if (type === "subscribe") {
        // Accept and subscribe back (what slixmpp's auto_authorize does).
        side.xmpp.send(xml("presence", { to: from, type: "subscribed" }));
        side.xmpp.send(xml("presence", { to: from, type: "subscribe" }));
      } else if (type === "subscribed") {
        if (!side.subscribed_by.includes(from)) side.subscribed_by.push(from);
      } else if (type === undefined && !side.presence_from.includes(from)) {
        side.presence_from.push(from);
      }
    };
    side.xmpp = await connectClient({
      host: a.host, port: a.port, domain: a.domain, jid: me, password: a[`${who}-password`],
      resource: "node", onStanza: side.onStanza,
    });
    await side.xmpp.iqCaller.get(xml("query", { xmlns: NS_ROSTER }));
    await side.xmpp.send(xml("presence"));
    sides[who] = side;
  }
  const { alice, bob } = sides;
  await alice.xmpp.send(xml("presence", { to: a.bob, type: "subscribe" }));
  await waitFor(() => alice.subscribed_by.includes(a.bob) && bob.subscribed_by.includes(a.alice)
    && alice.presence_from.includes(a.bob) && bob.presence_from.includes(a.alice), a.timeoutMs, "subscription");
  for (let i = 0; i < n; i++) {
    await alice.xmpp.send(xml("message", { to: a.bob, type: "chat" }, xml("body", {}, `a2b ${i}`)));
    await bob.xmpp.send(xml("message", { to: a.alice, type: "chat" }, xml("body", {}, `b2a ${i}`)));
  }
  await waitFor(() => alice.bodies.length >= n && bob.bodies.length >= n, a.timeoutMs, "messages");
  const out = {};
  for (const [who, side] of Object.entries(sides)) {
    const res = await side.xmpp.iqCaller.get(xml("query", { xmlns: NS_ROSTER }));
    for (const item of res.getChildren("item")) side.roster[item.attrs.jid] = item.attrs.subscription;
    out[who] = {
      tls: side.xmpp.obs.tls, mech: side.xmpp.obs.mech, subscribed_by: side.subscribed_by,
      presence_from: side.presence_from, bodies: side.bodies, roster: side.roster,
      redirects: side.xmpp.obs.redirects,
    };
  }
  await stopAll(alice.xmpp, bob.xmpp);
  return [out, true];
}

run(main);
