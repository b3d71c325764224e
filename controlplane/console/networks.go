package console

import (
	"net/http"
	"strings"

	"github.com/rotagate/rotagate/controlplane/rules"
	"github.com/rotagate/rotagate/controlplane/store"
)

// The console's callers and allowed networks: on a client's page, per
// secret the callers seen and whether each has moved to the newest
// secret, and the client's networks with a form to change them; the
// button Allow only these networks shows the suggestion from the callers
// seen, to review and save.

// callersView is one secret's callers on the client page.
type callersView struct {
	ID, Hint string
	// Newest: this is the client's newest active secret. Compare: it is
	// an older one, and the page says per caller whether it has moved.
	Newest, Compare bool
	Callers         []callerView
	Unlisted        *callerView
}

type callerView struct {
	IP                string
	FirstSeen         *when
	LastSeen          *when
	Requests, Refused int64
	// State says, for a secret older than the newest: moved, uses both,
	// or not yet.
	State string
}

func toCallerView(c store.Caller) callerView {
	return callerView{IP: c.IP, FirstSeen: at(&c.FirstSeen), LastSeen: at(&c.LastSeen), Requests: c.Requests, Refused: c.Refused}
}

// networksView is the client page's Allowed networks panel and the
// suggestion page.
type networksView struct {
	Frame      frame
	ClientID   string
	ClientPath string
	// Text is the networks, one per line, as the form's text area shows them.
	Text       string
	CIDRs      []string
	ReportOnly bool
	// The suggestion page: how many callers it covers, and how many
	// requests came from addresses the edges did not list.
	Suggested   bool
	CallersText string
	Unlisted    int64
}

// secretCallers lists the callers of a client's secrets, newest secret
// first, leaving out those with none.
func (c *Console) secretCallers(r *http.Request, who rules.Actor, clientID string, secrets []store.Secret) ([]callersView, error) {
	var out []callersView
	for i := len(secrets) - 1; i >= 0; i-- {
		sc, err := c.svc.ListCallers(r.Context(), who, clientID, secrets[i].ID)
		if err != nil {
			return nil, err
		}
		if len(sc.Callers) == 0 && sc.Unlisted == nil {
			continue
		}
		v := callersView{ID: sc.Secret.ID, Hint: sc.Secret.Hint, Newest: sc.Newest == sc.Secret.ID}
		v.Compare = !v.Newest && sc.Newest != ""
		for _, cs := range sc.Callers {
			cv := toCallerView(cs.Caller)
			switch {
			case !v.Compare:
			case cs.Moved:
				cv.State = "moved"
			case cs.OnNewest:
				cv.State = "uses both"
			default:
				cv.State = "not yet"
			}
			v.Callers = append(v.Callers, cv)
		}
		if sc.Unlisted != nil {
			u := toCallerView(*sc.Unlisted)
			v.Unlisted = &u
		}
		out = append(out, v)
	}
	return out, nil
}

func newNetworksView(fr frame, cl store.Client) networksView {
	return networksView{
		Frame: fr, ClientID: cl.ID, ClientPath: consoleClientPath(cl.ID),
		Text: strings.Join(cl.AllowedCIDRs, "\n"), CIDRs: cl.AllowedCIDRs, ReportOnly: cl.NetworksReportOnly,
	}
}

// suggestNetworks is the page behind Allow only these networks: the
// suggestion in the networks form, to review and save. Nothing is saved
// here. Without networks yet, it proposes report-only first.
func (c *Console) suggestNetworks(w http.ResponseWriter, r *http.Request, who rules.Actor, fr frame) {
	cl, _, err := c.svc.GetClient(r.Context(), who, r.PathValue("client_id"))
	if err != nil {
		c.fail(w, r, fr, err)
		return
	}
	sug, err := c.svc.SuggestNetworks(r.Context(), who, cl.ID, 0)
	if err != nil {
		c.fail(w, r, fr, err)
		return
	}
	v := newNetworksView(fr, cl)
	v.Text, v.CIDRs, v.Suggested, v.Unlisted = strings.Join(sug.CIDRs, "\n"), sug.CIDRs, true, sug.Unlisted
	v.CallersText = rules.Plural(int64(sug.Callers), "caller address", "caller addresses")
	v.ReportOnly = cl.NetworksReportOnly || len(cl.AllowedCIDRs) == 0
	c.render(w, r, http.StatusOK, "networks", v)
}

// saveNetworks sets a client's networks from the form: prefixes or
// addresses separated by spaces, commas or lines, and the mode.
func (c *Console) saveNetworks(w http.ResponseWriter, r *http.Request, who rules.Actor, fr frame) {
	id := r.PathValue("client_id")
	cidrs := strings.FieldsFunc(r.PostForm.Get("networks"), func(r rune) bool {
		return r == ',' || r == ' ' || r == '\t' || r == '\n' || r == '\r'
	})
	if _, err := c.svc.SetNetworks(r.Context(), who, id, cidrs, r.PostForm.Get("mode") == "report_only"); err != nil {
		c.fail(w, r, fr, err)
		return
	}
	redirect(w, r, consoleClientPath(id), "networks")
}
