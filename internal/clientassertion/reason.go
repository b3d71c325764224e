package clientassertion

// Reason is why an assertion was refused. It is the error Parse and Verify
// return: its Error text is the same for every reason, so that an error
// passed on or logged by accident tells a caller nothing, and its String is
// a short code for debug logs and metric labels (a bounded set).
type Reason uint8

// The reasons of a refusal.
const (
	reasonNone Reason = iota
	// ReasonOversized: the assertion is longer than MaxSize.
	ReasonOversized
	// ReasonMalformed: not a compact JWS with a JSON claims set, or a
	// critical header ("crit", "b64") rotagate does not understand.
	ReasonMalformed
	// ReasonAlgorithm: the algorithm is not one of credkey.Algorithms
	// ("none", HS*, ES512, RS384…).
	ReasonAlgorithm
	// ReasonIssuer: iss empty, or sub differs from iss.
	ReasonIssuer
	// ReasonClientMismatch: the client_id in the body is not iss.
	ReasonClientMismatch
	// ReasonAudience: aud holds none of the edge's audiences.
	ReasonAudience
	// ReasonNoExpiry: no exp claim.
	ReasonNoExpiry
	// ReasonExpired: exp is more than Leeway in the past.
	ReasonExpired
	// ReasonLifetime: exp is more than MaxLifetime + Leeway ahead.
	ReasonLifetime
	// ReasonNotYetValid: nbf or iat more than Leeway in the future.
	ReasonNotYetValid
	// ReasonNoJTI: no jti claim.
	ReasonNoJTI
	// ReasonSignature: no active key of the client verifies the
	// signature (an unknown client included).
	ReasonSignature
	// ReasonReplay: the jti was seen before for this client within its
	// assertion's lifetime.
	ReasonReplay
	// ReasonReplayFull: the replay cache holds as many jti values as it
	// may for this client (or for all clients); refused rather than
	// forgetting one, which would let a replay through.
	ReasonReplayFull
)

var reasonCodes = [...]string{
	reasonNone:           "none",
	ReasonOversized:      "oversized",
	ReasonMalformed:      "malformed",
	ReasonAlgorithm:      "algorithm",
	ReasonIssuer:         "issuer",
	ReasonClientMismatch: "client_id_mismatch",
	ReasonAudience:       "audience",
	ReasonNoExpiry:       "no_exp",
	ReasonExpired:        "expired",
	ReasonLifetime:       "lifetime",
	ReasonNotYetValid:    "not_yet_valid",
	ReasonNoJTI:          "no_jti",
	ReasonSignature:      "signature",
	ReasonReplay:         "replay",
	ReasonReplayFull:     "replay_cache_full",
}

// String is the reason's code.
func (r Reason) String() string {
	if int(r) < len(reasonCodes) {
		return reasonCodes[r]
	}
	return "unknown"
}

// Error is the same for every reason.
func (r Reason) Error() string { return "invalid client assertion" }
