package main

import (
	"bytes"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"testing"

	"github.com/stretchr/testify/require"
	mautrixas "maunium.net/go/mautrix/appservice"

	"github.com/matrix-recorder/recorder/config"
)

// validEnv fills the keys the example config leaves as placeholders.
var validEnv = []string{
	"RECORDER_HOMESERVER__ADDRESS=http://127.0.0.1:1",
	"RECORDER_HOMESERVER__DOMAIN=localhost",
	"RECORDER_APPSERVICE__ADDRESS=http://127.0.0.1:2",
	"RECORDER_PERMISSIONS=*=user",
	"RECORDER_API__TOKENS=0123456789abcdef0123",
}

func runCLI(t *testing.T, env []string, args ...string) (int, string, string) {
	t.Helper()
	var stdout, stderr bytes.Buffer
	code := run(args, env, &stdout, &stderr)
	return code, stdout.String(), stderr.String()
}

func TestVersion(t *testing.T) {
	code, out, _ := runCLI(t, nil, "--version")
	require.Equal(t, 0, code)
	require.Contains(t, out, "recorder "+Tag)
}

func TestGenerateExampleAndRegistration(t *testing.T) {
	dir := t.TempDir()
	cfgPath, regPath := filepath.Join(dir, "config.yaml"), filepath.Join(dir, "registration.yaml")

	code, _, _ := runCLI(t, nil, "-e", "-c", cfgPath)
	require.Equal(t, 0, code)
	data, err := os.ReadFile(cfgPath)
	require.NoError(t, err)
	require.Equal(t, config.ExampleConfig, string(data))
	code, _, stderr := runCLI(t, nil, "-e", "-c", cfgPath)
	require.NotEqual(t, 0, code, "must not overwrite an existing config")
	require.Contains(t, stderr, "already exists")

	// The example's placeholders are refused, naming the keys.
	code, _, stderr = runCLI(t, nil, "-g", "-c", cfgPath, "-r", regPath)
	require.Equal(t, ExitConfigValid, code)
	require.Contains(t, stderr, "homeserver.domain")

	code, _, stderr = runCLI(t, validEnv, "--generate-registration", "--config", cfgPath, "--registration", regPath)
	require.Equal(t, 0, code, stderr)
	reg, err := mautrixas.LoadRegistration(regPath)
	require.NoError(t, err)
	require.Len(t, reg.AppToken, 64)
	require.True(t, reg.EphemeralEvents)
	require.Len(t, reg.Namespaces.UserIDs, 2)
	info, err := os.Stat(regPath)
	require.NoError(t, err)
	require.Equal(t, os.FileMode(0o600), info.Mode().Perm())

	cfg, err := config.Load(cfgPath, validEnv)
	require.NoError(t, err)
	require.Equal(t, reg.AppToken, cfg.Appservice.ASToken, "tokens are stored back into the config")
	require.Equal(t, reg.ServerToken, cfg.Appservice.HSToken)
	require.NoError(t, cfg.Validate(true))

	code, _, _ = runCLI(t, validEnv, "-g", "-c", cfgPath, "-r", filepath.Join(dir, "missing", "reg.yaml"))
	require.Equal(t, ExitRegistration, code)
}

func TestExitCodes(t *testing.T) {
	dir := t.TempDir()
	cfgPath := filepath.Join(dir, "config.yaml")
	code, _, stderr := runCLI(t, nil, "-c", cfgPath)
	require.Equal(t, ExitConfigLoad, code, "missing config file")
	require.Contains(t, stderr, "config")

	require.NoError(t, os.WriteFile(cfgPath, []byte(config.ExampleConfig+"\nbogus_key: 1\n"), 0o600))
	code, _, stderr = runCLI(t, validEnv, "-c", cfgPath)
	require.Equal(t, ExitConfigLoad, code)
	require.Contains(t, stderr, "bogus_key")

	require.NoError(t, os.WriteFile(cfgPath, []byte(config.ExampleConfig), 0o600))
	code, _, stderr = runCLI(t, validEnv, "-c", cfgPath)
	require.Equal(t, ExitConfigValid, code, "tokens not generated")
	require.Contains(t, stderr, "appservice.as_token")

	env := append(append([]string{}, validEnv...),
		"RECORDER_APPSERVICE__AS_TOKEN=x", "RECORDER_APPSERVICE__HS_TOKEN=y",
		"RECORDER_DATABASE__TYPE=postgres",
		"RECORDER_DATABASE__URI=postgres://nobody@127.0.0.1:1/none?sslmode=disable&connect_timeout=2",
		"RECORDER_RECORDINGS__PATH="+filepath.Join(dir, "recordings"),
		"RECORDER_LOGGING__FORMAT=json",
	)
	code, _, stderr = runCLI(t, env, "-c", cfgPath)
	require.Equal(t, ExitDatabase, code, stderr)

	code, _, _ = runCLI(t, nil, "--no-such-flag")
	require.Equal(t, 2, code)
}

// TestKubernetesServiceEnv: Kubernetes injects RECORDER_PORT,
// RECORDER_SERVICE_HOST and friends for a Service named "recorder"; the
// recorder warns about them and starts (here it gets as far as the
// database, which is down).
func TestKubernetesServiceEnv(t *testing.T) {
	dir := t.TempDir()
	cfgPath := filepath.Join(dir, "config.yaml")
	require.NoError(t, os.WriteFile(cfgPath, []byte(config.ExampleConfig), 0o600))
	// The transaction port is taken, so the start fails at once, right
	// after the config, the database and the recordings folder.
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer busy.Close()
	env := append(append([]string{}, validEnv...),
		"RECORDER_APPSERVICE__AS_TOKEN=x", "RECORDER_APPSERVICE__HS_TOKEN=y",
		"RECORDER_DATABASE__URI=file:"+filepath.Join(dir, "recorder.db")+"?_txlock=immediate",
		"RECORDER_RECORDINGS__PATH="+filepath.Join(dir, "recordings"),
		"RECORDER_LOGGING__FORMAT=json",
		"RECORDER_API__LISTEN=127.0.0.1:0",
		"RECORDER_APPSERVICE__PORT="+strconv.Itoa(busy.Addr().(*net.TCPAddr).Port),
		"RECORDER_PORT=tcp://10.0.0.7:29331",
		"RECORDER_PORT_29331_TCP=tcp://10.0.0.7:29331",
		"RECORDER_PORT_29331_TCP_ADDR=10.0.0.7",
		"RECORDER_PORT_29331_TCP_PORT=29331",
		"RECORDER_PORT_29331_TCP_PROTO=tcp",
		"RECORDER_SERVICE_HOST=10.0.0.7",
		"RECORDER_SERVICE_PORT=29331",
		"RECORDER_LOGING__FORMAT=json",
	)
	code, _, stderr := runCLI(t, env, "-c", cfgPath)
	require.Equal(t, ExitStartup, code, "gets past config, database and files to the listener: %s", stderr)
	require.Contains(t, stderr, "RECORDER_SERVICE_HOST")
	require.Contains(t, stderr, `"did_you_mean":"RECORDER_LOGGING__FORMAT"`)
	require.NotContains(t, stderr, "10.0.0.7", "values are not logged")

	// The database and the recordings folder it made are owner-only.
	for path, mode := range map[string]os.FileMode{
		filepath.Join(dir, "recorder.db"): 0o600,
		filepath.Join(dir, "recordings"):  0o700,
	} {
		info, err := os.Stat(path)
		require.NoError(t, err, stderr)
		require.Equal(t, mode, info.Mode().Perm(), path)
	}
}

// TestGenerateRegistrationOwnerOnly: the registration and the config hold
// the appservice tokens; -g leaves both owner-only even when they existed
// with a looser mode.
func TestGenerateRegistrationOwnerOnly(t *testing.T) {
	dir := t.TempDir()
	cfgPath, regPath := filepath.Join(dir, "config.yaml"), filepath.Join(dir, "registration.yaml")
	require.NoError(t, os.WriteFile(cfgPath, []byte(config.ExampleConfig), 0o600))
	require.NoError(t, os.WriteFile(regPath, []byte("old: registration\n"), 0o600))
	for _, p := range []string{cfgPath, regPath} {
		require.NoError(t, os.Chmod(p, 0o644))
	}
	code, _, stderr := runCLI(t, validEnv, "-g", "-c", cfgPath, "-r", regPath)
	require.Equal(t, 0, code, stderr)
	for _, p := range []string{cfgPath, regPath} {
		info, err := os.Stat(p)
		require.NoError(t, err)
		require.Equal(t, os.FileMode(0o600), info.Mode().Perm(), p)
	}
	entries, err := os.ReadDir(dir)
	require.NoError(t, err)
	require.Len(t, entries, 2, "no temporary files left behind")
}
