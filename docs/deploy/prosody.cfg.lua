-- The Prosody side of component-prosody.toml: add to prosody.cfg.lua.
-- Prosody 0.12 needs prosody-modules for mod_cloud_notify (Debian:
-- apt-get install prosody-modules); Prosody 13 ships it.

-- XEP-0114 listener for pushd; not encrypted, so loopback only.
component_ports = { 5347 }
component_interfaces = { "127.0.0.1" }

VirtualHost "example.org"
	modules_enabled = {
		"smacks";       -- XEP-0198: phones hibernate instead of logging out
		"csi_simple";   -- XEP-0352
		"cloud_notify"; -- XEP-0357: publishes to the app server (pushd)
	}
	-- What the publish carries in clear to pushd. pushd seals what it
	-- forwards under each device's key, but the XEP-0114 link and pushd's
	-- logs would see these: leave them off unless the app needs them.
	push_notification_with_body = false
	push_notification_with_sender = false

-- pushd; the secret is [push] secret in pushd.toml.
Component "push.example.org"
	component_secret = "a long random secret shared with Prosody"
