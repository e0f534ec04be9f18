// Package logline writes a log line on the hot paths of pushd (every
// publish, every push) without what slog.Logger.LogAttrs costs there: the
// caller's program counter, found by walking the stack on every line.
// pushd's handlers record no source, so nothing is lost.
package logline

import (
	"context"
	"log/slog"
	"time"
)

// Log is l.LogAttrs(ctx, level, msg, attrs...) without the caller's
// program counter.
func Log(ctx context.Context, l *slog.Logger, level slog.Level, msg string, attrs ...slog.Attr) {
	h := l.Handler()
	if !h.Enabled(ctx, level) {
		return
	}
	r := slog.NewRecord(time.Now(), level, msg, 0)
	r.AddAttrs(attrs...)
	_ = h.Handle(ctx, r)
}
