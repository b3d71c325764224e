package controlplane

import "context"

// Server is a control plane outside Caddy: a SQLite store, the rules over
// it and the HTTP API, for tests, demos and tools. Inside Caddy, use the
// Handler module instead.
type Server struct {
	*API
	store *SQLiteStore
}

// NewServer opens the SQLite database at path and returns a control plane
// over it. svc.Notifier, if set, must not be shared with another store.
func NewServer(ctx context.Context, path string, svc ServiceOptions, api APIOptions) (*Server, error) {
	store, err := OpenSQLite(ctx, path)
	if err != nil {
		return nil, err
	}
	s, err := NewService(ctx, store, svc)
	if err != nil {
		store.Close()
		return nil, err
	}
	a, err := NewAPI(s, api)
	if err != nil {
		store.Close()
		return nil, err
	}
	return &Server{API: a, store: store}, nil
}

// Close answers waiting feed requests and closes the store.
func (s *Server) Close() error {
	s.API.Close()
	return s.store.Close()
}
