// Package upgrades holds the recorder's SQL schema as numbered dbutil upgrade files.
package upgrades

import (
	"embed"

	"go.mau.fi/util/dbutil"
)

//go:embed *.sql
var rawUpgrades embed.FS

// Table is the recorder's upgrade table, applied by storage.Open.
var Table = dbutil.BuildUpgradeTable().WithFS(rawUpgrades).Finish()
