package callbot

import (
	"fmt"

	"github.com/pion/logging"
	"github.com/rs/zerolog"
)

// pionLogs sends pion's logs into our zerolog logger. pion is chatty at
// debug level, so its debug and trace go to trace and its info to debug.
type pionLogs struct{ log zerolog.Logger }

// NewLogger implements logging.LoggerFactory.
func (pl pionLogs) NewLogger(scope string) logging.LeveledLogger {
	return pionLogger{log: pl.log.With().Str("component", "pion").Str("scope", scope).Logger()}
}

type pionLogger struct{ log zerolog.Logger }

func (l pionLogger) Trace(msg string) { l.log.Trace().Msg(msg) }
func (l pionLogger) Tracef(format string, args ...any) {
	l.log.Trace().Msg(fmt.Sprintf(format, args...))
}
func (l pionLogger) Debug(msg string) { l.log.Trace().Msg(msg) }
func (l pionLogger) Debugf(format string, args ...any) {
	l.log.Trace().Msg(fmt.Sprintf(format, args...))
}
func (l pionLogger) Info(msg string) { l.log.Debug().Msg(msg) }
func (l pionLogger) Infof(format string, args ...any) {
	l.log.Debug().Msg(fmt.Sprintf(format, args...))
}
func (l pionLogger) Warn(msg string)                  { l.log.Warn().Msg(msg) }
func (l pionLogger) Warnf(format string, args ...any) { l.log.Warn().Msg(fmt.Sprintf(format, args...)) }
func (l pionLogger) Error(msg string)                 { l.log.Error().Msg(msg) }
func (l pionLogger) Errorf(format string, args ...any) {
	l.log.Error().Msg(fmt.Sprintf(format, args...))
}
