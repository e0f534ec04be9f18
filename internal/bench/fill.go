package bench

import (
	"context"
	"encoding/xml"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// FillConfig is one sender session that puts messages in the queues of
// other users' devices, typically hibernated ones (see IdleConfig.Drop).
type FillConfig struct {
	Addr, Domain string
	Sender       Credentials
	// To are the recipients' JIDs (bare or full); each gets PerRecipient
	// messages, round robin, so that every queue grows evenly.
	To           []string
	PerRecipient int
	// Window is the number of messages between acknowledgement requests
	// (XEP-0198 <r/>); default 64. A server that acknowledges only what is
	// durable (pushd) paces the sender by its disk this way.
	Window int
	// BodyBytes is the size of each message body; default 100 (a short
	// chat message).
	BodyBytes   int
	InsecureTLS bool
}

// FillResult says what the server did with the messages.
type FillResult struct {
	Sent    int
	Bounced int // answered with an error (e.g. a full queue, M9)
	Elapsed time.Duration
}

// Fill logs the sender in with XEP-0198, sends the messages and returns
// once the server has acknowledged every one of them, and so (for a
// server that acknowledges after durable) once they are all queued.
func Fill(ctx context.Context, cfg FillConfig) (FillResult, error) {
	var res FillResult
	if cfg.Window <= 0 {
		cfg.Window = 64
	}
	if cfg.BodyBytes <= 0 {
		cfg.BodyBytes = 100
	}
	c, err := dial(ctx, dialConfig{addr: cfg.Addr, domain: cfg.Domain, cred: cfg.Sender, resource: "fill", insecure: cfg.InsecureTLS, sm: true})
	if err != nil {
		return res, fmt.Errorf("bench: fill: %w", err)
	}
	defer c.close()
	if dl, ok := ctx.Deadline(); ok {
		c.raw.SetDeadline(dl)
	}
	// The stream header was read during login; what follows are
	// top-level elements, which a fresh decoder reads one by one.
	dec := xml.NewDecoder(c.r)
	pad := strings.Repeat("x", cfg.BodyBytes)
	total := len(cfg.To) * cfg.PerRecipient
	start := time.Now()
	var b strings.Builder
	for res.Sent < total {
		b.Reset()
		for k := 0; k < cfg.Window && res.Sent < total; k++ {
			to := cfg.To[res.Sent%len(cfg.To)]
			fmt.Fprintf(&b, "<message type='chat' to='%s' id='f%d'><body>%s</body></message>", to, res.Sent, pad)
			res.Sent++
		}
		b.WriteString("<r xmlns='urn:xmpp:sm:3'/>")
		if err := c.send(b.String()); err != nil {
			return res, fmt.Errorf("bench: fill: %w", err)
		}
		// Read up to the answer to this <r/>: the only one outstanding.
		for {
			el, err := next(dec)
			if err != nil {
				return res, fmt.Errorf("bench: fill: after %d messages: %w", res.Sent, err)
			}
			if el.XMLName.Local == "message" && el.Type == "error" {
				res.Bounced++
				continue
			}
			if el.XMLName.Local == "a" {
				if h, err := strconv.Atoi(el.H); err != nil || h < res.Sent {
					return res, fmt.Errorf("%w: fill: acknowledged %q of %d", errProto, el.H, res.Sent)
				}
				break
			}
		}
	}
	res.Elapsed = time.Since(start)
	return res, nil
}
