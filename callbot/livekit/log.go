package livekit

import (
	"fmt"

	protolog "github.com/livekit/protocol/logger"
	"github.com/rs/zerolog"
)

// zlog makes server-sdk-go log into the call's zerolog logger. Debug and
// info become trace and debug: the SDK is chatty.
type zlog struct {
	protolog.Logger // what is not overridden below (sampling, deferred values)
	log             zerolog.Logger
}

func newLogger(log zerolog.Logger) protolog.Logger {
	return zlog{Logger: protolog.GetLogger(), log: log.With().Str("component", "livekit").Logger()}
}

func fields(e *zerolog.Event, kv []any) *zerolog.Event {
	for i := 0; i+1 < len(kv); i += 2 {
		e = e.Interface(fmt.Sprint(kv[i]), kv[i+1])
	}
	return e
}

func (l zlog) Debugw(msg string, kv ...any) { fields(l.log.Trace(), kv).Msg(msg) }
func (l zlog) Infow(msg string, kv ...any)  { fields(l.log.Debug(), kv).Msg(msg) }
func (l zlog) Warnw(msg string, err error, kv ...any) {
	fields(l.log.Warn().Err(err), kv).Msg(msg)
}
func (l zlog) Errorw(msg string, err error, kv ...any) {
	fields(l.log.Error().Err(err), kv).Msg(msg)
}

func (l zlog) WithValues(kv ...any) protolog.Logger {
	ctx := l.log.With()
	for i := 0; i+1 < len(kv); i += 2 {
		ctx = ctx.Interface(fmt.Sprint(kv[i]), kv[i+1])
	}
	return zlog{Logger: l.Logger, log: ctx.Logger()}
}

func (l zlog) WithName(name string) protolog.Logger {
	return zlog{Logger: l.Logger, log: l.log.With().Str("logger", name).Logger()}
}

func (l zlog) WithComponent(component string) protolog.Logger { return l.WithName(component) }
func (l zlog) WithCallDepth(int) protolog.Logger              { return l }
func (l zlog) WithItemSampler() protolog.Logger               { return l }
func (l zlog) WithoutSampler() protolog.Logger                { return l }
