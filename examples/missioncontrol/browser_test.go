//go:build browser

package main

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/aster-go/aster/discovery"
	"github.com/aster-go/aster/examples/missioncontrol/mission"
	"github.com/aster-go/aster/internal/testutil"
)

// TestBrowser is the real-browser test of the WebTransport transport (run
// by .ci/run with -tags browser): it starts the example server with
// ASTER_WEBTRANSPORT_ADDR, serves web/ on loopback, opens index.html in
// headless Chromium, and checks what the page reports back: the getStatus
// result and at least three log entries streamed by tailLogs; then that the
// page refuses the server under an address naming another endpoint id. It
// fails when
// no Chromium is installed (set ASTER_CHROMIUM to its path if it is not on
// PATH as chromium).
func TestBrowser(t *testing.T) {
	chromium := findChromium(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()

	// The example server, as a real process.
	bin := filepath.Join(t.TempDir(), "missioncontrol")
	if out, err := exec.CommandContext(ctx, "go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	srv := exec.CommandContext(ctx, bin)
	srv.Env = append(os.Environ(), "ASTER_BIND_ADDR=127.0.0.1:0", "ASTER_WEBTRANSPORT_ADDR=127.0.0.1:0")
	var srvLog testutil.SyncBuffer
	srv.Stderr = &srvLog
	stdout, err := srv.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		_ = srv.Process.Signal(syscall.SIGTERM)
		_ = srv.Wait()
		if t.Failed() {
			t.Logf("server log:\n%s", srvLog.String())
		}
	}()
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil {
		t.Fatalf("reading the server's address: %v\n%s", err, srvLog.String())
	}
	addrText := strings.TrimSpace(line)
	addr, err := discovery.ParseAddress(addrText)
	if err != nil || addr.WebTransport == "" || len(addr.CertHashes) == 0 {
		t.Fatalf("server printed %q: %+v, %v; want an address with a WebTransport URL and hashes", addrText, addr, err)
	}
	t.Logf("server: %s (WebTransport %s)", addrText, addr.WebTransport)

	// The page, on loopback (a secure context), and where it reports.
	results := make(chan pageResult, 1)
	mux := http.NewServeMux()
	mux.Handle("/", http.FileServer(http.Dir("web")))
	mux.HandleFunc("POST /result", func(w http.ResponseWriter, r *http.Request) {
		var res pageResult
		if err := json.NewDecoder(io.LimitReader(r.Body, 1<<20)).Decode(&res); err != nil {
			res = pageResult{Error: "undecodable report: " + err.Error()}
		}
		select {
		case results <- res:
		default:
		}
	})
	web := httptest.NewServer(mux)
	defer web.Close()

	t.Run("MissionControl", func(t *testing.T) {
		res := runPage(t, ctx, chromium, web.URL, addrText, results)
		if !res.OK {
			t.Fatalf("the page failed: %s", res.Error)
		}
		t.Logf("page: getStatus -> %+v; %d log entries", res.Status, len(res.Logs))
		if res.Status.AgentID != "browser-agent" || res.Status.Status != "running" || res.Status.UptimeSecs != 3600 {
			t.Errorf("getStatus result %+v", res.Status)
		}
		if len(res.Logs) < 3 {
			t.Fatalf("%d log entries streamed, want at least 3", len(res.Logs))
		}
		for i, e := range res.Logs {
			if e.AgentID != "browser-agent" || e.Level != "info" || !strings.HasPrefix(e.Message, "browser log ") {
				t.Errorf("log entry %d: %+v", i, e)
			}
		}
	})

	// The same URL and pinned hashes under another endpoint id: the page
	// must refuse the server (it did not sign for that id).
	t.Run("WrongEndpointID", func(t *testing.T) {
		wrong := addr
		wrong.ID[0] ^= 0xff
		res := runPage(t, ctx, chromium, web.URL, wrong.String(), results)
		if res.OK || !strings.Contains(res.Error, "aster status 16") {
			t.Fatalf("page with a wrong endpoint id: ok=%v error=%q; want UNAUTHENTICATED (16)", res.OK, res.Error)
		}
		t.Logf("refused: %s", res.Error)
	})
}

type pageResult struct {
	OK     bool                   `json:"ok"`
	Error  string                 `json:"error"`
	Status mission.StatusResponse `json:"status"`
	Logs   []mission.LogEntry     `json:"logs"`
}

// runPage opens index.html for addr in a fresh headless Chromium and
// returns what the page reports.
func runPage(t *testing.T, ctx context.Context, chromium, base, addr string, results <-chan pageResult) pageResult {
	page := base + "/index.html?report=1&addr=" + url.QueryEscape(addr)
	var browserLog testutil.SyncBuffer
	browser := exec.CommandContext(ctx, chromium,
		"--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
		"--disable-background-networking", "--disable-component-update", "--disable-sync",
		"--user-data-dir="+t.TempDir(), "--enable-logging=stderr", "--v=0",
		page)
	browser.Stdout, browser.Stderr = &browserLog, &browserLog
	if err := browser.Start(); err != nil {
		t.Fatalf("starting %s: %v", chromium, err)
	}
	defer func() {
		_ = browser.Process.Kill()
		_ = browser.Wait()
		if t.Failed() {
			t.Logf("browser log:\n%s", browserLog.String())
		}
	}()
	select {
	case res := <-results:
		return res
	case <-time.After(90 * time.Second):
		t.Fatal("the page reported nothing within 90s")
		return pageResult{}
	}
}

func findChromium(t *testing.T) string {
	if p := os.Getenv("ASTER_CHROMIUM"); p != "" {
		return p
	}
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	t.Fatal("no Chromium found (install Debian's chromium, or set ASTER_CHROMIUM)")
	return ""
}
