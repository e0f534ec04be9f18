// Shared helpers for the @xmpp/client test peers.
//
// Every script prints one JSON object on its last stdout line with what it
// observed and exits non-zero when it could not finish its scenario.
// Servers under test use self-signed certificates: the runner sets
// NODE_TLS_REJECT_UNAUTHORIZED=0. Login is forced to SCRAM-SHA-256 over
// STARTTLS (@xmpp/client 0.14 ships SCRAM-SHA-1 and PLAIN only, so the
// mechanism is added here).
import crypto from "node:crypto";
import { parseArgs } from "node:util";
import { client, xml } from "@xmpp/client";

export { xml };

export const MECH = "SCRAM-SHA-256";

const NS_STREAM = "http://etherx.jabber.org/streams";
const NS_STREAM_ERRORS = "urn:ietf:params:xml:ns:xmpp-streams";

// ScramSha256 follows the saslmechanisms interface used by @xmpp/sasl.
// Strings are binary strings (atob/btoa), as @xmpp/base64 uses.
class ScramSha256 {
  get name() {
    return MECH;
  }
  get clientFirst() {
    return true;
  }
  constructor() {
    this.stage = 0;
  }
  response(cred) {
    if (this.stage === 0) {
      this.nonce = crypto.randomBytes(18).toString("base64");
      const user = cred.username.replace(/=/g, "=3D").replace(/,/g, "=2C");
      this.bare = `n=${user},r=${this.nonce}`;
      this.stage = 1;
      return "n,," + this.bare;
    }
    if (this.stage === 2) {
      this.stage = 3;
      return this.final;
    }
    return "";
  }
  challenge(chal) {
    const attrs = Object.fromEntries(
      chal.split(",").map((kv) => [kv[0], kv.slice(2)]),
    );
    if (this.stage === 1) {
      if (!attrs.r?.startsWith(this.nonce)) throw new Error("SCRAM: bad server nonce");
      const salt = Buffer.from(attrs.s, "base64");
      const iter = parseInt(attrs.i, 10);
      const salted = crypto.pbkdf2Sync(this.password, salt, iter, 32, "sha256");
      const clientKey = hmac(salted, "Client Key");
      const storedKey = crypto.createHash("sha256").update(clientKey).digest();
      const withoutProof = `c=biws,r=${attrs.r}`;
      const authMessage = `${this.bare},${chal},${withoutProof}`;
      const sig = hmac(storedKey, authMessage);
      const proof = Buffer.alloc(32);
      for (let i = 0; i < 32; i++) proof[i] = clientKey[i] ^ sig[i];
      this.serverSig = hmac(hmac(salted, "Server Key"), authMessage).toString("base64");
      this.final = `${withoutProof},p=${proof.toString("base64")}`;
      this.stage = 2;
    } else if (attrs.v !== undefined && attrs.v !== this.serverSig) {
      throw new Error("SCRAM: bad server signature");
    }
  }
}

function hmac(key, msg) {
  return crypto.createHmac("sha256", key).update(msg).digest();
}

// connectClient logs in jid/password with SCRAM-SHA-256 over STARTTLS and
// resolves once online. It rejects if the server does not offer the mech.
export async function connectClient({ host, port, domain, jid, password, resource, onStanza }) {
  const [local] = jid.split("@");
  const obs = { mech: null, tls: false, online: 0, redirects: [] };
  const xmpp = client({
    service: `xmpp://${host}:${port}`,
    domain,
    resource,
    credentials: async (authenticate, mechanisms) => {
      if (!mechanisms.includes(MECH)) throw new Error(`server offers ${mechanisms}, not ${MECH}`);
      obs.tls = xmpp.isSecure();
      if (!obs.tls) throw new Error("refusing to authenticate without TLS");
      obs.mech = MECH;
      await authenticate({ username: local, password }, MECH);
    },
  });
  // Add SCRAM-SHA-256 ahead of the stock mechanisms; it carries the password.
  xmpp.saslFactory._mechs.unshift({
    name: MECH,
    mech: class extends ScramSha256 {
      constructor() {
        super();
        this.password = password;
      }
    },
  });
  xmpp.on("error", (err) => log(`${jid}: error: ${err.message || err}`));
  xmpp.on("online", () => {
    obs.online += 1;
  });
  // @xmpp/connection follows see-other-host itself (no "error" event);
  // the redirects are recorded from the element.
  xmpp.on("element", (el) => {
    if (el.is("error", NS_STREAM)) {
      const to = el.getChildText("see-other-host", NS_STREAM_ERRORS);
      if (to !== null) obs.redirects.push(to);
    }
  });
  if (onStanza) xmpp.on("stanza", onStanza);
  xmpp.obs = obs;
  await withTimeout(xmpp.start(), 30_000, `${jid} login`);
  return xmpp;
}

export function args(extra = {}) {
  const { values } = parseArgs({
    options: {
      host: { type: "string", default: process.env.PEER_HOST ?? "127.0.0.1" },
      port: { type: "string", default: process.env.PEER_PORT ?? "5222" },
      domain: { type: "string", default: process.env.PEER_DOMAIN ?? "example.test" },
      timeout: { type: "string", default: process.env.PEER_TIMEOUT ?? "30" },
      ...extra,
    },
  });
  values.timeoutMs = parseFloat(values.timeout) * 1000;
  return values;
}

export function log(msg) {
  process.stderr.write(`${new Date().toISOString()} ${msg}\n`);
}

export function withTimeout(p, ms, what) {
  let t;
  return Promise.race([
    p,
    new Promise((_, rej) => {
      t = setTimeout(() => rej(new Error(`timeout: ${what}`)), ms);
    }),
  ]).finally(() => clearTimeout(t));
}

export async function waitFor(cond, ms, what) {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`timeout: ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

export function bare(j) {
  return String(j).split("/")[0];
}

export function body(stanza) {
  if (!stanza.is("message")) return null;
  const t = stanza.attrs.type ?? "normal";
  if (t !== "chat" && t !== "normal") return null;
  return stanza.getChildText("body");
}

export async function stopAll(...clients) {
  for (const c of clients) {
    c.reconnect?.stop();
    try {
      await withTimeout(c.stop(), 5_000, "stop");
    } catch (e) {
      log(`stop: ${e.message}`);
    }
  }
}

// run prints main's observations as the last line and sets the exit code.
export function run(main) {
  main()
    .then(([obj, ok]) => emit(obj, ok))
    .catch((e) => {
      log(e.stack || String(e));
      emit({ error: String(e.message || e) }, false);
    });
}

function emit(obj, ok) {
  obj.ok = Boolean(ok);
  process.stdout.write(JSON.stringify(obj) + "\n", () => process.exit(ok ? 0 : 1));
}
