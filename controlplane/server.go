package controlplane

import (
	"context"

	"github.com/rotagate/rotagate/controlplane/api"
	"github.com/rotagate/rotagate/controlplane/rules"
	"github.com/rotagate/rotagate/controlplane/store"
)

// Server is a control plane outside Caddy: a store, the rules over it and
// the HTTP API, for tests, demos and tools. Inside Caddy, use the Handler
// module instead.
type Server struct {
	*api.API
	store store.Store
}

// NewServer opens the SQLite database at path and returns a control plane
// over it.
func NewServer(ctx context.Context, path string, svc rules.ServiceOptions, ao api.Options) (*Server, error) {
	store, err := store.OpenSQLite(ctx, path)
	if err != nil {
		return nil, err
	}
	return newServer(ctx, store, svc, ao)
}

// NewPostgresServer connects to the PostgreSQL database named by dsn and
// returns a control plane over it: one replica of a fleet. Replicas on
// one database wake each other's feed requests through LISTEN/NOTIFY, on
// the store's own notifier.
func NewPostgresServer(ctx context.Context, dsn string, pg store.PostgresOptions, svc rules.ServiceOptions, ao api.Options) (*Server, error) {
	store, err := store.OpenPostgres(ctx, dsn, pg)
	if err != nil {
		return nil, err
	}
	return newServer(ctx, store, svc, ao)
}

func newServer(ctx context.Context, store store.Store, svc rules.ServiceOptions, ao api.Options) (*Server, error) {
	s, err := rules.NewService(ctx, store, svc)
	if err != nil {
		store.Close()
		return nil, err
	}
	a, err := api.New(s, ao)
	if err != nil {
		store.Close()
		return nil, err
	}
	return &Server{API: a, store: store}, nil
}

// Store returns the server's store.
func (s *Server) Store() store.Store { return s.store }

// Close answers waiting feed requests and closes the store.
func (s *Server) Close() error {
	s.API.Close()
	return s.store.Close()
}
