package demo

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	caddycmd "github.com/caddyserver/caddy/v2/cmd"
	_ "github.com/caddyserver/caddy/v2/modules/standard"

	_ "github.com/rotagate/rotagate"
	"github.com/rotagate/rotagate/internal/loopback"
)

// TestDemoEndToEnd starts the demo, runs the shell steps it prints with
// bash, and checks each step's answer: the rotation story works as told.
func TestDemoEndToEnd(t *testing.T) {
	if _, err := exec.LookPath("curl"); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal("curl is needed to run the demo's printed steps")
		}
		t.Skip("no curl")
	}
	t.Setenv("XDG_DATA_HOME", t.TempDir())
	d, err := Start(context.Background(), Options{
		EdgePort: loopback.FreePort(t), ControlPlanePort: loopback.FreePort(t), UpstreamPort: loopback.FreePort(t),
		RevocationDelay: 2 * time.Second,
	})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Stop()
	var printed strings.Builder
	d.Print(&printed)
	if !strings.Contains(printed.String(), d.Steps()) || !strings.Contains(printed.String(), d.Secret) {
		t.Fatal("the printed text lacks the steps or the secret")
	}
	for _, want := range []string{
		"web console:                " + d.ConsoleURL,
		"log in as admin / " + d.AdminPassword + " (an admin), or as owner / " + d.OwnerPassword + " (owner of demo-app)",
	} {
		if !strings.Contains(printed.String(), want) {
			t.Errorf("the printed text lacks %q", want)
		}
	}
	if strings.Contains(d.caddyfile, d.AdminPassword) || strings.Contains(d.caddyfile, d.OwnerPassword) {
		t.Error("the Caddyfile holds a console password instead of its hash")
	}
	// The console answers both logins: the owner sees demo-app on My
	// clients, a wrong password is refused by basic_auth.
	for _, login := range []struct {
		user, password string
		want           int
	}{{"owner", d.OwnerPassword, 200}, {"admin", d.AdminPassword, 200}, {"owner", "wrong", 401}} {
		req, _ := http.NewRequest("GET", d.ConsoleURL, nil)
		req.SetBasicAuth(login.user, login.password)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != login.want || (login.want == 200 && !strings.Contains(string(body), `href="/console/clients/demo-app"`)) {
			t.Errorf("console as %s: %d", login.user, resp.StatusCode)
		}
	}

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, "bash", "-euo", "pipefail", "-c", d.Steps()).CombinedOutput()
	if err != nil {
		t.Fatalf("steps failed: %v\n%s", err, out)
	}
	var lines, labels []string
	for _, l := range strings.Split(string(out), "\n") {
		if strings.HasPrefix(l, "# ") {
			labels = append(labels, l)
		} else if strings.TrimSpace(l) != "" {
			lines = append(lines, l)
		}
	}
	// Piped to bash, the steps still say what each answer is.
	for i, l := range labels {
		if !strings.HasPrefix(l, fmt.Sprintf("# %d. ", i+1)) {
			t.Errorf("label %d is %q", i+1, l)
		}
	}
	if len(labels) != 6 {
		t.Errorf("want 6 step labels in the output, got %d:\n%s", len(labels), out)
	}
	if len(lines) != 8 {
		t.Fatalf("want 8 answers, got %d:\n%s", len(lines), out)
	}
	token := `"access_token":"demo-token-for-demo-app"`
	for i, want := range []string{
		token,                 // 1. first secret
		"second secret: rgs_", // 2. generated
		token, token,          // 3. both work
		`"status":"revoked"`,              // 4. revoke answer
		`"error":"invalid_client"`, token, // 5. first refused, second works
		`"status":"revoked"`, // 6. listing
	} {
		if !strings.Contains(lines[i], want) {
			t.Errorf("answer %d is %q, want it to contain %q", i+1, lines[i], want)
		}
	}
	if !strings.Contains(lines[7], `"last_used_at":"20`) || !strings.Contains(lines[7], `"last_used_from":"127.0.0.1"`) {
		t.Errorf("the listing shows no last use: %s", lines[7])
	}
}

// TestDemoReusesItsDir: a second run on the same --dir starts afresh.
func TestDemoReusesItsDir(t *testing.T) {
	t.Setenv("XDG_DATA_HOME", t.TempDir())
	opts := Options{Dir: t.TempDir(), EdgePort: loopback.FreePort(t), ControlPlanePort: loopback.FreePort(t), UpstreamPort: loopback.FreePort(t)}
	first, err := Start(context.Background(), opts)
	if err != nil {
		t.Fatal(err)
	}
	if err := first.Stop(); err != nil {
		t.Fatal(err)
	}
	second, err := Start(context.Background(), opts)
	if err != nil {
		t.Fatalf("second run on the same dir: %v", err)
	}
	defer second.Stop()
	if second.Secret == first.Secret || second.Secret == "" {
		t.Fatal("the second run did not issue a fresh secret")
	}
}

// TestDemoRefusesBusyPorts: a port someone listens on, one given twice, or
// one out of range is refused before anything starts, naming the flag
// that moves it.
func TestDemoRefusesBusyPorts(t *testing.T) {
	t.Setenv("XDG_DATA_HOME", t.TempDir())
	for _, flag := range []string{"--edge-port", "--control-plane-port", "--upstream-port"} {
		t.Run(flag, func(t *testing.T) {
			busy, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			defer busy.Close()
			port := busy.Addr().(*net.TCPAddr).Port
			opts := Options{EdgePort: loopback.FreePort(t), ControlPlanePort: loopback.FreePort(t), UpstreamPort: loopback.FreePort(t)}
			switch flag {
			case "--edge-port":
				opts.EdgePort = port
			case "--control-plane-port":
				opts.ControlPlanePort = port
			case "--upstream-port":
				opts.UpstreamPort = port
			}
			d, err := Start(context.Background(), opts)
			if err == nil {
				d.Stop()
				t.Fatal("the demo started on a busy port")
			}
			want := fmt.Sprintf("port %d is in use (", port)
			if !strings.HasPrefix(err.Error(), want) || !strings.HasSuffix(err.Error(), "); pass "+flag+" to choose another") {
				t.Fatalf("error %q, want %q…%s", err, want, flag)
			}
		})
	}
	port := loopback.FreePort(t)
	_, err := Start(context.Background(), Options{EdgePort: loopback.FreePort(t), ControlPlanePort: port, UpstreamPort: port})
	if err == nil || err.Error() != fmt.Sprintf("--control-plane-port and --upstream-port are both %d; the demo needs three different ports", port) {
		t.Fatalf("the same port twice: %v", err)
	}
	_, err = Start(context.Background(), Options{EdgePort: 0, ControlPlanePort: loopback.FreePort(t), UpstreamPort: loopback.FreePort(t)})
	if err == nil || err.Error() != "port 0 is no TCP port; pass --edge-port with one from 1 to 65535" {
		t.Fatalf("port 0: %v", err)
	}
}

// Environment of the test binary when it plays a process of its own (see
// TestMain).
const (
	roleEnv = "ROTAGATE_DEMO_TEST_ROLE" // "demo" or "parent"
	argsEnv = "ROTAGATE_DEMO_TEST_ARGS" // the demo command's flags
)

// TestMain lets the test binary play two processes for the tests that need
// them: the demo command itself, as `caddy client-credentials demo` runs
// it, and a parent that starts the demo and waits for it, as `go run` does
// (it dies of a SIGTERM without passing it on).
func TestMain(m *testing.M) {
	switch os.Getenv(roleEnv) {
	case "demo":
		os.Args = append([]string{"caddy", "client-credentials", "demo"}, strings.Fields(os.Getenv(argsEnv))...)
		caddycmd.Main()
		os.Exit(0)
	case "parent":
		self, err := os.Executable()
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		child := exec.Command(self)
		child.Env = append(os.Environ(), roleEnv+"=demo")
		child.Stdout, child.Stderr = os.Stdout, os.Stderr
		if err := child.Start(); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		fmt.Printf("child %d\n", child.Process.Pid)
		_ = child.Wait()
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// demoProcess is the test binary started as one of those processes.
type demoProcess struct {
	cmd    *exec.Cmd
	stdout *bufio.Scanner
	stderr string // the file stderr goes to
}

// startProcess starts the test binary as role with the demo's flags. Its
// stdout is read line by line; its stderr goes to a file, logged if the
// test fails (the demo prints its secrets on stdout, never on stderr).
func startProcess(t *testing.T, role string, args ...string) *demoProcess {
	t.Helper()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	home := t.TempDir()
	cmd := exec.Command(self)
	cmd.Env = append(os.Environ(), roleEnv+"="+role, argsEnv+"="+strings.Join(args, " "),
		"HOME="+home, "XDG_CONFIG_HOME="+home, "XDG_DATA_HOME="+home)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	stderr, err := os.Create(filepath.Join(home, "stderr"))
	if err != nil {
		t.Fatal(err)
	}
	defer stderr.Close()
	cmd.Stderr = stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &demoProcess{cmd: cmd, stdout: bufio.NewScanner(stdout), stderr: stderr.Name()}
	t.Cleanup(func() {
		if t.Failed() {
			if logged, err := os.ReadFile(p.stderr); err == nil {
				t.Logf("%s stderr:\n%s", role, logged)
			}
		}
	})
	return p
}

// lineWith reads stdout until a line contains want and returns that line;
// it fails if the output ends first or nothing comes within bound.
func (p *demoProcess) lineWith(t *testing.T, want string, bound time.Duration) string {
	t.Helper()
	found := make(chan string, 1)
	go func() {
		defer close(found)
		for p.stdout.Scan() {
			if strings.Contains(p.stdout.Text(), want) {
				found <- p.stdout.Text()
				return
			}
		}
	}()
	select {
	case line, ok := <-found:
		if !ok {
			t.Fatalf("the output ended without %q", want)
		}
		return line
	case <-time.After(bound):
		t.Fatalf("no %q within %v", want, bound)
	}
	return ""
}

// ended reports whether stdout reaches its end (every process holding it
// has exited) within bound.
func (p *demoProcess) ended(bound time.Duration) bool {
	done := make(chan struct{})
	go func() {
		defer close(done)
		for p.stdout.Scan() {
		}
	}()
	select {
	case <-done:
		return true
	case <-time.After(bound):
		return false
	}
}

// TestSecondDemoRefusesItsPorts: with a demo running, a second on the same
// ports exits non-zero at once, naming the busy port and its flag, and the
// first keeps working.
func TestSecondDemoRefusesItsPorts(t *testing.T) {
	t.Setenv("XDG_DATA_HOME", t.TempDir())
	opts := Options{EdgePort: loopback.FreePort(t), ControlPlanePort: loopback.FreePort(t), UpstreamPort: loopback.FreePort(t)}
	first, err := Start(context.Background(), opts)
	if err != nil {
		t.Fatal(err)
	}
	defer first.Stop()
	second := startProcess(t, "demo", "--edge-port", strconv.Itoa(opts.EdgePort),
		"--control-plane-port", strconv.Itoa(opts.ControlPlanePort), "--upstream-port", strconv.Itoa(opts.UpstreamPort))
	if !second.ended(time.Minute) {
		t.Fatal("the second demo did not end within a minute")
	}
	err = second.cmd.Wait()
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.ExitCode() == 0 {
		t.Fatalf("the second demo: %v, want a non-zero exit", err)
	}
	said, err := os.ReadFile(second.stderr)
	if err != nil {
		t.Fatal(err)
	}
	want := fmt.Sprintf("port %d is in use (", opts.EdgePort)
	if !strings.Contains(string(said), want) || !strings.Contains(string(said), "); pass --edge-port to choose another") {
		t.Fatalf("the second demo said:\n%s\nwant %q… pass --edge-port to choose another", said, want)
	}
	if err := first.waitForEdge(context.Background()); err != nil {
		t.Fatalf("the first demo after the second tried: %v", err)
	}
}

// TestDemoStopsWithItsParent: SIGTERM to the demo's parent, a process
// that runs the demo and dies of SIGTERM without passing it on (as `go
// run` does), stops the demo too: its output ends, its ports are free and
// its temporary directory is gone.
func TestDemoStopsWithItsParent(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("only Linux ties the demo to its parent")
	}
	ports := []int{loopback.FreePort(t), loopback.FreePort(t), loopback.FreePort(t)}
	parent := startProcess(t, "parent", "--edge-port", strconv.Itoa(ports[0]),
		"--control-plane-port", strconv.Itoa(ports[1]), "--upstream-port", strconv.Itoa(ports[2]))
	pid, err := strconv.Atoi(strings.TrimPrefix(parent.lineWith(t, "child ", time.Minute), "child "))
	if err != nil {
		t.Fatal(err)
	}
	stopped := false
	t.Cleanup(func() {
		if !stopped { // a demo that outlived its parent
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
	})
	fields := strings.Fields(parent.lineWith(t, "data directory:", 2*time.Minute))
	dir := fields[len(fields)-1]
	if _, err := os.Stat(dir); err != nil {
		t.Fatalf("the running demo's data directory: %v", err)
	}

	if err := parent.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if !parent.ended(30 * time.Second) {
		t.Fatal("the demo still runs 30s after its parent got SIGTERM")
	}
	stopped = true
	_ = parent.cmd.Wait()
	for _, port := range ports {
		ln, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
		if err != nil {
			t.Fatalf("port %d after the demo stopped: %v", port, err)
		}
		ln.Close()
	}
	if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("the demo's temporary directory after it stopped: %v", err)
	}
}
