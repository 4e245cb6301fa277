// Package pgtest starts throwaway PostgreSQL clusters for tests.
//
// Each cluster lives in its own temporary directory, listens on a unix socket only
// and is stopped (pg_ctl stop -m immediate) and deleted when the test ends. The
// PostgreSQL server binaries must be installed (scripts/deps.sh installs the Debian
// "postgresql" package); when they are missing the test fails, it is never skipped.
//
// PostgreSQL refuses to run as root, so when the test runs as root the cluster is
// created and run as the "postgres" system user.
package pgtest

import (
	"bytes"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	// Registers the "postgres" database/sql driver used to create databases.
	_ "github.com/lib/pq"
)

const (
	// DefaultDatabase is the database Start creates.
	DefaultDatabase = "recorder_test"
	// Superuser is the role that owns the cluster; it connects without a password.
	Superuser = "postgres"

	// port only names the socket file (.s.PGSQL.<port>); no TCP port is opened.
	port         = 5432
	startTimeout = 30 * time.Second
	stopTimeout  = 30 * time.Second
	// runAsUser is the system user the cluster runs as when the test runs as root.
	runAsUser = "postgres"
)

// binGlob is where Debian's postgresql-NN packages put the server binaries.
const binGlob = "/usr/lib/postgresql/*/bin"

// Cluster is a running throwaway PostgreSQL cluster.
type Cluster struct {
	// SocketDir is the directory holding the server's unix socket.
	SocketDir string

	binDir  string
	baseDir string
	dataDir string
	logPath string
	cred    *syscall.Credential
}

// Start starts a new cluster, creates the database DefaultDatabase in it and returns
// a connection URI for github.com/lib/pq (and go.mau.fi/util/dbutil with the
// "postgres" dialect). The cluster is stopped and removed when the test ends.
func Start(t testing.TB) (uri string) {
	t.Helper()
	return New(t).CreateDatabase(t, DefaultDatabase)
}

// New starts a new empty cluster that is stopped and removed when the test ends.
func New(t testing.TB) *Cluster {
	t.Helper()
	binDir, err := findBinDir()
	if err != nil {
		t.Fatalf("pgtest: %v; install PostgreSQL with scripts/deps.sh (Debian package \"postgresql\")", err)
	}
	cred, err := credential()
	if err != nil {
		t.Fatalf("pgtest: %v", err)
	}

	// Not t.TempDir(): when running as root the postgres user must be able to reach
	// the directory, and t.TempDir's parent is private to root. The socket path must
	// also stay short (unix socket paths are limited to about 107 bytes).
	baseDir, err := os.MkdirTemp(shortTempDir(), "pgtest-")
	if err != nil {
		t.Fatalf("pgtest: failed to create temp dir: %v", err)
	}
	c := &Cluster{
		SocketDir: filepath.Join(baseDir, "sock"),
		binDir:    binDir,
		baseDir:   baseDir,
		dataDir:   filepath.Join(baseDir, "data"),
		logPath:   filepath.Join(baseDir, "postgres.log"),
		cred:      cred,
	}
	t.Cleanup(func() {
		if err := os.RemoveAll(baseDir); err != nil {
			t.Errorf("pgtest: failed to remove %s: %v", baseDir, err)
		}
	})
	if err := os.Mkdir(c.SocketDir, 0o700); err != nil {
		t.Fatalf("pgtest: failed to create socket dir: %v", err)
	}
	if cred != nil {
		for _, dir := range []string{baseDir, c.SocketDir} {
			if err := os.Chown(dir, int(cred.Uid), int(cred.Gid)); err != nil {
				t.Fatalf("pgtest: failed to chown %s to %s: %v", dir, runAsUser, err)
			}
		}
	}

	if out, err := c.run("initdb",
		"--pgdata", c.dataDir,
		"--username", Superuser,
		"--auth", "trust",
		"--encoding", "UTF8",
		"--locale", "C",
		"--no-sync",
	); err != nil {
		t.Fatalf("pgtest: initdb failed: %v\n%s", err, out)
	}

	opts := strings.Join([]string{
		"-c listen_addresses=''",
		"-c port=" + strconv.Itoa(port),
		"-c unix_socket_directories='" + c.SocketDir + "'",
		"-c fsync=off",
		"-c synchronous_commit=off",
		"-c full_page_writes=off",
		"-c max_connections=50",
	}, " ")
	// pg_ctl stays registered for cleanup even if start fails half-way.
	t.Cleanup(func() { c.stop(t) })
	if out, err := c.run("pg_ctl",
		"--pgdata", c.dataDir,
		"--log", c.logPath,
		"--options", opts,
		"--wait", "--timeout", strconv.Itoa(int(startTimeout.Seconds())),
		"start",
	); err != nil {
		t.Fatalf("pgtest: pg_ctl start failed: %v\n%s\nserver log:\n%s", err, out, c.logTail())
	}
	if err := c.waitReady(startTimeout); err != nil {
		t.Fatalf("pgtest: %v\nserver log:\n%s", err, c.logTail())
	}
	return c
}

// URI returns the connection URI of database name in the cluster.
func (c *Cluster) URI(name string) string {
	q := url.Values{}
	q.Set("host", c.SocketDir)
	q.Set("port", strconv.Itoa(port))
	q.Set("sslmode", "disable")
	u := url.URL{
		Scheme:   "postgres",
		User:     url.User(Superuser),
		Path:     "/" + name,
		RawQuery: q.Encode(),
	}
	return u.String()
}

// CreateDatabase creates database name and returns its connection URI.
func (c *Cluster) CreateDatabase(t testing.TB, name string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), startTimeout)
	defer cancel()
	db, err := sql.Open("postgres", c.URI("postgres"))
	if err != nil {
		t.Fatalf("pgtest: failed to open maintenance database: %v", err)
	}
	defer db.Close()
	// An identifier, not a value: quote it as one.
	quoted := `"` + strings.ReplaceAll(name, `"`, `""`) + `"`
	if _, err := db.ExecContext(ctx, "CREATE DATABASE "+quoted); err != nil {
		t.Fatalf("pgtest: failed to create database %q: %v", name, err)
	}
	return c.URI(name)
}

// waitReady polls until the server accepts connections or the timeout passes.
// pg_ctl --wait already waits for this; the poll guards against the rare case
// where pg_ctl returns before the socket accepts queries.
func (c *Cluster) waitReady(timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	db, err := sql.Open("postgres", c.URI("postgres"))
	if err != nil {
		return fmt.Errorf("failed to open database handle: %w", err)
	}
	defer db.Close()
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		err = db.PingContext(ctx)
		if err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("server did not accept connections within %s: %w", timeout, err)
		case <-tick.C:
		}
	}
}

func (c *Cluster) stop(t testing.TB) {
	if _, err := os.Stat(filepath.Join(c.dataDir, "postmaster.pid")); errors.Is(err, os.ErrNotExist) {
		return // never started, or already stopped
	}
	out, err := c.run("pg_ctl",
		"--pgdata", c.dataDir,
		"--mode", "immediate",
		"--wait", "--timeout", strconv.Itoa(int(stopTimeout.Seconds())),
		"stop",
	)
	if err != nil {
		t.Errorf("pgtest: pg_ctl stop failed: %v\n%s", err, out)
	}
	if t.Failed() {
		t.Logf("pgtest: server log tail (%s):\n%s", c.logPath, c.logTail())
	}
}

// run runs a PostgreSQL binary as the cluster's user and returns its combined output.
func (c *Cluster) run(name string, args ...string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(context.Background(), startTimeout+10*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, filepath.Join(c.binDir, name), args...)
	// The test's working directory may not be readable by the postgres user.
	cmd.Dir = c.baseDir
	cmd.Env = append(os.Environ(), "LC_ALL=C", "TZ=UTC")
	if c.cred != nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: c.cred}
		if u, err := user.Lookup(runAsUser); err == nil {
			cmd.Env = append(cmd.Env, "HOME="+u.HomeDir, "USER="+runAsUser, "LOGNAME="+runAsUser)
		}
	}
	var out bytes.Buffer
	cmd.Stdout = &out
	cmd.Stderr = &out
	err := cmd.Run()
	if err != nil {
		err = fmt.Errorf("%s: %w", name, err)
	}
	return out.Bytes(), err
}

func (c *Cluster) logTail() string {
	data, err := os.ReadFile(c.logPath)
	if err != nil {
		return fmt.Sprintf("(no log: %v)", err)
	}
	const maxTail = 4000
	if len(data) > maxTail {
		data = data[len(data)-maxTail:]
	}
	return string(data)
}

// findBinDir returns the newest /usr/lib/postgresql/NN/bin holding initdb, pg_ctl and
// postgres, or the directory of initdb on PATH.
func findBinDir() (string, error) {
	dirs, _ := filepath.Glob(binGlob)
	slices.SortFunc(dirs, func(a, b string) int { return pgMajor(b) - pgMajor(a) })
	if p, err := exec.LookPath("initdb"); err == nil {
		dirs = append(dirs, filepath.Dir(p))
	}
	for _, dir := range dirs {
		if hasServerBinaries(dir) {
			return dir, nil
		}
	}
	return "", fmt.Errorf("PostgreSQL server binaries (initdb, pg_ctl, postgres) not found in %s or on PATH", binGlob)
}

func pgMajor(binDir string) int {
	v, _ := strconv.Atoi(filepath.Base(filepath.Dir(binDir)))
	return v
}

func hasServerBinaries(dir string) bool {
	for _, name := range []string{"initdb", "pg_ctl", "postgres"} {
		if st, err := os.Stat(filepath.Join(dir, name)); err != nil || st.IsDir() {
			return false
		}
	}
	return true
}

// credential returns the postgres user's credentials when running as root, nil otherwise.
func credential() (*syscall.Credential, error) {
	if os.Geteuid() != 0 {
		return nil, nil
	}
	u, err := user.Lookup(runAsUser)
	if err != nil {
		return nil, fmt.Errorf("running as root and PostgreSQL refuses to run as root, but there is no %q user to run it as: %w", runAsUser, err)
	}
	uid, err := strconv.ParseUint(u.Uid, 10, 32)
	if err != nil {
		return nil, fmt.Errorf("invalid uid %q of user %s: %w", u.Uid, runAsUser, err)
	}
	gid, err := strconv.ParseUint(u.Gid, 10, 32)
	if err != nil {
		return nil, fmt.Errorf("invalid gid %q of user %s: %w", u.Gid, runAsUser, err)
	}
	return &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid), Groups: []uint32{}}, nil
}

// shortTempDir returns os.TempDir() unless it is so long that the socket path
// would exceed the unix socket limit, in which case it returns /tmp.
func shortTempDir() string {
	dir := os.TempDir()
	// pgtest-NNNNNNNNNN/sock/.s.PGSQL.5432 adds about 40 bytes.
	if len(dir) > 60 {
		return "/tmp"
	}
	return dir
}
