package api

import (
	"context"
	"testing"

	"github.com/rotagate/rotagate/controlplane/store"
	"github.com/rotagate/rotagate/controlplane/store/storetest"
)

// sqliteKit opens SQLite stores, each on a file of its own, for the shared
// store suite.
var sqliteKit = storeKit{
	name: "sqlite",
	open: func(t *testing.T) (store.Store, func(t *testing.T) store.Store) {
		st, path := storetest.SQLite(t)
		return st, func(t *testing.T) store.Store {
			t.Helper()
			st, err := store.OpenSQLite(context.Background(), path)
			if err != nil {
				t.Fatalf("reopening %s: %v", path, err)
			}
			t.Cleanup(func() { st.Close() })
			return st
		}
	},
}

func TestSQLiteStore(t *testing.T) { runStoreSuite(t, sqliteKit) }
