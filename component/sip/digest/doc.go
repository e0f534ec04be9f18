// Package digest is the server side of SIP digest authentication (RFC 3261
// §22 with the parameters of RFC 7616 and the algorithms of RFC 8760):
// challenges with stateless nonces, a bounded parser for Authorization and
// Proxy-Authorization values, verification against a stored HA1, and the
// brute-force limiter that sits in front of it (BEHAVIOUR S4).
//
// It owns no storage and no sockets: HA1 comes from a lookup the caller
// passes (internal/store's Accounts.DigestHA1), and the caller turns a
// Result into a 401/407 or lets the request through. It never logs, and
// never puts a header value, user name or key material into an error:
// errors reach log lines (S3).
//
// What is offered is SHA-256 then MD5 (the only HA1 the store keeps), qop
// "auth" only, no userhash, no opaque. A nonce is
// base64url(issued ‖ random ‖ HMAC(key, realm ‖ issued ‖ random)), so any
// node holding the key accepts any node's nonce with no shared state; its
// age decides staleness.
//
// Replay: a stateless nonce is valid for its whole lifetime, so a captured
// Authorization could be sent again within it. Each Server keeps, per
// nonce it has accepted, the nonce counts already seen (the highest and a
// window of 64 below it) and refuses a count seen before. The cache is
// bounded (Config.ReplayCache), so under more live nonces than that the
// oldest are forgotten early, and it is per node, so a replay to another
// node of a cluster is not caught; in both cases the window is at most the
// nonce lifetime. qop=auth does not cover the request's headers anyway
// (RFC 3261 §22.4): on an open network, TLS is what protects a REGISTER.
package digest
