// Command recorder is a Matrix application service that records group calls.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/rs/zerolog"

	"github.com/matrix-recorder/recorder/appservice"
	"github.com/matrix-recorder/recorder/config"
	"github.com/matrix-recorder/recorder/internal/app"
)

// Set with -ldflags "-X main.Tag=... -X main.Commit=... -X main.BuildTime=...".
var (
	Tag       = "v0.1.0-dev"
	Commit    = "unknown"
	BuildTime = "unknown"
)

func versionString() string {
	return fmt.Sprintf("%s (commit %s, built %s)", Tag, Commit, BuildTime)
}

// Exit codes, mautrix-bridge style: each startup failure class has its own.
const (
	ExitConfigLoad   = 10
	ExitConfigValid  = 11
	ExitDatabase     = 14
	ExitStartup      = 15
	ExitRegistration = 20
	// ExitSecondSignal: a second SIGTERM/SIGINT during the shutdown.
	ExitSecondSignal = 130
)

type flags struct {
	configPath       string
	registrationPath string
	generateExample  bool
	generateReg      bool
	version          bool
}

func parseFlags(args []string, stderr io.Writer) (*flags, error) {
	f := &flags{}
	fs := flag.NewFlagSet("recorder", flag.ContinueOnError)
	fs.SetOutput(stderr)
	for _, name := range []string{"c", "config"} {
		fs.StringVar(&f.configPath, name, "config.yaml", "path to the config file")
	}
	for _, name := range []string{"r", "registration"} {
		fs.StringVar(&f.registrationPath, name, "registration.yaml", "path to the registration file to write with -g")
	}
	for _, name := range []string{"e", "generate-example-config"} {
		fs.BoolVar(&f.generateExample, name, false, "write the example config to the config path and exit")
	}
	for _, name := range []string{"g", "generate-registration"} {
		fs.BoolVar(&f.generateReg, name, false, "generate the registration file, store its tokens in the config and exit")
	}
	for _, name := range []string{"v", "version"} {
		fs.BoolVar(&f.version, name, false, "print the version and exit")
	}
	fs.Usage = func() {
		fmt.Fprintln(stderr, "Usage: recorder [-c config.yaml] [-e | -g [-r registration.yaml] | -v]")
		fmt.Fprintln(stderr, "  -c, --config FILE                 config file (default config.yaml)")
		fmt.Fprintln(stderr, "  -e, --generate-example-config     write the example config to the config path")
		fmt.Fprintln(stderr, "  -g, --generate-registration       write the registration and store its tokens in the config")
		fmt.Fprintln(stderr, "  -r, --registration FILE           registration file for -g (default registration.yaml)")
		fmt.Fprintln(stderr, "  -v, --version                     print the version")
	}
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	return f, nil
}

func main() {
	os.Exit(run(os.Args[1:], os.Environ(), os.Stdout, os.Stderr))
}

// run is main without the process exit, so tests can call it.
func run(args, environ []string, stdout, stderr io.Writer) int {
	f, err := parseFlags(args, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	} else if err != nil {
		return 2
	}
	switch {
	case f.version:
		fmt.Fprintln(stdout, "recorder", versionString())
		return 0
	case f.generateExample:
		if err = writeExample(f.configPath); err != nil {
			fmt.Fprintln(stderr, "Failed to write example config:", err)
			return ExitConfigLoad
		}
		fmt.Fprintf(stdout, "Wrote the example config to %s. Edit it, then run recorder -g to generate the registration.\n", f.configPath)
		return 0
	}

	cfg, envWarnings, err := config.LoadWithWarnings(f.configPath, environ)
	if err != nil {
		fmt.Fprintln(stderr, "Failed to load config:", err)
		return ExitConfigLoad
	}
	if f.generateReg {
		return generateRegistration(cfg, f, stdout, stderr)
	}
	if err = cfg.Validate(true); err != nil {
		fmt.Fprintln(stderr, "Invalid config:")
		fmt.Fprintln(stderr, err)
		return ExitConfigValid
	}
	log, err := newLogger(cfg.Logging, stderr)
	if err != nil {
		fmt.Fprintln(stderr, "Invalid logging config:", err)
		return ExitConfigValid
	}
	for _, w := range envWarnings {
		evt := log.Warn().Str("variable", w.Name)
		if w.DidYouMean != "" {
			evt = evt.Str("did_you_mean", w.DidYouMean)
		}
		evt.Msg("Ignoring environment variable that names no config key")
	}
	ctx, stop := signal.NotifyContext(log.WithContext(context.Background()), os.Interrupt, syscall.SIGTERM)
	defer stop()
	return serve(ctx, cfg)
}

func serve(ctx context.Context, cfg *config.Config) int {
	log := zerolog.Ctx(ctx)
	log.Info().Str("version", versionString()).Msg("Starting recorder")
	recorder, err := app.New(ctx, cfg, versionString(), app.Options{})
	if err != nil {
		return reportStartup(ctx, err)
	}
	if err = recorder.Start(ctx); err != nil {
		stopCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), config.ShutdownTimeout)
		defer cancel()
		_ = recorder.Stop(stopCtx)
		return reportStartup(ctx, err)
	}
	log.Info().Msg("Recorder started")
	<-ctx.Done()
	log.Info().Msg("Shutting down")
	// A second signal exits at once, whatever the shutdown is doing.
	again := make(chan os.Signal, 1)
	signal.Notify(again, os.Interrupt, syscall.SIGTERM)
	defer signal.Stop(again)
	stopped := make(chan struct{})
	defer close(stopped)
	go func() {
		select {
		case <-again:
			log.Warn().Msg("Second signal: exiting without finishing the shutdown")
			os.Exit(ExitSecondSignal)
		case <-stopped:
		}
	}()
	stopCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), config.ShutdownTimeout)
	defer cancel()
	if err = recorder.Stop(stopCtx); err != nil {
		log.Err(err).Msg("Unclean shutdown")
		return 1
	}
	log.Info().Msg("Stopped")
	return 0
}

// exitCode is the exit code of a startup failure.
func exitCode(err error) int {
	switch {
	case errors.Is(err, app.ErrConfig):
		return ExitConfigValid
	case errors.Is(err, app.ErrDatabase):
		return ExitDatabase
	case errors.Is(err, app.ErrStartup):
		return ExitStartup
	default:
		return 1
	}
}

func reportStartup(ctx context.Context, err error) int {
	code := exitCode(err)
	zerolog.Ctx(ctx).WithLevel(zerolog.FatalLevel).Err(err).Int("exit_code", code).Msg("Failed to start")
	return code
}

func writeExample(path string) error {
	if _, err := os.Stat(path); err == nil {
		return fmt.Errorf("%s already exists; not overwriting it", path)
	}
	return os.WriteFile(path, []byte(config.ExampleConfig), 0o600)
}

func generateRegistration(cfg *config.Config, f *flags, stdout, stderr io.Writer) int {
	if err := cfg.Validate(false); err != nil {
		fmt.Fprintln(stderr, "Fix the config before generating the registration:")
		fmt.Fprintln(stderr, err)
		return ExitConfigValid
	}
	reg := appservice.GenerateRegistration(cfg.Homeserver, cfg.Appservice)
	data, err := reg.YAML()
	if err == nil {
		// Not reg.Save: it keeps the mode of an existing file.
		err = config.WriteFileAtomic(f.registrationPath, []byte(data), 0o600)
	}
	if err != nil {
		fmt.Fprintln(stderr, "Failed to write registration:", err)
		return ExitRegistration
	}
	if err := config.SaveTokens(f.configPath, reg.AppToken, reg.ServerToken); err != nil {
		fmt.Fprintln(stderr, "Failed to store the tokens in the config:", err)
		return ExitRegistration
	}
	fmt.Fprintf(stdout, "Wrote the registration to %s and its tokens to %s.\n", f.registrationPath, f.configPath)
	fmt.Fprintln(stdout, "Add the registration to your homeserver (Synapse: app_service_config_files; Dendrite: app_service_api.config_files) and restart it.")
	return 0
}

func newLogger(cfg config.LoggingConfig, out io.Writer) (zerolog.Logger, error) {
	level, err := zerolog.ParseLevel(cfg.MinLevel)
	if err != nil {
		return zerolog.Nop(), err
	}
	zerolog.TimeFieldFormat = time.RFC3339Nano
	var w io.Writer = out
	if cfg.Format == "pretty" {
		w = zerolog.ConsoleWriter{Out: out, TimeFormat: "2006-01-02 15:04:05.000"}
	}
	return zerolog.New(w).Level(level).With().Timestamp().Logger(), nil
}
