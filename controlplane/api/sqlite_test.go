package api

import (
	"testing"

	"github.com/rotagate/rotagate/controlplane/store"
	"github.com/rotagate/rotagate/controlplane/store/storetest"
)

// sqliteKit opens SQLite stores, each on a file of its own, for the shared
// store suite.
var sqliteKit = storeKit{name: "sqlite", database: sqliteDatabase}

// sqliteDatabase places a new SQLite file; its handles open that file.
func sqliteDatabase(t *testing.T) func(t *testing.T) store.Store {
	path := storetest.SQLitePath(t)
	return func(t *testing.T) store.Store { return storetest.OpenSQLite(t, path) }
}

func TestSQLiteStore(t *testing.T) { runStoreSuite(t, sqliteKit) }
