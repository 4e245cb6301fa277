package pgtest_test

import (
	"context"
	"testing"
	"time"

	_ "github.com/lib/pq"
	"github.com/stretchr/testify/require"
	"go.mau.fi/util/dbutil"

	"github.com/matrix-recorder/recorder/internal/testutil/pgtest"
)

func openDB(t *testing.T, uri string) *dbutil.Database {
	t.Helper()
	db, err := dbutil.NewWithDialect(uri, "postgres")
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, db.Close()) })
	return db
}

func TestStart(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	start := time.Now()
	uri := pgtest.Start(t)
	t.Logf("PostgreSQL ready in %s at %s", time.Since(start), uri)

	db := openDB(t, uri)
	require.Equal(t, dbutil.Postgres, db.Dialect)

	var one int
	require.NoError(t, db.QueryRow(ctx, "SELECT 1").Scan(&one))
	require.Equal(t, 1, one)

	var name, role string
	require.NoError(t, db.QueryRow(ctx, "SELECT current_database(), current_user").Scan(&name, &role))
	require.Equal(t, pgtest.DefaultDatabase, name)
	require.Equal(t, pgtest.Superuser, role)
}

func TestClusterDatabasesAreSeparate(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	cluster := pgtest.New(t)
	first := openDB(t, cluster.CreateDatabase(t, "first"))
	second := openDB(t, cluster.CreateDatabase(t, "second"))

	_, err := first.Exec(ctx, "CREATE TABLE only_in_first (id INTEGER PRIMARY KEY)")
	require.NoError(t, err)
	_, err = first.Exec(ctx, "INSERT INTO only_in_first (id) VALUES ($1)", 42)
	require.NoError(t, err)

	var exists bool
	require.NoError(t, second.QueryRow(ctx, "SELECT to_regclass('only_in_first') IS NOT NULL").Scan(&exists))
	require.False(t, exists, "table created in one database must not exist in the other")
}
