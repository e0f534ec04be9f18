"""Shared helpers for the slixmpp test peers (run with /usr/bin/python3).

Every script prints exactly one JSON object on its last stdout line with
what it observed, and exits non-zero when it could not finish its scenario.
Servers under test use self-signed certificates: TLS verification is off.
SASL is forced to SCRAM-SHA-256 (slixmpp would otherwise pick
SCRAM-SHA-*-PLUS with tls-unique, which TLS 1.3 does not have).
"""
import argparse
import asyncio
import json
import logging
import os
import ssl
import sys

import slixmpp

MECH = "SCRAM-SHA-256"


def base_args(description):
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--host", default=os.environ.get("PEER_HOST", "127.0.0.1"))
    p.add_argument("--port", type=int, default=int(os.environ.get("PEER_PORT", "5222")))
    p.add_argument("--domain", default=os.environ.get("PEER_DOMAIN", "example.test"))
    p.add_argument("--timeout", type=float, default=float(os.environ.get("PEER_TIMEOUT", "30")))
    p.add_argument("--debug", action="store_true", default=os.environ.get("PEER_DEBUG") == "1")
    return p


def setup_logging(debug):
    logging.basicConfig(
        stream=sys.stderr,
        level=logging.DEBUG if debug else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )


def insecure(xmpp):
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    xmpp.ssl_context = ctx


def client(jid, password, resource=None):
    if resource and "/" not in jid:
        jid = jid + "/" + resource
    c = slixmpp.ClientXMPP(jid, password, sasl_mech=MECH)
    insecure(c)
    c.obs = {"tls": False, "auth_failed": False, "session_started": 0}

    def on_tls(_):
        c.obs["tls"] = True

    def on_auth_failed(_):
        c.obs["auth_failed"] = True

    def on_stream_error(err):
        if err["condition"] == "see-other-host":
            c.obs.setdefault("redirects", []).append(err["see_other_host"])

    connect = c.connect

    def follow(address=None, **kw):
        # slixmpp 1.8.3 follows see-other-host by storing the new host and
        # port in c.address and calling reconnect(), whose connect() has
        # no address: ClientXMPP.connect would go to the JID's domain on
        # 5222 (SRV) instead, and the host is resolved again with
        # default_port, which drops the port. Go where the server said.
        if address is None and c.obs.get("redirects"):
            address = c.address
            c.default_port = address[1]
        return connect(address=address, **kw)

    c.connect = follow
    c.add_event_handler("tls_success", on_tls)
    c.add_event_handler("failed_auth", on_auth_failed)
    c.add_event_handler("stream_error", on_stream_error)
    return c


def event_future(xmpp, event, predicate=None):
    """A future resolved with the first `event` payload that satisfies predicate."""
    fut = asyncio.get_event_loop().create_future()

    def handler(payload):
        if fut.done():
            return
        if predicate is None or predicate(payload):
            fut.set_result(payload)

    xmpp.add_event_handler(event, handler)
    return fut


async def connect(xmpp, host, port, timeout):
    started = event_future(xmpp, "session_start")
    failed = event_future(xmpp, "failed_all_auth")
    xmpp.connect(address=(host, port), force_starttls=True)
    done, _ = await asyncio.wait({started, failed}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    if started not in done:
        raise RuntimeError("%s: no session (tls=%s auth_failed=%s)" % (xmpp.boundjid, xmpp.obs["tls"], xmpp.obs["auth_failed"]))
    if not xmpp.obs["tls"]:
        raise RuntimeError("%s: session without STARTTLS" % xmpp.boundjid)
    xmpp.obs["session_started"] += 1
    mech = getattr(xmpp["feature_mechanisms"], "mech", None)
    xmpp.obs["mech"] = getattr(mech, "name", None)


async def wait_for(cond, timeout, step=0.02):
    """Poll cond() until true; returns False on timeout."""
    loop = asyncio.get_event_loop()
    end = loop.time() + timeout
    while not cond():
        if loop.time() > end:
            return False
        await asyncio.sleep(step)
    return True


async def disconnect(*clients):
    for c in clients:
        try:
            c.disconnect(wait=2)
        except Exception:  # noqa: BLE001 - best effort at the end of a run
            pass
    for c in clients:
        try:
            await asyncio.wait_for(c.disconnected, 5)
        except Exception:  # noqa: BLE001
            pass


def emit(obj, ok):
    obj["ok"] = bool(ok)
    sys.stdout.flush()
    print(json.dumps(obj, sort_keys=True), flush=True)
    sys.stderr.flush()
    # os._exit: slixmpp leaves tasks pending after disconnect; nothing
    # useful happens at interpreter teardown.
    os._exit(0 if ok else 1)


def run(main):
    """Run main() -> (obj, ok); any exception still prints a JSON line."""
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    try:
        obj, ok = loop.run_until_complete(main())
    except Exception as e:  # noqa: BLE001 - reported in the JSON line
        logging.exception("peer failed")
        obj, ok = {"error": "%s: %s" % (type(e).__name__, e)}, False
    emit(obj, ok)
