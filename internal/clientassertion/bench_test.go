package clientassertion

import (
	"testing"

	jose "github.com/go-jose/go-jose/v4"

	"github.com/rotagate/rotagate/internal/testkeys"
)

// maxVerifyAllocs is the allocation bound of one ES256 verification, Parse
// and Verify together (issue 22: at most 60).
const maxVerifyAllocs = 60

// assertions makes n ES256 assertions with distinct jti values, since each
// may be verified only once.
func assertions(t testing.TB, n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = testkeys.Sign(t, jose.ES256, ec256, "k1", goodClaims())
	}
	return out
}

func TestVerifyAllocs(t *testing.T) {
	if testing.Short() {
		t.Skip("allocation counts need a normal build")
	}
	fixture(t)
	keys := []Key{registered(t, "sec_1", &ec256.PublicKey, "k1", "")}
	v := newVerifier(t, Config{})
	const runs = 200
	as := assertions(t, runs+1)
	i := 0
	allocs := testing.AllocsPerRun(runs, func() {
		if _, err := run(v, as[i], clientID, keys); err != nil {
			t.Fatal(reasonOf(t, err))
		}
		i++
	})
	t.Logf("%.0f allocations per ES256 verification", allocs)
	if allocs > maxVerifyAllocs {
		t.Fatalf("%.0f allocations per ES256 verification, bound %d", allocs, maxVerifyAllocs)
	}
}

// BenchmarkVerifyES256 is a successful private_key_jwt verification:
// Parse, one ES256 signature check, the replay cache.
func BenchmarkVerifyES256(b *testing.B) {
	fixture(b)
	keys := []Key{registered(b, "sec_1", &ec256.PublicKey, "k1", "")}
	v := newVerifier(b, Config{ReplayPerClient: 1 << 24, ReplayTotal: 1 << 24})
	as := assertions(b, b.N)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := run(v, as[i], clientID, keys); err != nil {
			b.Fatal(reasonOf(b, err))
		}
	}
}

// BenchmarkRefuseUnknownClientES256 is a refusal of an ES256 assertion
// for a client without keys: MaxKeys (2) throwaway checks.
func BenchmarkRefuseUnknownClientES256(b *testing.B) {
	fixture(b)
	v := newVerifier(b, Config{})
	a := testkeys.Sign(b, jose.ES256, attacker, "", goodClaims())
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := run(v, a, clientID, nil); reasonOf(b, err) != ReasonSignature {
			b.Fatal(err)
		}
	}
}
