package cluster

import (
	"context"
	"io"
	"log"
	"log/slog"
	"strings"
	"time"
)

// discardLogger is used when Config.Logger is nil.
var discardLogger = slog.New(slog.DiscardHandler)

// logBridge turns memberlist's *log.Logger lines ("[DEBUG] memberlist:
// ...") into slog records: [DEBUG] → Debug, [INFO] → Info, [WARN] → Warn,
// [ERR]/[ERROR] → Error, anything else → Debug. Each record carries
// component=memberlist. A message refused for its key (keyring.go) is
// counted in ref and logged once per remote per minute as one warning
// that says why; memberlist's own line for it goes to Debug.
type logBridge struct {
	log *slog.Logger
	ref *refusals
}

// newStdLogger returns the *log.Logger memberlist writes to.
func newStdLogger(l *slog.Logger, ref *refusals) *log.Logger {
	return log.New(logBridge{l, ref}, "", 0)
}

var _ io.Writer = logBridge{}

func (b logBridge) Write(p []byte) (int, error) {
	line := strings.TrimRight(string(p), "\r\n")
	level, msg := parseLogLine(line)
	ctx := context.Background()
	if why := keyProblem(msg); why != "" && b.ref != nil {
		if from := remoteOf(msg); b.ref.note(from+" "+why, time.Now()) {
			b.log.Warn("cluster: refused a node's gossip: "+why, "from", from, "refused_total", b.ref.total())
		}
		level = slog.LevelDebug
	}
	if b.log.Enabled(ctx, level) {
		b.log.Log(ctx, level, msg, "component", "memberlist")
	}
	return len(p), nil
}

// parseLogLine splits memberlist's level prefix and "memberlist: " tag off
// a log line.
func parseLogLine(line string) (slog.Level, string) {
	level := slog.LevelDebug
	if strings.HasPrefix(line, "[") {
		if end := strings.IndexByte(line, ']'); end > 0 {
			switch line[1:end] {
			case "DEBUG", "TRACE":
				level = slog.LevelDebug
			case "INFO":
				level = slog.LevelInfo
			case "WARN", "WARNING":
				level = slog.LevelWarn
			case "ERR", "ERROR":
				level = slog.LevelError
			}
			line = strings.TrimLeft(line[end+1:], " ")
		}
	}
	line = strings.TrimPrefix(line, "memberlist: ")
	return level, line
}
