package api

import (
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/rotagate/rotagate/controlplane/cutover"
	"github.com/rotagate/rotagate/controlplane/rules"
	"github.com/rotagate/rotagate/controlplane/store"
)

// JSON shapes of the cut-over endpoint (SPEC §14, docs/cutover.md).
type (
	// Cutover is a client's cut-over policy in force and the state
	// of each of its older active secrets.
	Cutover struct {
		ClientID       string          `json:"client_id"`
		Auto           bool            `json:"auto"`
		Quiet          string          `json:"quiet"`
		Lookback       string          `json:"lookback"`
		Deadline       string          `json:"deadline"`
		OnDeadline     string          `json:"on_deadline"`
		NewestSecretID *string         `json:"newest_secret_id"`
		Secrets        []CutoverSecret `json:"secrets"`
	}
	CutoverSecret struct {
		SecretID   string     `json:"secret_id"`
		State      string     `json:"state"`
		NotMoved   []string   `json:"not_moved"`
		Moved      []string   `json:"moved"`
		Unlisted   bool       `json:"unlisted_callers"`
		NewestUsed bool       `json:"newest_used"`
		LastUsedAt *time.Time `json:"last_used_at"`
		QuietUntil *time.Time `json:"quiet_until"`
		DeadlineAt *time.Time `json:"deadline_at"`
	}
	// PutCutoverRequest changes the fields it has; the others stay.
	PutCutoverRequest struct {
		Auto       *bool   `json:"auto"`
		Quiet      *string `json:"quiet"`
		Lookback   *string `json:"lookback"`
		Deadline   *string `json:"deadline"`
		OnDeadline *string `json:"on_deadline"`
	}
)

// NewCutover is the answer of GET /v1/clients/{client_id}/cutover for
// st.
func NewCutover(st rules.CutoverState) Cutover {
	p := st.Policy
	out := Cutover{
		ClientID: st.ClientID, Auto: p.Auto, Quiet: cutover.FormatDuration(p.Quiet), Lookback: cutover.FormatDuration(p.Lookback),
		Deadline: cutover.FormatDuration(p.Deadline), OnDeadline: string(p.OnDeadline), Secrets: make([]CutoverSecret, 0, len(st.Secrets)),
	}
	if st.Newest != "" {
		out.NewestSecretID = &st.Newest
	}
	for _, v := range st.Secrets {
		out.Secrets = append(out.Secrets, CutoverSecret{
			SecretID: v.SecretID, State: string(v.State), NotMoved: nonEmpty(v.NotMoved), Moved: nonEmpty(v.Moved),
			Unlisted: v.Unlisted, NewestUsed: !v.NewestUnused,
			LastUsedAt: timePtr(v.LastUsedAt), QuietUntil: timePtr(v.QuietUntil), DeadlineAt: timePtr(v.DeadlineAt),
		})
	}
	return out
}

func nonEmpty(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}

// timePtr is nil for the zero time (JSON null).
func timePtr(t time.Time) *time.Time {
	if t.IsZero() {
		return nil
	}
	return &t
}

func (a *API) getCutover(r *http.Request, who rules.Actor) (any, error) {
	return reply(NewCutover)(a.svc.GetCutover(r.Context(), who, r.PathValue("client_id")))
}

func (a *API) putCutover(r *http.Request, who rules.Actor, req PutCutoverRequest) (any, error) {
	change, err := req.change()
	if err != nil {
		return nil, err
	}
	return reply(NewCutover)(a.svc.SetCutover(r.Context(), who, r.PathValue("client_id"), change))
}

// change reads the request's fields into a policy change; a bad value is
// 400 invalid_request naming its field.
func (req PutCutoverRequest) change() (store.CutoverPolicy, error) {
	change := store.CutoverPolicy{Auto: req.Auto}
	for _, f := range []struct {
		name string
		in   *string
		out  **time.Duration
	}{{"quiet", req.Quiet, &change.Quiet}, {"lookback", req.Lookback, &change.Lookback}, {"deadline", req.Deadline, &change.Deadline}} {
		if f.in == nil {
			continue
		}
		d, err := cutover.ParseDuration(f.name, *f.in)
		if err != nil {
			return store.CutoverPolicy{}, badRequest("%s", err.Error())
		}
		*f.out = &d
	}
	if req.OnDeadline != nil {
		if od := cutover.OnDeadline(*req.OnDeadline); od != cutover.Keep && od != cutover.Revoke {
			return store.CutoverPolicy{}, badRequest(`on_deadline must be "keep" or "revoke"`)
		}
		change.OnDeadline = *req.OnDeadline
	}
	return change, nil
}

// Summary says in a few words where one older secret stands, for the
// CLI and the console.
func (s CutoverSecret) Summary(auto bool) string {
	var why string
	switch {
	case !s.NewestUsed:
		why = "the newest secret's first use"
	case len(s.NotMoved) > 0:
		why = strings.Join(s.NotMoved, ", ")
	case s.Unlisted:
		why = "callers the edges did not list"
	default:
		why = "quiet until " + FormatTime(s.QuietUntil, "-")
	}
	switch s.State {
	case "finished":
		if auto {
			return "finished: every caller moved; revoked at the next pass"
		}
		return "finished: every caller moved; safe to revoke"
	case "stalled":
		return fmt.Sprintf("stalled at %s, waiting for %s", FormatTime(s.DeadlineAt, "-"), why)
	}
	return fmt.Sprintf("waiting for %s (deadline %s)", why, FormatTime(s.DeadlineAt, "none"))
}
